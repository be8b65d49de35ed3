"""Read an Ansible YAML inventory and check it before any host is contacted.

Problems are reported as one line naming the file and the group or host, so a missing group
or a malformed host fails here instead of as a puzzling task error halfway through a run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubesmith.errors import UserError
from kubesmith.provision.inventory import GROUPS
from kubesmith.state.pki import Address, NodeIdentity

#: etcd needs a majority: 1, 3 or 5 members (7 works but slows every write).
ETCD_SIZES = (1, 3, 5, 7)


@dataclass(frozen=True)
class Inventory:
    path: Path
    hostvars: Mapping[str, Mapping[str, Any]]
    groups: Mapping[str, frozenset[str]]
    all_vars: Mapping[str, Any]

    def groups_of(self, host: str) -> frozenset[str]:
        return frozenset(g for g, members in self.groups.items() if host in members)

    def hosts_in(self, group: str) -> list[str]:
        """Members of ``group`` in inventory order."""
        return [h for h in self.hostvars if h in self.groups.get(group, frozenset())]

    def identities(self) -> list[NodeIdentity]:
        """What each node's certificates must name: its name, node IP and SSH address."""
        identities = []
        for host, hostvars in self.hostvars.items():
            addresses: list[Address] = []
            dns_names: list[str] = []
            candidates = (hostvars.get("kubesmith_node_ip"), hostvars.get("ansible_host"))
            for value in dict.fromkeys(str(v) for v in candidates if v):
                try:
                    addresses.append(ipaddress.ip_address(value))
                except ValueError:
                    dns_names.append(value)
            identities.append(
                NodeIdentity(host, self.groups_of(host), tuple(addresses), tuple(dns_names))
            )
        return identities


@dataclass
class _GroupDef:
    hosts: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)


def _collect(
    name: str,
    node: Any,
    where: str,
    hostvars: dict[str, dict[str, Any]],
    defs: dict[str, _GroupDef],
) -> None:
    """Record a group's own hosts and child names; a child may be defined anywhere."""
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise UserError(f"{where}: group {name!r} must be a mapping, got {type(node).__name__}")
    group = defs.setdefault(name, _GroupDef())
    for host, host_data in (node.get("hosts") or {}).items():
        if host_data is not None and not isinstance(host_data, Mapping):
            raise UserError(f"{where}: host {host!r} in group {name!r} must map to variables")
        hostvars.setdefault(str(host), {}).update(host_data or {})
        group.hosts.add(str(host))
    for child, child_node in (node.get("children") or {}).items():
        group.children.add(str(child))
        _collect(str(child), child_node, where, hostvars, defs)


def _members(
    name: str, defs: Mapping[str, _GroupDef], seen: frozenset[str] = frozenset()
) -> set[str]:
    group = defs.get(name, _GroupDef())
    members = set(group.hosts)
    for child in group.children - seen - {name}:
        members |= _members(child, defs, seen | {name})
    return members


def load_inventory(path: Path) -> Inventory:
    """Parse ``path`` (the YAML inventory kubesmith writes, or any in that shape)."""
    where = str(path)
    # Absolute: ansible-runner works from the playbooks directory, not the caller's.
    path = path.resolve()
    if not path.is_file():
        raise UserError(f"{where}: no such inventory file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{where}{at}: not a YAML inventory ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(data, Mapping) or not data:
        raise UserError(f"{where}: expected a YAML inventory with an 'all:' group")
    hostvars: dict[str, dict[str, Any]] = {}
    defs: dict[str, _GroupDef] = {}
    for name, node in data.items():
        _collect(str(name), node, where, hostvars, defs)
    all_node = data.get("all") or {}
    all_vars = dict(all_node.get("vars") or {}) if isinstance(all_node, Mapping) else {}
    inventory = Inventory(
        path=path,
        hostvars=hostvars,
        groups={g: frozenset(_members(g, defs)) for g in defs},
        all_vars=all_vars,
    )
    check_inventory(inventory)
    return inventory


def check_inventory(inventory: Inventory) -> None:
    where = str(inventory.path)
    for group in GROUPS:
        if group not in inventory.groups:
            raise UserError(
                f"{where}: missing group {group!r} (kubesmith needs {', '.join(GROUPS)})"
            )
        if not inventory.groups[group]:
            raise UserError(f"{where}: group {group!r} has no hosts")
    etcd = inventory.hosts_in("etcd")
    if len(etcd) not in ETCD_SIZES:
        raise UserError(
            f"{where}: group 'etcd' has {len(etcd)} hosts; etcd needs an odd count "
            f"({', '.join(map(str, ETCD_SIZES))}) to keep a majority"
        )
    for host, hostvars in inventory.hostvars.items():
        if not hostvars.get("ansible_host"):
            raise UserError(f"{where}: host {host!r} has no ansible_host")
        node_ip = hostvars.get("kubesmith_node_ip")
        if host in etcd and not node_ip:
            raise UserError(f"{where}: host {host!r} has no kubesmith_node_ip (etcd listens on it)")
        if node_ip:
            try:
                ipaddress.ip_address(str(node_ip))
            except ValueError:
                raise UserError(
                    f"{where}: host {host!r}: kubesmith_node_ip {node_ip!r} is not an IP address"
                ) from None
    if not inventory.all_vars.get("kubesmith_cluster_name"):
        raise UserError(f"{where}: all.vars has no kubesmith_cluster_name")
