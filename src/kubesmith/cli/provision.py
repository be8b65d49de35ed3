"""`kubesmith provision`, `kubesmith upgrade` and `kubesmith etcd snapshot|restore`: run the
playbooks on a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import typer

from kubesmith.cli.console import err, out, progress
from kubesmith.cli.options import OptionalInventory, OptionalStack, target_of
from kubesmith.errors import UserError
from kubesmith.local.shares import attach_for
from kubesmith.provision import scope, upgrade
from kubesmith.provision import target as targets
from kubesmith.provision.provisioner import BASE_TAGS, TAGS, Options, Outcome, provision
from kubesmith.provision.recap import Progress, pki_summary, recap_table
from kubesmith.provision.variables import BINARIES_VAR
from kubesmith.spec import mirror_problem
from kubesmith.stackfile import load_spec
from kubesmith.state import records

etcd_app = typer.Typer(help="etcd backups: snapshot now, restore a snapshot.", no_args_is_help=True)

SourceOption = typer.Option(
    None,
    "--source",
    help="With --inventory: install components from 'distro' packages or 'release' downloads "
    "(default: distro for an lxd inventory, release otherwise).",
)
MirrorOption = typer.Option(
    None,
    "--mirror",
    help="With --inventory: fetch release downloads from MIRROR/<host>/<path> (air-gapped sites).",
)


BinariesOption = typer.Option(
    None,
    "--kubernetes-binaries/--no-kubernetes-binaries",
    help="Install and start the Kubernetes binaries, or not: without, write every "
    "certificate, configuration and unit, install and start nothing (configuration only). "
    "Default: the stack's artifacts.kubernetesBinaries (true unless set).",
    show_default=False,
)


def register(app: typer.Typer) -> None:
    app.command("provision")(provision_command)
    app.command("upgrade")(upgrade_command)
    app.add_typer(etcd_app, name="etcd")


def _target(
    stack: str | None, inventory: Path | None, source: str | None, mirror: str | None = None
) -> targets.Target:
    if source is not None and source not in ("distro", "release"):
        raise UserError(f"--source: must be distro or release, got {source!r}")
    if stack is not None and (source is not None or mirror is not None):
        raise UserError(
            "--source and --mirror only apply to --inventory; a stack sets "
            "kubesmith:cluster.artifacts"
        )
    if stack is not None or inventory is None or (source is None and mirror is None):
        return target_of(stack, inventory)
    chosen: Literal["distro", "release"] | None = source  # type: ignore[assignment]
    problem = None if mirror is None else mirror_problem(mirror)
    if problem:
        raise UserError(f"--mirror: {problem}")
    return targets.for_inventory(inventory, chosen, mirror)


def _run(target: targets.Target, options: Options, title: str) -> Outcome:
    hosts = list(target.inventory.hostvars)
    with Progress(progress, hosts, f"{title}: {target.label}") as live:
        outcome = provision(target, options, live, attach_for(target.inventory.cluster.spec))
    summary = pki_summary(outcome.pki)
    if summary:
        err.print(summary)
    for artifact in outcome.downloaded:
        err.print(f"downloaded and verified {artifact.label}")
    out.print(recap_table(outcome.run, f"{title}: {target.label}"))
    outcome.run.raise_for_failure(title)
    return outcome


def _follow_up(target: targets.Target, options: Options) -> scope.FollowUp | None:
    """After a run limited to some hosts: the plays of the other hosts that read them (the
    bridge CNI's pod routes to a new node, etc.; kubesmith.provision.scope), restricted to
    the tags the user chose. Only for hosts new or changed since they were last provisioned
    (scope.changed_hosts)."""
    if options.limit is None:
        return None
    inventory = target.inventory
    limited = scope.matched_hosts(inventory.path, options.limit)
    settings = inventory.cluster.spec.model_dump(by_alias=True, mode="json")
    changed = scope.changed_hosts(inventory, scope.load_record(target.state_dir), limited)
    groups = {group: inventory.hosts_in(group) for group in inventory.groups}
    found = scope.follow_up(settings, groups, list(inventory.hostvars), changed, skip=limited)
    if found is None or not options.tags:
        return found
    tags = tuple(tag for tag in found.tags if tag in options.tags)
    return scope.FollowUp(found.hosts, tags, found.reasons) if tags else None


def _tags(tags: list[str]) -> list[str]:
    chosen = [t.strip() for value in tags for t in value.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TAGS))
    if unknown:
        raise UserError(f"--tags: unknown tag {', '.join(unknown)} (tags: {', '.join(TAGS)})")
    return chosen


def provision_command(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    tags: list[str] = typer.Option(
        [], "--tags", "-t", help=f"Only these parts: {', '.join(TAGS)} (comma separated)."
    ),
    limit: str | None = typer.Option(None, "--limit", "-l", help="Only these hosts (pattern)."),
    check: bool = typer.Option(
        False, "--check", help="Report what would change on the nodes without changing them."
    ),
    source: str | None = SourceOption,
    mirror: str | None = MirrorOption,
    binaries: bool | None = BinariesOption,
) -> None:
    """Build the cluster: nodes, certificates, containerd, etcd, Kubernetes (playbooks/site.yml).

    A changed kubernetesVersion is a rolling upgrade (see `kubesmith upgrade`)."""
    target = _target(stack, inventory, source, mirror)
    extravars = {} if binaries is None else {BINARIES_VAR: binaries}
    options = Options(tags=_tags(tags), limit=limit, check=check, extravars=extravars)
    # Check runs and node-base runs (their tags only) touch no Kubernetes part: no upgrade.
    base_only = bool(options.tags) and set(options.tags) <= set(BASE_TAGS)
    rolling = None if check or base_only else upgrade.pending(target)
    if rolling is not None:
        if options.tags or limit is not None:
            raise UserError(
                f"kubesmith:cluster.kubernetesVersion: {rolling.current} -> {rolling.target} is "
                "a rolling upgrade of every node; run it without --limit and without Kubernetes "
                "--tags (`kubesmith upgrade --plan` shows its order)"
            )
        _upgrade(target, rolling, extravars)
        return
    # Decided before the run, which records what the limited hosts now hold.
    follow = _follow_up(target, options)
    outcome = _run(target, options, "provision")
    changed = sum(s.changed for s in outcome.run.stats.values())
    hosts = len(outcome.run.stats)
    if follow is not None:
        err.print(
            f"also on {', '.join(follow.hosts)}, only {', '.join(follow.tags)}: "
            f"{'; '.join(dict.fromkeys(r for why in follow.reasons.values() for r in why))}"
        )
        more = Options(
            tags=follow.tags, limit=",".join(follow.hosts), check=check, extravars=extravars
        )
        extra = _run(target, more, f"provision ({', '.join(follow.tags)})")
        changed += sum(s.changed for s in extra.run.stats.values())
        hosts += len(extra.run.stats)
    if check:
        out.print(f"[green]ok[/]: {hosts} hosts checked, {changed} changes would be made")
    else:
        out.print(f"[green]ok[/]: {hosts} hosts provisioned, {changed} changes")


def _upgrade(target: targets.Target, plan: upgrade.Plan, extravars: dict[str, bool]) -> None:
    for line in plan.lines():
        err.print(line, highlight=False)
    outcomes = upgrade.run(
        target,
        plan,
        lambda options, title: _run(target, options, title),
        lambda note: err.print(note, highlight=False),
        extravars,
    )
    changed = sum(s.changed for outcome in outcomes for s in outcome.run.stats.values())
    out.print(
        f"[green]ok[/]: {target.label} upgraded to Kubernetes {plan.target} "
        f"in {len(outcomes)} provisioning runs, {changed} changes"
    )


def upgrade_command(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    to: str | None = typer.Option(
        None,
        "--to",
        metavar="VERSION",
        help="With --inventory: the pinned version to upgrade to (written into the inventory's "
        "cluster). A stack's is kubesmith:cluster.kubernetesVersion.",
    ),
    plan_only: bool = typer.Option(
        False, "--plan", help="Show the order of the upgrade and change nothing."
    ),
    source: str | None = SourceOption,
    mirror: str | None = MirrorOption,
    binaries: bool | None = BinariesOption,
) -> None:
    """Upgrade Kubernetes node by node: control planes one at a time, then the other nodes in
    batches (drained, upgraded, uncordoned), then the add-ons; etcd is not restarted."""
    target = _target(stack, inventory, source, mirror)
    if to is not None:
        if stack is not None:
            raise UserError(
                f"--to applies to --inventory; stack {stack}'s version is "
                f"kubesmith:cluster.kubernetesVersion in Pulumi.{stack}.yaml (set it, then "
                f"kubesmith up -s {stack}, which runs this upgrade)"
            )
        upgrade.check_target_version(to)
    elif stack is not None:
        configured = load_spec(stack).kubernetes_version
        inventoried = target.inventory.cluster.spec.kubernetes_version
        if configured != inventoried:
            raise UserError(
                f"Pulumi.{stack}.yaml asks for Kubernetes {configured}, the stack's inventory "
                f"holds {inventoried}: run kubesmith up -s {stack} (it runs this upgrade)"
            )
    plan = upgrade.pending(target, to)
    if plan is None:
        recorded = records.recorded_version(target.state_dir)
        if recorded is None:
            out.print(f"nothing to upgrade: {target.label} was never provisioned")
        else:
            out.print(f"nothing to upgrade: {target.label} runs Kubernetes {recorded}")
        return
    if plan_only:
        for line in plan.lines():
            out.print(line, highlight=False)
        return
    if to is not None and inventory is not None:
        upgrade.write_version(inventory, to)
        target = _target(None, inventory, source, mirror)
    extravars = {} if binaries is None else {BINARIES_VAR: binaries}
    _upgrade(target, plan, extravars)


@etcd_app.command("snapshot")
def snapshot_command(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    dest: Path | None = typer.Option(
        None, "--dest", help="Directory for the copy (default: <state dir>/etcd-snapshots)."
    ),
) -> None:
    """Take an etcd snapshot on the first member and copy it to the controller (0600)."""
    target = _target(stack, inventory, None)
    directory = (dest or target.state_dir / "etcd-snapshots").resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    before = set(directory.glob("*.db"))
    _run(
        target,
        Options(
            playbook="etcd-snapshot.yml", extravars={"etcd_snapshot_fetch_dir": str(directory)}
        ),
        "etcd snapshot",
    )
    new = sorted(set(directory.glob("*.db")) - before)
    out.print(f"snapshot: {new[-1] if new else directory}")


@etcd_app.command("restore")
def restore_command(
    snapshot: Path = typer.Option(..., "--snapshot", help="Snapshot file on this machine."),
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
) -> None:
    """Restore every etcd member from SNAPSHOT (the old data directories are kept aside)."""
    if not snapshot.is_file():
        raise UserError(f"--snapshot: {snapshot}: no such file")
    target = _target(stack, inventory, None)
    started = datetime.now(UTC)
    _run(
        target,
        Options(
            playbook="etcd-restore.yml",
            extravars={"etcd_restore_snapshot": str(snapshot.resolve())},
        ),
        "etcd restore",
    )
    out.print(f"[green]ok[/]: etcd restored from {snapshot} (started {started:%H:%M:%S} UTC)")
