"""`kubesmith artifacts list|fetch|lock`, `smoke`, `kubeconfig` and `certs`.

- artifacts: every file a stack downloads, the Pulumi CLI and plugins included (URL, pinned
  checksum, size when the controller has a verified copy), and a verified copy of all of them
  in the mirror layout for air-gapped sites; `lock` records the digest each pinned image tag
  resolves to in versions.yaml (`--check`: report drift only);
- smoke: playbooks/smoke.yml against a provisioned cluster;
- kubeconfig: the admin kubeconfig (certificates embedded), written 0600;
- certs: when every certificate of the cluster expires; `--renew` reissues the due ones and
  installs them (kubesmith.provision.renewal);
- status: each node's services, versions and etcd member, the soonest certificate expiry and
  the last provisioning run, with what needs attention (kubesmith.provision.status).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from kubesmith import versions
from kubesmith.apps.images import images_of
from kubesmith.apps.render import render_stack_apps
from kubesmith.cli.certs_renew import renew_certs
from kubesmith.cli.console import download_progress, err, out, progress
from kubesmith.cli.options import OptionalInventory, OptionalStack, Stack, target_of
from kubesmith.downloads import airgap, imagelock
from kubesmith.downloads.download import Download
from kubesmith.errors import KubesmithError, UserError
from kubesmith.provision import target as targets
from kubesmith.provision.admin import admin_kubeconfig
from kubesmith.provision.recap import Progress, recap_table
from kubesmith.provision.runner import RunRequest, run_playbook
from kubesmith.provision.status import collect
from kubesmith.spec import ClusterSpec
from kubesmith.stackfile import load_spec
from kubesmith.state.certs import expiries
from kubesmith.state.files import atomic_write

artifacts_app = typer.Typer(
    help="Release files a stack downloads: list them, fetch them for an air-gapped site; "
    "lock the digests of the images it pulls.",
    no_args_is_help=True,
)

ArchOption = typer.Option(
    ["amd64"], "--arch", help="Node architecture (amd64, arm64); repeat for both."
)
SourceOverride = typer.Option(
    None,
    "--source",
    help="Take every component from 'release' downloads or 'distro' packages, whatever the "
    "stack says (e.g. to carry release files for a site that installs them).",
)
SMOKE_PLAYBOOK = "smoke.yml"


def register(app: typer.Typer) -> None:
    app.add_typer(artifacts_app, name="artifacts")
    app.command("smoke")(smoke)
    app.command("kubeconfig")(kubeconfig)
    app.command("certs")(certs)
    app.command("status")(status)


def _arches(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - set(airgap.ARCHES))
    if unknown:
        raise UserError(f"--arch: unknown {', '.join(unknown)} (known: {', '.join(airgap.ARCHES)})")
    return list(dict.fromkeys(values))


def _spec(stack: str, source: str | None) -> ClusterSpec:
    spec = load_spec(stack)
    if source is None:
        return spec
    if source not in ("distro", "release"):
        raise UserError(f"--source: must be distro or release, got {source!r}")
    artifacts = spec.artifacts.model_copy(update={"source": source, "components": {}})
    return spec.model_copy(update={"artifacts": artifacts})


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size}"


def _downloads(spec: ClusterSpec, arches: list[str]) -> list[Download]:
    """The nodes' release files, then the controller's Pulumi CLI and plugins."""
    cache = targets.artifact_cache_dir()
    return [
        *airgap.stack_downloads(spec, cache, arches),
        *airgap.controller_downloads(spec, cache, arches),
    ]


@artifacts_app.command("list")
def list_command(
    stack: str = Stack, arch: list[str] = ArchOption, source: str | None = SourceOverride
) -> None:
    """Every release file STACK downloads, with its pinned checksum, and what else it needs:
    Debian packages, and every container image (the cluster's and its apps') with what needs it.

    The Pulumi CLI and plugins are listed for a controller of each --arch."""
    spec = _spec(stack, source)
    downloads = _downloads(spec, _arches(arch))
    # Apps as `pulumi up` deploys them: rendered for the stack, with its apps[].values.
    app_images = {app: images_of(o) for app, o in render_stack_apps(spec, stack).items()}
    # One artifact per line, fields tab-separated: easy to read, grep and feed to a script.
    typer.echo("# artifact\tversion\tarch\turl\tchecksum\tsize (bytes, verified copy)")
    for d in downloads:
        checksum = f"{d.algorithm}:{d.checksum}" if d.checksum else "none pinned"
        size = _size(airgap.verified_size(d))
        typer.echo("\t".join((d.name, d.version, d.arch, d.url, checksum, size)))
    packages = airgap.distro_packages(spec)
    if packages:
        listed = "; ".join(f"{name}: {' '.join(p)}" for name, p in packages.items())
        out.print(f"Debian packages (from the nodes' apt sources): {listed}")
    typer.echo("# container image\tneeded by")
    for image, needs in airgap.needed_images(spec, app_images).items():
        typer.echo(f"{image}\t{', '.join(needs)}")


@artifacts_app.command("fetch")
def fetch_command(
    dest: Path = typer.Option(..., "--dest", help="Directory for the files (mirror layout)."),
    stack: str = Stack,
    arch: list[str] = ArchOption,
    source: str | None = SourceOverride,
) -> None:
    """Download and verify every release file of STACK into DEST (<host>/<path> under it).

    Serve DEST over HTTP inside the air-gapped site and set kubesmith:cluster.artifacts
    .mirrorBaseUrl to its URL.
    """
    spec = _spec(stack, source)
    downloads = _downloads(spec, _arches(arch))
    dest = dest.resolve()
    with download_progress() as report:
        for download in downloads:
            path, origin = airgap.fetch_to(download, dest, progress=report)
            # Named as `list` names it (the record's label is for messages).
            name = f"{download.name} {download.version} ({download.arch})"
            progress.print(f"{name}: {origin}", highlight=False)
            out.print(str(path), highlight=False)
    out.print(
        f"[green]ok[/]: {len(downloads)} files verified in {dest}; serve it and set "
        "kubesmith:cluster.artifacts.mirrorBaseUrl to its URL"
    )


def _stack_pins(
    pins: dict[str, imagelock.ImageRef], stack: str | None
) -> dict[str, imagelock.ImageRef]:
    """``pins``, or only those ``stack``'s nodes pull (its shape's images, its apps')."""
    if stack is None:
        return pins
    spec = load_spec(stack)
    app_images = {app: images_of(o) for app, o in render_stack_apps(spec, stack).items()}
    needed = set()
    for image in airgap.needed_images(spec, app_images):
        try:
            needed.add(imagelock.ImageRef.parse(image).tagged)
        except ValueError:
            continue  # an app's own image, not pinned in versions.yaml
    return {key: ref for key, ref in pins.items() if ref.tagged in needed}


@artifacts_app.command("lock")
def lock_command(
    stack: str | None = OptionalStack,
    registry_mirror: str | None = typer.Option(
        None,
        "--registry-mirror",
        help="Read the images from this registry mirror instead: URL under which each image "
        "sits below its registry's host, <URL>/<registry>/<repository>:<tag> (http: no TLS).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 when a recorded digest has drifted."
    ),
    versions_file: Path | None = typer.Option(
        None, "--versions-file", help="The versions file to lock (default: kubesmith's own)."
    ),
) -> None:
    """Resolve each image tag pinned in versions.yaml to the digest its registry serves and
    record it there (comments and layout kept); with --stack, only the images STACK pulls."""
    path = versions_file or versions.versions_file()
    mirror = imagelock.RegistryMirror.parse(registry_mirror) if registry_mirror else None
    pins = _stack_pins(imagelock.read_pins(path), stack)
    if not check:
        imagelock.check_writable(path)
    changed: dict[str, str] = {}
    drifted: list[str] = []
    for key, ref in pins.items():
        result = imagelock.LockResult(key, ref, imagelock.resolve(ref, mirror))
        was = f"versions.yaml has {ref.digest}" if ref.digest else "versions.yaml has no digest"
        if result.status == "unchanged":
            label = "unchanged"
        elif check:
            label = f"{result.status}: {was}"
            drifted.append(
                f"images.{key} {ref.tagged} ({label}, the registry serves {result.served})"
            )
        else:
            label = f"recorded ({was})"
            changed[key] = str(result.locked)
        progress.print(f"images.{key} {ref.tagged}: {result.served} {label}", highlight=False)
    if check:
        if drifted:
            raise KubesmithError(
                "digest drift: " + "; ".join(drifted),
                hint="run `kubesmith artifacts lock` to record what the registries serve",
            )
        out.print(f"[green]ok[/]: {len(pins)} image digests in {path} match their registries")
        return
    if changed:
        imagelock.record_digests(path, changed)
    out.print(
        f"[green]ok[/]: {len(pins)} images locked in {path} ({len(changed)} digests recorded)"
    )


def smoke(stack: str | None = OptionalStack, inventory: Path | None = OptionalInventory) -> None:
    """Check a provisioned cluster end to end (playbooks/smoke.yml): nodes Ready, Secrets
    encrypted in etcd, a Deployment rolls out, port-forward, logs, exec, NodePort, DNS."""
    target = target_of(stack, inventory)
    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=SMOKE_PLAYBOOK,
        extravars={"smoke_image": versions.image("smoke")},
    )
    title = f"smoke test: {target.label}"
    with Progress(progress, list(target.inventory.hosts_in("kube_control_plane"))[:1], title) as p:
        result = run_playbook(request, p)
    out.print(recap_table(result, title))
    result.raise_for_failure("smoke test")
    out.print("[green]ok[/]: the cluster passed the smoke test")


def kubeconfig(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write it (default: admin.conf in the state dir)."
    ),
) -> None:
    """Write the cluster's admin kubeconfig (certificates embedded) with mode 0600."""
    target = target_of(stack, inventory)
    text = admin_kubeconfig(target)
    path = (output or target.state_dir / "admin.conf").resolve()
    if path.is_dir():
        raise UserError(f"--output: {path} is a directory; name a file")
    atomic_write(path, text.encode("utf-8"), 0o600)
    out.print(str(path), highlight=False)
    err.print(f"export KUBECONFIG={path}", highlight=False)


def certs(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    renew: bool = typer.Option(
        False,
        "--renew",
        help="Reissue the due leaf certificates, install them on their nodes and restart only "
        "the services that read them (never a CA).",
    ),
    within: int | None = typer.Option(
        None,
        "--within",
        metavar="DAYS",
        help="With --renew: renew what expires within DAYS (90-364; default 90).",
    ),
) -> None:
    """When the cluster's certificates expire, soonest first; exit 1 when one is due.

    Due: expired, or a leaf certificate with fewer than 90 days left (the window in which
    `kubesmith provision` reissues it). --renew reissues and installs them instead.
    """
    if within is not None and not renew:
        raise UserError("--within only applies to --renew")
    target = target_of(stack, inventory)
    if renew:
        renew_certs(target, within)
        return
    now = datetime.now(UTC)
    found = expiries(target.pki_dir)
    if not found:
        raise UserError(
            f"{target.label}: no certificates in {target.pki_dir}; provision the cluster first"
        )
    for entry in found:
        kind = "CA" if entry.is_ca else "leaf"
        mark = "  [red]renew[/]" if entry.due(now) else ""
        out.print(
            f"{entry.not_after:%Y-%m-%d}  {entry.days_left(now):>5}d  {kind:<4}  "
            f"{entry.path}{mark}",
            highlight=False,
        )
    due = [e for e in found if e.due(now)]
    if due:
        raise KubesmithError(
            f"{len(due)} certificate(s) of {target.label} expired or expire within 90 days "
            f"(first: {due[0].path}, {due[0].not_after:%Y-%m-%d})",
            hint="renew: kubesmith certs --renew (see docs/runbooks/certificates.md)",
        )


def status(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Each node: reachable, its services, installed versions, its etcd member; the soonest
    certificate expiry and the last provisioning run. Exit 1 when something needs attention."""
    target = target_of(stack, inventory)
    found = collect(target)
    if as_json:
        out.print_json(found.to_json())
    else:
        for node in found.nodes:
            roles = ",".join(g for g in node.groups if g != "k8s_cluster")
            if not node.reachable:
                out.print(
                    f"{node.name}  {roles}  [red]unreachable[/]: {node.error}", highlight=False
                )
                continue
            units = " ".join(
                f"{name}={state}" for name, state in node.units.items() if state != "inactive"
            )
            versions_ = " ".join(f"{name} {value}" for name, value in node.versions.items())
            etcd = ""
            if node.etcd_healthy is not None:
                etcd = f"  etcd {'healthy' if node.etcd_healthy else 'unhealthy'}"
                etcd += f" ({len(node.etcd_members)} members)"
            out.print(
                f"{node.name}  {roles}  {units or 'no service active'}{etcd}", highlight=False
            )
            out.print(f"  {versions_ or 'nothing installed'}", highlight=False)
        if found.certificate:
            cert = found.certificate
            out.print(
                f"soonest certificate: {cert['path']} in {cert['days_left']} days", highlight=False
            )
        run = found.last_run
        if run:
            how = "ok" if run.get("ok") else f"failed: {run.get('failure')}"
            out.print(f"last provisioning run: {run.get('finished')} {how}", highlight=False)
    if found.problems:
        for problem in found.problems:
            err.print(f"[yellow]attention[/]: {problem}", highlight=False)
        raise KubesmithError(
            f"{target.label}: {len(found.problems)} thing(s) need attention "
            f"(first: {found.problems[0]})"
        )
    if not as_json:
        out.print(f"[green]ok[/]: {target.label}: every node answers and nothing needs attention")
