"""Provisioning as a Pulumi resource, so `pulumi up` configures the nodes it created.

`Provisioning` runs the same glue as `kubesmith provision -s STACK` once the node pool exists.
Its one deciding input is a trigger: a sha256 over the inventory, every file under playbooks/,
versions.yaml and the cluster spec. `pulumi preview` therefore shows the resource as changing
exactly when provisioning would run again, and a `pulumi up` with nothing changed skips it.

Wiring (kubesmith.program, after the node pool):

    provision_after(stack, spec, inventory_output, opts=pulumi.ResourceOptions(
        parent=cluster, depends_on=[node_pool]))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from kubesmith.paths import package_dir
from kubesmith.provision.runner import playbooks_dir
from kubesmith.spec import ClusterSpec

#: What provisioning ran with last; kept in the state so `pulumi stack output` can show it.
RECAP_KEY = "recap"


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
    add("versions", (versions_file or package_dir() / "versions.yaml").read_bytes())
    root = playbooks or playbooks_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        add(f"playbooks/{path.relative_to(root)}", path.read_bytes())
    return digest.hexdigest()


def with_controller_paths(stack: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's inventory plus what only this machine knows: the stack's SSH key and its
    pinned host keys (the same variables kubesmith.inventory.build_inventory sets). The
    inventory in the Pulumi state names no controller path."""
    from kubesmith.paths import stack_dir
    from kubesmith.sshkeys import stack_key

    data: dict[str, Any] = json.loads(json.dumps(inventory))  # a deep, plain copy
    all_vars = data.setdefault("all", {}).setdefault("vars", {})
    all_vars["ansible_ssh_private_key_file"] = str(stack_key(stack).private_path)
    all_vars["ansible_ssh_common_args"] = (
        f"-o UserKnownHostsFile={stack_dir(stack) / 'known_hosts'} "
        "-o StrictHostKeyChecking=accept-new"
    )
    return data


def _run(props: Mapping[str, Any]) -> dict[str, Any]:
    """Write the stack's inventory and provision it; the outputs carry the recap."""
    # Imported here: the engine pickles this provider, and the glue need not travel with it.
    from kubesmith.inventory import dump_inventory
    from kubesmith.paths import stack_dir
    from kubesmith.provision import target as targets
    from kubesmith.provision.provisioner import Options, provision

    stack = str(props["stack"])
    path = stack_dir(stack) / targets.STACK_INVENTORY
    temporary = path.with_suffix(".tmp")
    temporary.write_text(dump_inventory(with_controller_paths(stack, props["inventory"])))
    temporary.replace(path)
    outcome = provision(targets.for_stack(stack), Options())
    outcome.run.raise_for_failure("provisioning")
    recap = {
        host: {"ok": s.ok, "changed": s.changed, "failed": s.failed}
        for host, s in outcome.run.stats.items()
    }
    return {**props, RECAP_KEY: recap}


class ProvisioningProvider(ResourceProvider):
    """Runs provisioning on create and whenever the trigger changes; never replaces."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"provisioning-{props['stack']}", outs=_run(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("trigger") != news.get("trigger")
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

    def __init__(
        self,
        name: str,
        stack: str,
        inventory: pulumi.Input[Mapping[str, Any]],
        trigger: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"stack": stack, "inventory": inventory, "trigger": trigger, RECAP_KEY: None}
        super().__init__(ProvisioningProvider(), name, props, opts)


def provision_after(
    stack: str,
    spec: ClusterSpec,
    inventory: pulumi.Output[dict[str, Any]],
    opts: pulumi.ResourceOptions | None = None,
) -> Provisioning:
    """The Provisioning resource for ``stack``; pass depends_on=[node pool] in ``opts``."""
    trigger = inventory.apply(lambda data: trigger_hash(data, spec))
    return Provisioning(f"{spec.name}-provisioning", stack, inventory, trigger, opts)
