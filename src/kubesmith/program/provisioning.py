"""Provisioning as a Pulumi resource, so `pulumi up` configures the nodes it created.

`Provisioning` runs the same glue as `kubesmith provision -s STACK` once the node pool exists.
Its one deciding input is a trigger: a sha256 over the inventory, every file under playbooks/,
versions.yaml, the cluster spec and the controller files it names (the OIDC issuer's CA).
`pulumi preview` therefore shows the resource as changing exactly when provisioning would run
again, and a `pulumi up` with nothing changed skips it.

Its outputs carry the run's recap and the pod range of every node (`pod_cidrs`, node name ->
CIDR), read back from the allocation kubesmith.state.podcidr keeps in the stack's state:
backends whose network must route the ranges (AWS) build their routes from it. The program
also passes the ranges it expects as an input under the same key. While a preview shows this
resource being created or updated, the engine reports its inputs as its outputs, so the
routes keep known, unchanged ranges in the preview instead of unknown ones (which would show
every route replaced). The diff still looks at the trigger alone, plus whether the last
outputs hold ranges at all (a state from before they existed).

Wiring (kubesmith.program, after the node pool):

    provision_after(stack, spec, inventory_output, opts=pulumi.ResourceOptions(
        parent=cluster, depends_on=[node_pool]))
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from kubesmith.nodes import node_plan
from kubesmith.provision.apiserver_config import authentication_configuration
from kubesmith.provision.target import Target
from kubesmith.resources import package_file, playbooks_dir
from kubesmith.spec import ClusterSpec
from kubesmith.state.files import atomic_write
from kubesmith.state.paths import stack_dir
from kubesmith.state.podcidr import ALLOCATIONS_FILE, allocate

#: What provisioning ran with last; kept in the state so `pulumi stack output` can show it.
RECAP_KEY = "recap"
#: Node name -> pod range of every Kubernetes node (see the module doc).
POD_CIDRS_KEY = "pod_cidrs"


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


def _run(props: Mapping[str, Any]) -> dict[str, Any]:
    """Write the stack's inventory and provision it; the outputs carry the recap and ranges.

    Progress goes to stderr, one line per host and role (kubesmith.provision.recap
    .LineProgress through a kubesmith.progress reporter, whose heartbeat keeps a line coming
    while a task runs): the engine shows a dynamic provider's stderr in the update's output.
    """
    # Imported here: the engine pickles this provider, and the glue need not travel with it.
    from rich.console import Console

    from kubesmith.program.backends import binaries_attach
    from kubesmith.progress import ConsoleReporter
    from kubesmith.provision import target as targets
    from kubesmith.provision.inventory import dump_inventory
    from kubesmith.provision.provisioner import Options, provision
    from kubesmith.provision.recap import LineProgress, pki_summary

    stack = str(props["stack"])
    inventory = with_controller_paths(stack, whole_numbers(props["inventory"]))
    path = stack_dir(stack) / targets.STACK_INVENTORY
    atomic_write(path, dump_inventory(inventory).encode("utf-8"), 0o600)
    target = targets.for_stack(stack)
    title = f"provisioning {stack}: {len(target.inventory.hostvars)} hosts, playbooks/site.yml"
    with ConsoleReporter(Console(stderr=True)) as reporter:
        reporter.phase(title)
        progress = LineProgress(reporter)
        outcome = provision(
            target, Options(), progress, binaries_attach(target.inventory.cluster.spec)
        )
        summary = pki_summary(outcome.pki)
        if summary:
            reporter.note(summary)
        # The step's last line: its title, "done" and the time it took.
        reporter.detail("done" if outcome.run.ok else "failed")
    outcome.run.raise_for_failure("provisioning")
    recap = {
        host: {
            "ok": s.ok,
            "changed": s.changed,
            "failed": s.failed,
            "changed_roles": progress.changed_roles.get(host, {}),
        }
        for host, s in outcome.run.stats.items()
    }
    return {**props, RECAP_KEY: recap, POD_CIDRS_KEY: used_pod_cidrs(target)}


class ProvisioningProvider(ResourceProvider):
    """Runs provisioning on create and whenever the trigger changes; never replaces."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"provisioning-{props['stack']}", outs=_run(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # ``olds`` are the last outputs. A state written before the pod ranges were an output
        # has none to give the routes that read them: one idempotent run adds them.
        changed = olds.get("trigger") != news.get("trigger") or POD_CIDRS_KEY not in olds
        return DiffResult(
            changes=changed, replaces=[], stables=["stack"], delete_before_replace=False
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=_run(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # The nodes go with the node pool; the PKI stays in the state directory on purpose
        # (a re-created cluster with the same name keeps its CA unless it is removed by hand).
        return None


class Provisioning(pulumi.dynamic.Resource):
    """The provisioning run of one stack's nodes."""

    recap: pulumi.Output[dict[str, Any]]
    pod_cidrs: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        stack: str,
        inventory: pulumi.Input[Mapping[str, Any]],
        trigger: pulumi.Input[str],
        expected_pod_cidrs: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "stack": stack,
            "inventory": inventory,
            "trigger": trigger,
            RECAP_KEY: None,
            POD_CIDRS_KEY: dict(expected_pod_cidrs),
        }
        super().__init__(ProvisioningProvider(), name, props, opts)


def provision_after(
    stack: str,
    spec: ClusterSpec,
    inventory: pulumi.Output[dict[str, Any]],
    opts: pulumi.ResourceOptions | None = None,
) -> Provisioning:
    """The Provisioning resource for ``stack``; pass depends_on=[node pool] in ``opts``."""
    trigger = inventory.apply(lambda data: trigger_hash(data, spec))
    expected = expected_pod_cidrs(stack, spec)
    return Provisioning(f"{spec.name}-provisioning", stack, inventory, trigger, expected, opts)
