"""Node lifecycle on LXD: create from the node image with the stack's profile, inject the SSH
key, start, read eth0's address back, delete. The lab harness and the Pulumi dynamic provider
both use these functions, so a lab node and a stack node are the same machine.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pylxd
from pylxd.exceptions import LXDAPIException, NotFound

from kubesmith.errors import KubesmithError, UserError
from kubesmith.local.connection import is_managed
from kubesmith.local.host import profile_name
from kubesmith.spec import LxdSpec

ADDRESS_TIMEOUT_S = 120.0
_POLL_S = 0.25
#: Enough for a laptop-sized lab without starting dozens of containers at once.
MAX_PARALLEL = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageSource:
    """An image alias on this daemon, or on a remote image server (``lxd.remoteImage``)."""

    alias: str
    server: str | None = None
    protocol: str | None = None

    @property
    def local(self) -> bool:
        return self.server is None

    def to_lxd(self) -> dict[str, str]:
        source = {"type": "image", "alias": self.alias}
        if self.server is not None:
            source.update(
                mode="pull", server=self.server, protocol=self.protocol or "simplestreams"
            )
        return source


@dataclass(frozen=True)
class NodeSpec:
    """One node to create: every input that decides what the node is."""

    name: str
    image: ImageSource
    profile: str
    cpu: int
    memory: str
    #: Config keys from kubesmith.local.connection.labels(); mark the instance as ours.
    labels: Mapping[str, str]
    authorized_key: str
    #: The bridge's address: the node's resolver (LXD's dnsmasq). Only for kubesmith's image.
    nameserver: str | None = None


def lxc_remotes() -> dict[str, dict[str, str]]:
    """The image servers the lxc client knows (``lxc remote list``): name -> addr, protocol."""
    result = subprocess.run(
        ["lxc", "remote", "list", "--format", "json"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise KubesmithError(f"lxc remote list failed: {result.stderr.strip()}")
    data: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return {
        name: {"addr": str(info.get("Addr", "")), "protocol": str(info.get("Protocol", ""))}
        for name, info in data.items()
    }


def image_source(
    lxd: LxdSpec, remotes: Callable[[], dict[str, dict[str, str]]] = lxc_remotes
) -> ImageSource:
    """The image nodes start from: kubesmith's built image, or ``lxd.remoteImage``."""
    if not lxd.remote_image:
        return ImageSource(lxd.image)
    remote, _, alias = lxd.remote_image.partition(":")
    if not remote or not alias:
        raise UserError(
            "kubesmith:cluster.lxd.remoteImage: expected REMOTE:ALIAS such as "
            f"images:debian/12/cloud, got {lxd.remote_image!r}"
        )
    known = remotes()
    if remote not in known or not known[remote]["addr"].startswith("https://"):
        servers = ", ".join(n for n, r in known.items() if r["addr"].startswith("https://"))
        raise UserError(
            f"kubesmith:cluster.lxd.remoteImage: {remote!r} is not an image server of the lxc "
            f"client (known: {servers or 'none'}; add one with lxc remote add)"
        )
    return ImageSource(alias, known[remote]["addr"], known[remote]["protocol"] or None)


def stack_node(
    stack: str,
    lxd: LxdSpec,
    name: str,
    *,
    image: ImageSource,
    labels: Mapping[str, str],
    public_key: str,
) -> NodeSpec:
    """A node of ``stack``: its profile, limits and resolver, with the given labels and key."""
    return NodeSpec(
        name=name,
        image=image,
        profile=profile_name(stack),
        cpu=lxd.cpu,
        memory=lxd.memory,
        labels=labels,
        authorized_key=public_key,
        nameserver=str(lxd.subnet_network.network_address + 1),
    )


def instance_config(node: NodeSpec) -> dict[str, Any]:
    """The LXD create request for ``node``."""
    return {
        "name": node.name,
        "type": "container",
        "source": node.image.to_lxd(),
        "profiles": [node.profile],
        "config": {
            **node.labels,
            # Pinned on the instance, so editing the profile never resizes a node behind
            # the back of whoever created it (Pulumi replaces the node instead).
            "limits.cpu": str(node.cpu),
            "limits.memory": node.memory,
        },
    }


def node_files(node: NodeSpec) -> dict[str, tuple[str, int]]:
    """Files written into a node before its first boot: path -> (content, mode)."""
    files = {"/root/.ssh/authorized_keys": (node.authorized_key.strip() + "\n", 0o600)}
    if node.image.local and node.nameserver:
        # kubesmith's image has no resolver of its own (no systemd-resolved, whose stub
        # address would make CoreDNS forward to itself); LXD's dnsmasq on the bridge answers.
        files["/etc/resolv.conf"] = (f"nameserver {node.nameserver}\n", 0o644)
        files["/etc/hosts"] = (
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{node.name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n",
            0o644,
        )
    return files


def _api_error(node: str, action: str, exc: LXDAPIException) -> KubesmithError:
    return KubesmithError(f"node {node}: {action} failed: {exc}")


def create_node(client: pylxd.Client, node: NodeSpec) -> None:
    """Create ``node`` stopped, write its files, then start it."""
    try:
        instance = client.instances.create(instance_config(node), wait=True)
    except LXDAPIException as exc:
        raise _api_error(node.name, "create", exc) from None
    try:
        with contextlib.suppress(LXDAPIException):  # images that ship /root/.ssh already
            instance.files.mk_dir("/root/.ssh", mode=0o700)
        for path, (content, mode) in node_files(node).items():
            instance.files.put(path, content, mode=mode)
        instance.start(wait=True)
    except LXDAPIException as exc:
        raise _api_error(node.name, "start", exc) from None


def node_address(instance: pylxd.models.Instance) -> str | None:
    """eth0's global IPv4 address, None until DHCP has given one."""
    network = instance.state().network or {}
    for address in network.get("eth0", {}).get("addresses", []):
        if address.get("family") == "inet" and address.get("scope") == "global":
            return str(address["address"])
    return None


def wait_for_address(client: pylxd.Client, name: str, timeout: float = ADDRESS_TIMEOUT_S) -> str:
    instance = client.instances.get(name)
    deadline = time.monotonic() + timeout
    while True:
        address = node_address(instance)
        if address:
            return address
        if time.monotonic() >= deadline:
            raise KubesmithError(
                f"node {name}: no IPv4 address on eth0 after {timeout:g} s "
                "(is DHCP served on its network?)"
            )
        time.sleep(_POLL_S)


def get_instance(client: pylxd.Client, name: str) -> pylxd.models.Instance | None:
    try:
        return client.instances.get(name)
    except NotFound:
        return None


def labels_match(instance: pylxd.models.Instance, wanted: Mapping[str, str]) -> bool:
    config = instance.config
    return is_managed(config) and all(config.get(k) == v for k, v in wanted.items())


def ensure_node(
    client: pylxd.Client,
    node: NodeSpec,
    timeout: float = ADDRESS_TIMEOUT_S,
    report: Callable[[str], None] = lambda _: None,
) -> str:
    """Create and start ``node``, or reuse the instance of that name if it is this node.

    ``report`` hears each step (creating, started, address) as it happens.
    """
    instance = get_instance(client, node.name)
    if instance is None:
        report("creating")
        create_node(client, node)
        report("started")
    elif not labels_match(instance, node.labels):
        owner = "another kubesmith stack or lab" if is_managed(instance.config) else "not kubesmith"
        raise UserError(f"LXD instance {node.name} exists and belongs to {owner}; not touching it")
    elif instance.status != "Running":
        report(f"exists ({instance.status.lower()}); starting")
        instance.start(wait=True)
        report("started")
    else:
        report("exists, running")
    address = wait_for_address(client, node.name, timeout)
    report(f"address {address}")
    return address


def delete_node(client: pylxd.Client, name: str) -> bool:
    """Stop and delete kubesmith's instance ``name``; False when there is none."""
    instance = get_instance(client, name)
    if instance is None:
        return False
    if not is_managed(instance.config):
        raise UserError(f"LXD instance {name} was not created by kubesmith; not deleting it")
    try:
        if instance.status != "Stopped":
            instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    except NotFound:
        return False
    return True


def managed_instances(client: pylxd.Client, **wanted: str) -> list[pylxd.models.Instance]:
    """kubesmith's instances whose ``user.kubesmith.<key>`` labels equal ``wanted``."""
    keys = {f"user.kubesmith.{k}": v for k, v in wanted.items()}
    return [i for i in client.instances.all(recursion=1) if labels_match(i, keys)]


def in_parallel(items: Sequence[T], work: Callable[[T], R]) -> list[R]:
    """``work(item)`` for every item at once (LXD clients are per thread: see `connect`).

    Every item runs to the end and the errors are reported together, one per item, so one
    failing node never hides another.
    """
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
    errors = [error for f in futures if (error := f.exception()) is not None]
    unexpected = [e for e in errors if not isinstance(e, KubesmithError)]
    if unexpected:
        raise unexpected[0]
    if errors:
        raise KubesmithError("; ".join(e.message for e in errors if isinstance(e, KubesmithError)))
    return [f.result() for f in futures]
