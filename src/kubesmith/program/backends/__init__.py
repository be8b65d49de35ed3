"""Node-pool backends. Each backend is one package here exposing the same contract:

    create_node_pool(request: NodePoolRequest, opts: pulumi.ResourceOptions | None) -> NodePool

so the Pulumi program, the inventory builder and everything after them never look at which
backend made the machines. Adding a backend touches one folder. A backend whose nodes share
the controller's file system also exposes ``attach_binaries`` (kubesmith.provision.kubernetes
.Attach): provisioning mounts the verified Kubernetes binaries into its nodes with it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi

from kubesmith.provision.kubernetes import Attach
from kubesmith.spec import ClusterSpec


@dataclass(frozen=True)
class NodePoolRequest:
    spec: ClusterSpec
    stack: str
    #: OpenSSH public key line placed on every node for the provisioning user.
    ssh_public_key: str


class NodePool(Protocol):
    #: Nodes in the shape of kubesmith.nodes.Node.to_output(), control planes first.
    nodes: pulumi.Output[list[dict[str, Any]]]
    #: DNS name or address of the API load balancer, or None when there is none.
    api_load_balancer: pulumi.Output[str | None]


class _Factory(Protocol):
    def __call__(
        self, request: NodePoolRequest, opts: pulumi.ResourceOptions | None = None
    ) -> NodePool: ...


def create_node_pool(
    request: NodePoolRequest, opts: pulumi.ResourceOptions | None = None
) -> NodePool:
    module = importlib.import_module(f"kubesmith.program.backends.{request.spec.backend}")
    factory: _Factory = module.create_node_pool
    return factory(request, opts)


def binaries_attach(spec: ClusterSpec) -> Attach | None:
    """The backend's ``attach_binaries``, or None when its nodes share no file system."""
    module = importlib.import_module(f"kubesmith.program.backends.{spec.backend}")
    attach: Attach | None = getattr(module, "attach_binaries", None)
    return attach
