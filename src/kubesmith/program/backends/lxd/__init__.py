"""The LXD backend: one LXD system container per node on the stack's bridge.

`create_node_pool` is the backend contract (see kubesmith.program.backends). Each node is its own
dynamic resource named after the node, so adding or removing a worker touches only that
worker. The pool, bridge and profile come from `kubesmith lxd init` and the image from
`kubesmith image build` (`make up` runs both before `pulumi up`).
"""

from __future__ import annotations

from typing import Any

import pulumi

from kubesmith.errors import ConfigError
from kubesmith.local.connection import labels
from kubesmith.local.instances import image_source, stack_node
from kubesmith.local.shares import attach as attach_binaries
from kubesmith.nodes import Node, Role, node_plan
from kubesmith.program.backends import NodePoolRequest
from kubesmith.program.backends.lxd.provider import LxdNode
from kubesmith.spec import CONFIG_KEY

__all__ = ["LxdNodePool", "attach_binaries", "create_node_pool"]

SSH_USER = "root"


def _shape(name: str, role: Role) -> Any:
    def shape(address: str) -> dict[str, Any]:
        return Node(name, role, address, None, SSH_USER).to_output()

    return shape


class LxdNodePool(pulumi.ComponentResource):
    nodes: pulumi.Output[list[dict[str, Any]]]
    api_load_balancer: pulumi.Output[str | None]

    def __init__(
        self, request: NodePoolRequest, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        spec = request.spec
        if spec.lxd is None:
            raise ConfigError([f"{CONFIG_KEY}.lxd: is required when backend is 'lxd'"])
        super().__init__("kubesmith:lxd:NodePool", spec.name, None, opts)
        image = image_source(spec.lxd)
        child = pulumi.ResourceOptions(parent=self)
        outputs = []
        for name, role in node_plan(spec):
            node = stack_node(
                request.stack,
                spec.lxd,
                name,
                image=image,
                labels=labels(stack=request.stack, cluster=spec.name, role=role, owner="pulumi"),
                public_key=request.ssh_public_key,
            )
            resource = LxdNode(name, node, role, child)
            outputs.append(resource.private_address.apply(_shape(name, role)))
        self.nodes = pulumi.Output.all(*outputs)
        # Every node reaches the API through its own local proxy (see inventory.api_endpoint).
        self.api_load_balancer = pulumi.Output.from_input(None)
        self.register_outputs({"nodes": self.nodes})


def create_node_pool(
    request: NodePoolRequest, opts: pulumi.ResourceOptions | None = None
) -> LxdNodePool:
    return LxdNodePool(request, opts)
