"""The Pulumi program, composed in steps: spec -> node pool -> provisioning -> apps.

`infra/__main__.py` calls `main()`. Every resource of a stack hangs under one `Cluster`
component, which creates in order:

1. the backend's node pool (AWS or LXD, same node shape);
2. the inventory built from the nodes, and the `Provisioning` resource that runs the Ansible
   playbooks on them (re-run only when its trigger hash changes, so `pulumi preview` shows it);
   node pools whose network must route the nodes' pod ranges (AWS) then get those routes,
   from the ranges provisioning allocated;
3. the admin kubeconfig, read from the controller's PKI once provisioning has run, as a secret;
4. the stack's `apps`, rendered, validated and deployed with a provider built from that
   kubeconfig (only when the stack lists apps).

Stack outputs: `nodes` (the node shape of kubesmith.nodes, control planes first), `inventory`
(Ansible YAML for the cluster's groups), `apiEndpoint`, `sshUser` and `kubeconfig` (secret).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, runtime_checkable

import pulumi

from kubesmith.apps.deploy import AppsDeployment, AppsDeploymentArgs, secrets_from_config
from kubesmith.errors import ConfigError, KubesmithError
from kubesmith.nodes import Node
from kubesmith.program import backends
from kubesmith.program.provisioning import provision_after
from kubesmith.provision.admin import stack_admin_kubeconfig
from kubesmith.provision.inventory import api_endpoint, build_inventory, dump_inventory
from kubesmith.spec import CONFIG_KEY, ClusterSpec, parse_cluster
from kubesmith.state import sshkeys


@dataclass(frozen=True)
class ClusterOutputs:
    nodes: pulumi.Output[list[dict[str, Any]]]
    inventory: pulumi.Output[str]
    api_endpoint: pulumi.Output[str]
    ssh_user: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]


#: Reads a stack's admin kubeconfig from the controller's PKI (after provisioning).
KubeconfigReader = Callable[[str], str]


@runtime_checkable
class RoutesPodRanges(Protocol):
    """A node pool whose network, not only the nodes' own routes, must carry every node's pod
    range (AWS: nodes in different zones share no link). LXD nodes share one bridge, so their
    pool has no such step."""

    def route_pod_ranges(
        self, pod_cidrs: pulumi.Output[dict[str, str]], opts: pulumi.ResourceOptions
    ) -> None: ...


@dataclass(frozen=True)
class _Resolved:
    """Everything derived from the node list once it is known."""

    inventory_data: dict[str, Any]
    endpoint: str
    ssh_user: str

    @property
    def inventory(self) -> str:
        return dump_inventory(self.inventory_data)


def _resolve(spec: ClusterSpec, shapes: Sequence[dict[str, Any]], lb: str | None) -> _Resolved:
    nodes = [Node.from_output(shape) for shape in shapes]
    endpoint = api_endpoint(spec, nodes, lb)
    # The inventory names no controller paths (SSH key, known_hosts): it lives in the stack's
    # state, which any machine may read; the provisioning step adds them where it runs.
    inventory = build_inventory(spec, nodes, endpoint=endpoint)
    return _Resolved(inventory, endpoint, nodes[0].ssh_user)


class Cluster(pulumi.ComponentResource):
    """One stack's cluster: node pool, provisioning, kubeconfig and apps, in that order."""

    outputs: ClusterOutputs

    def __init__(
        self, spec: ClusterSpec, stack: str, public_key: str, read_kubeconfig: KubeconfigReader
    ) -> None:
        super().__init__("kubesmith:cluster:Cluster", spec.name)
        child = pulumi.ResourceOptions(parent=self)
        pool = backends.create_node_pool(backends.NodePoolRequest(spec, stack, public_key), child)
        resolved = pulumi.Output.all(pool.nodes, pool.api_load_balancer).apply(
            lambda values: _resolve(spec, values[0], values[1])
        )
        # The inventory carries the node resources as dependencies, so provisioning waits
        # for every node without an explicit depends_on.
        provisioning = provision_after(
            stack, spec, resolved.apply(lambda r: r.inventory_data), opts=child
        )
        # Only the bridge network needs the VPC to route pod ranges; flannel carries pod
        # traffic between nodes itself (vxlan) or refuses zones it cannot route (host-gw).
        if isinstance(pool, RoutesPodRanges) and spec.cni.plugin == "bridge":
            pool.route_pod_ranges(
                provisioning.pod_cidrs,
                pulumi.ResourceOptions(parent=self, depends_on=[provisioning]),
            )
        kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            provisioning.recap.apply(lambda _recap: read_kubeconfig(stack))
        )
        if spec.apps:
            AppsDeployment(
                f"{spec.name}-apps",
                AppsDeploymentArgs(
                    spec=spec, stack=stack, kubeconfig=kubeconfig, secrets=secrets_from_config()
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[provisioning]),
            )
        self.outputs = ClusterOutputs(
            nodes=pool.nodes,
            inventory=resolved.apply(lambda r: r.inventory),
            api_endpoint=resolved.apply(lambda r: r.endpoint),
            ssh_user=resolved.apply(lambda r: r.ssh_user),
            kubeconfig=kubeconfig,
        )
        self.register_outputs({"nodes": pool.nodes, "apiEndpoint": self.outputs.api_endpoint})


def compose(
    spec: ClusterSpec,
    stack: str,
    public_key: str,
    read_kubeconfig: KubeconfigReader = stack_admin_kubeconfig,
) -> ClusterOutputs:
    return Cluster(spec, stack, public_key, read_kubeconfig).outputs


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
    pulumi.export("kubeconfig", outputs.kubeconfig)


def main(read_kubeconfig: KubeconfigReader = stack_admin_kubeconfig) -> None:
    try:
        spec = parse_cluster(pulumi.Config("kubesmith").require_object("cluster"))
        stack = pulumi.get_stack()
        key = sshkeys.stack_key(stack)
        outputs = compose(spec, stack, key.public_key, read_kubeconfig)
    except KubesmithError as exc:
        _stop(exc)
    export(outputs)
