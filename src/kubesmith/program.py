"""The Pulumi program, composed in steps: spec -> node pool -> inventory -> exports.

`infra/__main__.py` calls `main()`. `compose()` holds the steps and returns every output as a
`ClusterOutputs`, so tests resolve them under mocks and later steps (provisioning, kubeconfig,
apps) slot in after the node pool without touching the backends.

Stack outputs: `nodes` (the node shape of kubesmith.nodes, control planes first),
`inventory` (Ansible YAML for the cluster's groups), `apiEndpoint` and `sshUser`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import pulumi

from kubesmith import backends, sshkeys
from kubesmith.errors import ConfigError, KubesmithError
from kubesmith.inventory import api_endpoint, build_inventory, dump_inventory
from kubesmith.nodes import Node
from kubesmith.spec import CONFIG_KEY, ClusterSpec, parse_cluster


@dataclass(frozen=True)
class ClusterOutputs:
    nodes: pulumi.Output[list[dict[str, Any]]]
    inventory: pulumi.Output[str]
    api_endpoint: pulumi.Output[str]
    ssh_user: pulumi.Output[str]


@dataclass(frozen=True)
class _Resolved:
    """Everything derived from the node list once it is known."""

    inventory: str
    endpoint: str
    ssh_user: str


def _resolve(spec: ClusterSpec, shapes: Sequence[dict[str, Any]], lb: str | None) -> _Resolved:
    nodes = [Node.from_output(shape) for shape in shapes]
    endpoint = api_endpoint(spec, nodes, lb)
    # The inventory names no controller paths (SSH key, known_hosts): it lives in the stack's
    # state, which any machine may read; the provisioning step adds them where it runs.
    inventory = dump_inventory(build_inventory(spec, nodes, endpoint=endpoint))
    return _Resolved(inventory, endpoint, nodes[0].ssh_user)


def compose(spec: ClusterSpec, stack: str, public_key: str) -> ClusterOutputs:
    pool = backends.create_node_pool(backends.NodePoolRequest(spec, stack, public_key))
    resolved = pulumi.Output.all(pool.nodes, pool.api_load_balancer).apply(
        lambda values: _resolve(spec, values[0], values[1])
    )
    return ClusterOutputs(
        nodes=pool.nodes,
        inventory=resolved.apply(lambda r: r.inventory),
        api_endpoint=resolved.apply(lambda r: r.endpoint),
        ssh_user=resolved.apply(lambda r: r.ssh_user),
    )


def _stop(exc: KubesmithError) -> NoReturn:
    """End the run with the problem's own lines, not a Python traceback."""
    if isinstance(exc, ConfigError):
        for line in exc.lines():
            pulumi.log.error(line)
        count = len(exc.problems)
        summary = (
            f"{CONFIG_KEY} of stack {pulumi.get_stack()} has {count} "
            f"problem{'s' if count != 1 else ''} (listed above)"
        )
    else:
        summary = exc.message
    raise pulumi.RunError(summary) from None


def export(outputs: ClusterOutputs) -> None:
    pulumi.export("nodes", outputs.nodes)
    pulumi.export("inventory", outputs.inventory)
    pulumi.export("apiEndpoint", outputs.api_endpoint)
    pulumi.export("sshUser", outputs.ssh_user)


def main() -> None:
    try:
        spec = parse_cluster(pulumi.Config("kubesmith").require_object("cluster"))
        stack = pulumi.get_stack()
        key = sshkeys.stack_key(stack)
        outputs = compose(spec, stack, key.public_key)
    except KubesmithError as exc:
        _stop(exc)
    export(outputs)
