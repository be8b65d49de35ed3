"""A Pulumi dynamic provider for one LXD node, on kubesmith.local.instances.

No Pulumi plugin is needed: the engine runs this Python code itself. Every input that decides
what the node is (image, profile, limits, labels, key, resolver) forces a replacement, deleted
before the new node is created because the name is the node's identity. The address is read
back from LXD.

A replaced node often gets the address its predecessor had, with a new host key. So create and
delete both drop the address's pinned key from the stack's known_hosts (the file the
provisioning run pins host keys in, with accept-new): the next run learns the new key instead
of refusing the node, as labs do (kubesmith.local.lab).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from kubesmith.errors import KubesmithError
from kubesmith.local.connection import LABEL_PREFIX, connect
from kubesmith.local.instances import (
    ADDRESS_TIMEOUT_S,
    ImageSource,
    NodeSpec,
    create_node,
    delete_node,
    get_instance,
    node_address,
    wait_for_address,
)
from kubesmith.local.ssh import KnownHosts
from kubesmith.state.paths import stack_dir

#: Inputs that decide what the node is; a change to any of them means a new node.
REPLACE_ON = (
    "name",
    "role",
    "image",
    "profile",
    "cpu",
    "memory",
    "labels",
    "ssh_public_key",
    "nameserver",
)


def node_props(node: NodeSpec, role: str) -> dict[str, Any]:
    """The resource's inputs for ``node`` (plain data: the engine stores them in the state)."""
    image = {"alias": node.image.alias}
    if node.image.server is not None:
        image.update(server=node.image.server, protocol=node.image.protocol or "simplestreams")
    props: dict[str, Any] = {
        "name": node.name,
        "role": role,
        "image": image,
        "profile": node.profile,
        "cpu": node.cpu,
        "memory": node.memory,
        "labels": dict(node.labels),
        "ssh_public_key": node.authorized_key,
    }
    if node.nameserver is not None:
        props["nameserver"] = node.nameserver
    return props


def node_from_props(props: Mapping[str, Any]) -> NodeSpec:
    image = props["image"]
    return NodeSpec(
        name=str(props["name"]),
        image=ImageSource(str(image["alias"]), image.get("server"), image.get("protocol")),
        profile=str(props["profile"]),
        cpu=int(props["cpu"]),
        memory=str(props["memory"]),
        labels={str(k): str(v) for k, v in props["labels"].items()},
        authorized_key=str(props["ssh_public_key"]),
        nameserver=props.get("nameserver"),
    )


#: One KnownHosts per file for this process: the engine creates and deletes nodes in parallel
#: threads, and each KnownHosts serialises the edits made through it.
_KNOWN_HOSTS: dict[Path, KnownHosts] = {}
_KNOWN_HOSTS_LOCK = threading.Lock()


def stack_known_hosts(props: Mapping[str, Any]) -> KnownHosts:
    """The known_hosts of the node's stack (its ``stack`` label), as the provisioning run
    names it for Ansible (kubesmith.program.provisioning.with_controller_paths)."""
    path = stack_dir(str(props["labels"][f"{LABEL_PREFIX}stack"])) / "known_hosts"
    with _KNOWN_HOSTS_LOCK:
        return _KNOWN_HOSTS.setdefault(path, KnownHosts(path))


class LxdNodeProvider(ResourceProvider):
    """Create, read, diff and delete one LXD node."""

    # Nothing secret in it: it holds no state, only code the engine imports from kubesmith.
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        node = node_from_props(props)
        client = connect()
        if get_instance(client, node.name) is not None:
            raise KubesmithError(
                f"LXD instance {node.name} exists already; delete it or import it into the stack"
            )
        try:
            create_node(client, node)
            address = wait_for_address(client, node.name, ADDRESS_TIMEOUT_S)
            # The address may have been another node's: that node's key is pinned for it.
            stack_known_hosts(props).forget([address])
        except BaseException:
            # Pulumi records nothing for a failed create: leave nothing behind either.
            with contextlib.suppress(Exception):
                delete_node(client, node.name)
            raise
        return CreateResult(node.name, {**props, "private_address": address})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        instance = get_instance(connect(), id_)
        if instance is None:
            return ReadResult(None, {})
        address = node_address(instance) or props.get("private_address")
        return ReadResult(id_, {**props, "private_address": address})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [key for key in REPLACE_ON if olds.get(key) != news.get(key)]
        return DiffResult(
            changes=bool(replaces), replaces=replaces, delete_before_replace=bool(replaces)
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        delete_node(connect(), id_)
        # The address goes back to LXD's DHCP for the next node (the replacement, often).
        address = props.get("private_address")
        if address:
            stack_known_hosts(props).forget([address])


class LxdNode(Resource, module="kubesmith", name="LxdNode"):
    """One node of an LXD node pool."""

    private_address: pulumi.Output[str]

    def __init__(
        self, name: str, node: NodeSpec, role: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            LxdNodeProvider(), name, {**node_props(node, role), "private_address": None}, opts
        )
