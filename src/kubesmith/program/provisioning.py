"""Provisioning as a Pulumi resource, so `pulumi up` configures the nodes it created.

`Provisioning` runs the same glue as `kubesmith provision -s STACK` once the node pool exists.
Its inputs say what provisioning reads: the inventory, a trigger (a sha256 over the
inventory, every file under playbooks/, versions.yaml, the cluster spec and the controller
files it names (the OIDC issuer's CA)), and per host and
per cluster-wide setting the maps kubesmith.program.hostdiff diffs (``hosts``, ``cluster``).
The diff plans, host by host, what an update runs and why, says it on stderr (the engine shows
it under the step, in `pulumi preview` as in `up`) and changes nothing when nothing changed;
the update runs the plan: everything, or the new and changed hosts and then only the plays of
the others that read them (kubesmith.provision.scope). Never a replacement. A changed
Kubernetes version runs the rolling upgrade instead (kubesmith.provision.upgrade: node by
node, in the order version skew allows).

Its outputs carry the run's recap and the pod range of every node (`pod_cidrs`, node name ->
CIDR), read back from the allocation kubesmith.state.podcidr keeps in the stack's state:
backends whose network must route the ranges (AWS) build their routes from it. The program
also passes the ranges it expects as an input under the same key. While a preview shows this
resource being created or updated, the engine reports its inputs as its outputs, so the
routes keep known, unchanged ranges in the preview instead of unknown ones (which would show
every route replaced). The diff does not compare them (the run allocates the ranges), only
whether the last outputs hold ranges at all (a state from before they existed).

Wiring (kubesmith.program, after the node pool):

    provision_after(stack, spec, inventory_output, opts=pulumi.ResourceOptions(
        parent=cluster, depends_on=[node_pool]))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from kubesmith.nodes import Node, node_plan
from kubesmith.program import hostdiff
from kubesmith.program.hostdiff import CLUSTER_KEY, HOSTS_KEY, NEW_NODE, Plan
from kubesmith.provision.apiserver_config import authentication_configuration
from kubesmith.provision.inventory import ENDPOINT_VAR, build_inventory
from kubesmith.provision.provisioner import Options, Outcome
from kubesmith.provision.target import Target
from kubesmith.resources import package_file, playbooks_dir
from kubesmith.spec import ClusterSpec
from kubesmith.state.files import atomic_write
from kubesmith.state.lock import cluster_lock
from kubesmith.state.paths import stack_dir
from kubesmith.state.podcidr import ALLOCATIONS_FILE, allocate

if TYPE_CHECKING:
    from kubesmith.provision.removal import Removal

#: What provisioning ran with last; kept in the state so `pulumi stack output` can show it.
RECAP_KEY = "recap"
#: Node name -> pod range of every Kubernetes node (see the module doc).
POD_CIDRS_KEY = "pod_cidrs"
#: Host -> why the last run provisioned it (kubesmith.program.hostdiff's reasons).
PROVISIONED_KEY = "provisioned"


def trigger_hash(
    inventory: Mapping[str, Any],
    spec: ClusterSpec,
    *,
    playbooks: Path | None = None,
    versions_file: Path | None = None,
) -> str:
    """A digest of everything a provisioning run depends on."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    add("inventory", json.dumps(inventory, sort_keys=True, default=str).encode())
    add("spec", spec.model_dump_json(by_alias=True).encode())
    # The spec names oidc.caFile by path; a renewed CA behind the same path must rerun too.
    add("authentication", json.dumps(authentication_configuration(spec), sort_keys=True).encode())
    add("versions", (versions_file or package_file("versions.yaml")).read_bytes())
    root = playbooks or playbooks_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        add(f"playbooks/{path.relative_to(root)}", path.read_bytes())
    return digest.hexdigest()


def cluster_digest(inventory: Mapping[str, Any], spec: ClusterSpec) -> str:
    """The trigger without the hosts: moves with every cluster-wide input, not with nodes
    coming, going or moving (kubesmith.program.hostdiff diffs those host by host)."""
    counts = {"control_planes": 1, "workers": 0}
    return trigger_hash(hostdiff.hostless(inventory), spec.model_copy(update=counts))


def with_controller_paths(stack: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's inventory plus what only this machine knows: the stack's SSH key and its
    pinned host keys (the same variables kubesmith.provision.inventory.build_inventory sets). The
    inventory in the Pulumi state names no controller path."""
    from kubesmith.provision.inventory import controller_vars
    from kubesmith.state.sshkeys import stack_key

    data: dict[str, Any] = json.loads(json.dumps(inventory))  # a deep, plain copy
    all_vars = data.setdefault("all", {}).setdefault("vars", {})
    all_vars.update(
        controller_vars(stack_key(stack).private_path, stack_dir(stack) / "known_hosts")
    )
    return data


def expected_pod_cidrs(stack: str, spec: ClusterSpec) -> dict[str, str]:
    """The pod ranges the next provisioning run will use for the spec's nodes.

    podcidr's own allocation, worked out on a scratch copy of the kept file: a preview must
    not change the state (a node it removes would lose a range it still holds if the
    preview is never applied). The nodes are in inventory order, as the run passes them.
    None with flannel: the controller-manager allocates its ranges, kubesmith keeps none.
    """
    if spec.cni.plugin != "bridge":
        return {}
    kept = stack_dir(stack) / ALLOCATIONS_FILE
    nodes = [name for name, _role in node_plan(spec)]
    with tempfile.TemporaryDirectory(prefix="kubesmith-pod-cidrs-") as scratch:
        if kept.is_file():
            shutil.copy(kept, scratch)
        allocation = allocate(spec.pod_cidr, nodes, Path(scratch))
    return {node: str(cidr) for node, cidr in allocation.items()}


def used_pod_cidrs(target: Target) -> dict[str, str]:
    """The pod range of every node as provisioning ``target`` allocated them.

    The same call as kubesmith.provision.kubernetes.prepare makes: with the ranges already kept
    it returns them and writes nothing. None with flannel (see expected_pod_cidrs).
    """
    inventory = target.inventory
    spec = inventory.cluster.spec
    if spec.cni.plugin != "bridge":
        return {}
    allocation = allocate(spec.pod_cidr, inventory.hosts_in("k8s_cluster"), target.state_dir)
    return {node: str(cidr) for node, cidr in allocation.items()}


def whole_numbers(value: Any) -> Any:
    """``value`` with every integral float made an int again.

    Pulumi carries properties as protobuf Values, whose only number is a double: the
    inventory's counts (controlPlanes: 1) reach the provider as 1.0, which the strict spec
    refuses. Nothing kubesmith writes uses a fractional number.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


def runs_for(planned: Plan) -> list[Options]:
    """The playbook runs an update makes: everything, or the new and changed hosts in full and
    then the plays that read them on the other hosts (kubesmith.provision.scope)."""
    if planned.full:
        return [Options()]
    runs = []
    if planned.hosts:
        runs.append(Options(limit=",".join(planned.hosts)))
    if planned.follow is not None:
        runs.append(Options(tags=planned.follow.tags, limit=",".join(planned.follow.hosts)))
    return runs


def _title(stack: str, hosts: int, options: Options) -> str:
    what = f"{hosts} hosts" if options.limit is None else f"{options.limit}"
    tags = f" --tags {','.join(options.tags)}" if options.tags else ""
    return f"provisioning {stack}: {what}, playbooks/site.yml{tags}"


def _run(props: Mapping[str, Any], planned: Plan, runs: Sequence[Options]) -> dict[str, Any]:
    """Write the stack's inventory and run ``runs`` on it; the outputs carry the recap (of the
    hosts that ran), the reasons of ``planned`` and the pod ranges.

    Progress goes to stderr, one line per host and role (kubesmith.provision.recap
    .LineProgress through a kubesmith.progress reporter, whose heartbeat keeps a line coming
    while a task runs): the engine shows a dynamic provider's stderr in the update's output.
    """
    # Imported here: the engine pickles this provider, and the glue need not travel with it.
    from rich.console import Console

    from kubesmith.program.backends import binaries_attach
    from kubesmith.progress import ConsoleReporter
    from kubesmith.provision import target as targets
    from kubesmith.provision import upgrade
    from kubesmith.provision.inventory import dump_inventory
    from kubesmith.provision.provisioner import provision
    from kubesmith.provision.recap import LineProgress, pki_summary

    stack = str(props["stack"])
    inventory = with_controller_paths(stack, whole_numbers(props["inventory"]))
    path = stack_dir(stack) / targets.STACK_INVENTORY
    atomic_write(path, dump_inventory(inventory).encode("utf-8"), 0o600)
    target = targets.for_stack(stack)
    recap: dict[str, Any] = {}

    def one(options: Options, title: str) -> Outcome:
        with ConsoleReporter(Console(stderr=True)) as reporter:
            reporter.phase(title)
            progress = LineProgress(reporter)
            outcome = provision(
                target, options, progress, binaries_attach(target.inventory.cluster.spec)
            )
            summary = pki_summary(outcome.pki)
            if summary:
                reporter.note(summary)
            # The step's last line: its title, "done" and the time it took.
            reporter.detail("done" if outcome.run.ok else "failed")
        outcome.run.raise_for_failure("provisioning")
        for host, s in outcome.run.stats.items():
            before = recap.get(host, {"ok": 0, "changed": 0, "failed": 0, "changed_roles": {}})
            recap[host] = {
                "ok": before["ok"] + s.ok,
                "changed": before["changed"] + s.changed,
                "failed": before["failed"] + s.failed,
                "changed_roles": {
                    **before["changed_roles"],
                    **progress.changed_roles.get(host, {}),
                },
            }
        return outcome

    # A kubernetesVersion change (a cluster-wide change: every host runs) rolls node by node.
    rolling = upgrade.pending(target)
    if rolling is not None:
        for line in rolling.lines():
            _note(line)
        upgrade.run(target, rolling, lambda o, what: one(o, f"provisioning {stack}: {what}"), _note)
    else:
        for options in runs:
            one(options, _title(stack, len(target.inventory.hostvars), options))
    return {
        **props,
        RECAP_KEY: recap,
        PROVISIONED_KEY: dict(planned.reasons),
        POD_CIDRS_KEY: used_pod_cidrs(target),
    }


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _say_upgrade(olds: Mapping[str, Any], news: Mapping[str, Any]) -> None:
    """A changed Kubernetes version: the update rolls it node by node (see _run)."""
    old = (olds.get(CLUSTER_KEY) or {}).get("kubernetesVersion")
    new = (news.get(CLUSTER_KEY) or {}).get("kubernetesVersion")
    if isinstance(old, str) and isinstance(new, str) and old != new:
        _note(
            f"will upgrade Kubernetes {old} -> {new} node by node: control planes one at a "
            "time, then the other nodes in batches of upgrade.maxUnavailable"
        )


def _leave(olds: Mapping[str, Any], removed: Sequence[str]) -> tuple[Target, list[Removal]]:
    """`kubesmith node remove`'s steps for each removed host, on the last run's inventory:
    checks first (the last control plane, etcd's quorum: a refusal fails the update before
    anything changed, and the engine then deletes no machine), drain and Node deletion when
    the API answers, the etcd member, the node's reset. One line per step on stderr."""
    from kubesmith.provision import removal
    from kubesmith.provision import target as targets
    from kubesmith.provision.inventory import dump_inventory

    stack = str(olds["stack"])
    inventory = with_controller_paths(stack, whole_numbers(olds["inventory"]))
    path = stack_dir(stack) / "inventory.before-removal.yml"
    atomic_write(path, dump_inventory(inventory).encode("utf-8"), 0o600)
    target = dataclasses.replace(targets.for_inventory(path), label=f"stack {stack}")
    removal.check_inventory(target.inventory, target.label, removed)
    done = []
    for name in removed:
        print(f"removing {name}: checking the cluster", file=sys.stderr, flush=True)
        checked = removal.preflight(target, name)
        for line in removal.leave(target, checked):
            print(f"removing {name}: {line}", file=sys.stderr, flush=True)
        done.append(checked)
    return target, done


def _forget(target: Target, removed: Sequence[Removal]) -> None:
    from kubesmith.provision import removal

    for checked in removed:
        forgotten = removal.forget(target, checked)
        if forgotten:
            print(f"removed {checked.name}: forgot {', '.join(forgotten)}", file=sys.stderr)


def _say(planned: Plan) -> None:
    """The plan on stderr, a line per host: the engine shows it under the resource's step, in
    `pulumi preview` as in `pulumi up`."""
    for line in planned.lines():
        print(f"will provision {line}", file=sys.stderr, flush=True)


class ProvisioningProvider(ResourceProvider):
    """Runs provisioning on create and whenever the trigger changes; never replaces."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        hosts = props.get(HOSTS_KEY) or {}
        planned = Plan(reasons=dict.fromkeys(hosts, NEW_NODE), full=True, hosts=tuple(hosts))
        return CreateResult(
            id_=f"provisioning-{props['stack']}", outs=_run(props, planned, [Options()])
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # ``olds`` are the last outputs (hostdiff.plan: which hosts run, and why). Never a
        # replacement: provisioning converges whatever the nodes hold.
        planned = hostdiff.plan(olds, news)
        _say(planned)
        _say_upgrade(olds, news)
        return DiffResult(
            changes=planned.changes, replaces=[], stables=["stack"], delete_before_replace=False
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        planned = hostdiff.plan(olds, news)
        # One change at a time (kubesmith.state.lock), across the removals and the runs.
        with cluster_lock(stack_dir(str(news["stack"])), "pulumi update (provisioning)"):
            # Hosts going (a lower count): they leave the cluster while their machines still
            # exist (the engine deletes those after this update), then the runs update the
            # others.
            leaving = _leave(olds, planned.removed) if planned.removed else None
            outs = _run(news, planned, runs_for(planned))
            if leaving is not None:
                _forget(*leaving)
        return UpdateResult(outs=outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The nodes go with the node pool; the PKI stays in the state directory on purpose
        # (a re-created cluster with the same name keeps its CA unless it is removed by hand).
        return None


class Provisioning(pulumi.dynamic.Resource):
    """The provisioning run of one stack's nodes."""

    recap: pulumi.Output[dict[str, Any]]
    provisioned: pulumi.Output[dict[str, str]]
    pod_cidrs: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        stack: str,
        inventory: pulumi.Input[Mapping[str, Any]],
        trigger: pulumi.Input[str],
        expected_pod_cidrs: Mapping[str, str],
        hosts: Mapping[str, pulumi.Input[Mapping[str, Any]]],
        cluster: Mapping[str, pulumi.Input[Any]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "stack": stack,
            "inventory": inventory,
            "trigger": trigger,
            HOSTS_KEY: dict(hosts),
            CLUSTER_KEY: dict(cluster),
            PROVISIONED_KEY: None,
            RECAP_KEY: None,
            POD_CIDRS_KEY: dict(expected_pod_cidrs),
        }
        super().__init__(ProvisioningProvider(), name, props, opts)


#: What a host's entry holds before its node exists (a preview): what the spec decides.
SPEC_DECIDED = ("role", "groups")


def host_entries(
    spec: ClusterSpec, inventory: pulumi.Output[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Host -> its ``hosts`` entry (kubesmith.program.hostdiff.host_inputs): the role, groups
    as plain values, each value the nodes decide (address, node IP, SSH user)
    as its own output. So a preview shows a new node's role and groups, and only what its
    node will decide as unknown."""
    nodes = [Node(name, role, "0.0.0.0", None, "-") for name, role in node_plan(spec)]
    planned = build_inventory(spec, nodes, endpoint="https://0.0.0.0:6443")
    entries: dict[str, dict[str, Any]] = {}
    for host, known in hostdiff.host_inputs(planned).items():
        entry = _entry(inventory, host)
        entries[host] = {
            key: value if key in SPEC_DECIDED else _field(entry, key)
            for key, value in known.items()
        }
    return entries


def _entry(inventory: pulumi.Output[dict[str, Any]], host: str) -> pulumi.Output[dict[str, Any]]:
    return inventory.apply(lambda data: hostdiff.host_inputs(data)[host])


def _field(entry: pulumi.Output[dict[str, Any]], key: str) -> pulumi.Output[Any]:
    return entry.apply(lambda values: values.get(key))


def provision_after(
    stack: str,
    spec: ClusterSpec,
    inventory: pulumi.Output[dict[str, Any]],
    opts: pulumi.ResourceOptions | None = None,
) -> Provisioning:
    """The Provisioning resource for ``stack``; pass depends_on=[node pool] in ``opts``."""
    trigger = inventory.apply(lambda data: trigger_hash(data, spec))
    expected = expected_pod_cidrs(stack, spec)
    # One input per host, so a preview shows each host's entry as its own property; the host
    # names are known from the spec while the addresses are not (a node still to be created).
    hosts = host_entries(spec, inventory)
    endpoint = inventory.apply(lambda data: data["all"]["vars"][ENDPOINT_VAR])
    digest = inventory.apply(lambda data: cluster_digest(data, spec))
    cluster = hostdiff.cluster_inputs(spec, endpoint, digest)
    return Provisioning(
        f"{spec.name}-provisioning", stack, inventory, trigger, expected, hosts, cluster, opts
    )
