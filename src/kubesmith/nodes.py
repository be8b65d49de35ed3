"""The node shape every backend's node pool produces and every consumer reads.

AWS and LXD node pools both export a list of these (as camelCase mappings in stack outputs);
the inventory builder, the lab harness and the provisioning glue read nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kubesmith.spec import ClusterSpec


def natural_key(name: str) -> list[Any]:
    """Node names in the order people count them: ``worker-2`` before ``worker-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


Role = Literal["control_plane", "worker"]
ROLES: tuple[Role, ...] = ("control_plane", "worker")


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    private_address: str
    public_address: str | None
    ssh_user: str

    @property
    def address(self) -> str:
        """The address the controller uses: public when the node has one, else private."""
        return self.public_address or self.private_address

    def to_output(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "privateAddress": self.private_address,
            "publicAddress": self.public_address,
            "sshUser": self.ssh_user,
        }

    @classmethod
    def from_output(cls, data: dict[str, Any]) -> Node:
        role = data["role"]
        if role not in ROLES:
            raise ValueError(f"node {data.get('name')!r}: unknown role {role!r}")
        return cls(
            name=str(data["name"]),
            role=role,
            private_address=str(data["privateAddress"]),
            public_address=data.get("publicAddress") or None,
            ssh_user=str(data["sshUser"]),
        )


def node_name(cluster: str, role: Role, index: int) -> str:
    """`<cluster>-cp-N` or `<cluster>-worker-N`, N counting from 1."""
    return f"{cluster}-{'cp' if role == 'control_plane' else 'worker'}-{index}"


def node_plan(spec: ClusterSpec) -> list[tuple[str, Role]]:
    """Node names and roles of ``spec``: control planes first, numbered from 1."""
    plan: list[tuple[str, Role]] = [
        (node_name(spec.name, "control_plane", i), "control_plane")
        for i in range(1, spec.control_planes + 1)
    ]
    plan += [(node_name(spec.name, "worker", i), "worker") for i in range(1, spec.workers + 1)]
    return plan
