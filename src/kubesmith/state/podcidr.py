"""Per-node pod ranges carved from the cluster's podCidr, allocated once and kept.

The bridge CNI (the hard-way design) gives every node its own slice of podCidr and routes the
other nodes' slices to them. A slice must never move while its node lives: pods keep their
addresses and every other node holds a route to it. So slices are not a function of the
node's position in the inventory (adding a control plane would shift every worker): each node
gets the lowest free slice the first time it is seen, and the allocation is written to the
state directory and reused on every later run. A node that leaves the inventory frees its
slice; its route disappears from the other nodes on the next run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from kubesmith.errors import KubesmithError, UserError
from kubesmith.nodes import natural_key
from kubesmith.state.files import atomic_write

#: Every node gets a /24 (256 addresses, about 110 pods with kubelet's default maxPods).
NODE_PREFIX = 24
ALLOCATIONS_FILE = "pod-cidrs.yaml"


def _slices(pod_cidr: ipaddress.IPv4Network) -> list[ipaddress.IPv4Network]:
    if pod_cidr.prefixlen > NODE_PREFIX:
        raise UserError(
            f"kubesmith:cluster.podCidr: {pod_cidr} is smaller than one node's /{NODE_PREFIX}; "
            f"use a /{NODE_PREFIX} or larger network"
        )
    return list(pod_cidr.subnets(new_prefix=NODE_PREFIX))


def _read(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise KubesmithError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise KubesmithError(f"{path}: expected a mapping of node name to pod CIDR")
    return dict(data)


def check_room(pod_cidr: str, nodes: int) -> None:
    """Refuse a podCidr without a /24 for each of ``nodes`` (whoever hands the ranges out:
    kubesmith for the bridge CNI, the controller-manager for flannel)."""
    network = ipaddress.IPv4Network(pod_cidr)
    room = len(_slices(network))
    if nodes > room:
        raise UserError(
            f"kubesmith:cluster.podCidr: {network} has room for {room} nodes "
            f"(one /{NODE_PREFIX} each), the inventory has {nodes}"
        )


def allocate(pod_cidr: str, nodes: Sequence[str], state: Path) -> dict[str, ipaddress.IPv4Network]:
    """Node -> its pod range for every node in ``nodes``; kept in ``state``/pod-cidrs.yaml."""
    check_room(pod_cidr, len(nodes))
    network = ipaddress.IPv4Network(pod_cidr)
    path = state / ALLOCATIONS_FILE
    kept: dict[str, ipaddress.IPv4Network] = {}
    for node, text in _read(path).items():
        if node not in nodes:
            continue
        try:
            cidr = ipaddress.IPv4Network(text)
        except ValueError:
            raise KubesmithError(f"{path}: node {node!r}: {text!r} is not a CIDR") from None
        # A changed podCidr invalidates the old slices: they are carved again. A slice belongs
        # to one node only (the first that names it).
        if cidr.prefixlen == NODE_PREFIX and cidr.subnet_of(network) and cidr not in kept.values():
            kept[node] = cidr
    # check_room made sure there is a free slice for every node that has none yet. New nodes
    # take them in name order, not in the caller's: a preview (the spec's node plan) and the
    # run (the inventory, after Pulumi's serialisation) must agree on a new node's range.
    free = (s for s in _slices(network) if s not in kept.values())
    for node in sorted(nodes, key=natural_key):
        if node not in kept:
            kept[node] = next(free)
    allocation = {node: kept[node] for node in nodes}
    _write(path, {node: str(cidr) for node, cidr in allocation.items()})
    return allocation


def _write(path: Path, data: Mapping[str, str]) -> None:
    text = "# Pod range of every node (kubesmith podcidr); kept so ranges never move.\n"
    text += yaml.safe_dump(dict(data), sort_keys=False)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), 0o644)


def forget(state: Path, nodes: Sequence[str]) -> list[str]:
    """Free the pod ranges of ``nodes`` (removed for good); the nodes that held one."""
    path = state / ALLOCATIONS_FILE
    kept = _read(path)
    gone = [node for node in nodes if node in kept]
    if gone:
        _write(path, {node: cidr for node, cidr in kept.items() if node not in gone})
    return gone
