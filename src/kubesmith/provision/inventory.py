"""The Ansible inventory: built from the node shape and the spec, read back and checked.

The same builder serves the Pulumi stack output (`inventory`), the lab harness and the
provisioning glue, so a cluster provisioned from a lab and one from `pulumi up` see the same
groups and variables. Reading an inventory checks it before any host is contacted: problems
are one line naming the file and the group or host, and the cluster it carries is parsed back
into the typed spec (kubesmith.cluster.Cluster) with the spec's own error messages.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from kubesmith.cluster import API_PORT, LOCAL_PROXY_ADDRESS, Cluster, uses_local_api_proxy
from kubesmith.errors import ConfigError, UserError
from kubesmith.nodes import Node
from kubesmith.spec import ClusterSpec, parse_cluster
from kubesmith.state.pki import Address, NodeIdentity

#: The inventory variables that carry the cluster (see cluster_vars).
SPEC_VAR = "kubesmith_cluster"
ENDPOINT_VAR = "kubesmith_api_endpoint"
GROUPS = ("etcd", "kube_control_plane", "kube_node", "k8s_cluster")


def api_endpoint(spec: ClusterSpec, nodes: Sequence[Node], load_balancer: str | None = None) -> str:
    """The URL kubeconfigs use: the load balancer when HA, else the only control plane."""
    if load_balancer:
        return f"https://{load_balancer}:{API_PORT}"
    planes = [n for n in nodes if n.role == "control_plane"]
    if not planes:
        raise ValueError("no control-plane node in the node list")
    if uses_local_api_proxy(spec):
        return f"https://{LOCAL_PROXY_ADDRESS}:{API_PORT}"
    return f"https://{planes[0].private_address}:{API_PORT}"


def cluster_vars(spec: ClusterSpec, endpoint: str) -> dict[str, Any]:
    """The inventory's cluster variables: the spec itself (as `kubesmith:cluster` spells it,
    without the apps) and the API endpoint the machines decided. Nothing else is flattened
    into the inventory; kubesmith.provision.variables derives what the playbooks read."""
    return {
        SPEC_VAR: spec.model_dump(by_alias=True, mode="json", exclude={"apps"}, exclude_none=True),
        ENDPOINT_VAR: endpoint,
    }


def controller_vars(
    ssh_private_key_file: Path | None, known_hosts_file: Path | None
) -> dict[str, str]:
    """How this controller reaches the nodes: its SSH key and its pinned host keys (learnt on
    first contact, accept-new, and checked on every later one). Controller paths, so never
    part of an inventory kept in a Pulumi state."""
    found = {}
    if ssh_private_key_file is not None:
        found["ansible_ssh_private_key_file"] = str(ssh_private_key_file)
    if known_hosts_file is not None:
        found["ansible_ssh_common_args"] = (
            f"-o UserKnownHostsFile={known_hosts_file} -o StrictHostKeyChecking=accept-new"
        )
    return found


def build_inventory(
    spec: ClusterSpec,
    nodes: Sequence[Node],
    *,
    endpoint: str,
    ssh_private_key_file: Path | None = None,
    known_hosts_file: Path | None = None,
) -> dict[str, Any]:
    if len({n.name for n in nodes}) != len(nodes):
        raise ValueError("node names must be unique")
    planes = [n for n in nodes if n.role == "control_plane"]
    workers = [n for n in nodes if n.role == "worker"]
    # Without workers the control planes run pods too, as on a single-node lab.
    schedulable = workers or planes

    hosts: dict[str, dict[str, Any]] = {}
    for node in nodes:
        hostvars: dict[str, Any] = {
            "ansible_host": node.address,
            "ansible_user": node.ssh_user,
            "kubesmith_node_ip": node.private_address,
            "kubesmith_node_role": node.role,
        }
        if node.ssh_user != "root":
            hostvars["ansible_become"] = True
        hosts[node.name] = hostvars

    all_vars = cluster_vars(spec, endpoint)
    all_vars.update(controller_vars(ssh_private_key_file, known_hosts_file))

    # Empty mappings, never nulls: Pulumi drops None values when it serialises resource
    # inputs, which would empty every group on its way to the Provisioning resource.
    def group(members: Sequence[Node]) -> dict[str, Any]:
        return {"hosts": {n.name: {} for n in members}}

    return {
        "all": {
            "vars": all_vars,
            "hosts": hosts,
            "children": {
                "etcd": group(planes),
                "kube_control_plane": group(planes),
                "kube_node": group(schedulable),
                "k8s_cluster": {"children": {"kube_control_plane": {}, "kube_node": {}}},
            },
        }
    }


def dump_inventory(inventory: dict[str, Any]) -> str:
    return yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)


#: etcd needs a majority: a new cluster has 1, 3, 5 or 7 members (the spec's controlPlanes);
#: an even count is what removing a member leaves (`kubesmith node remove`): it works, and
#: tolerates no more failures than the odd count below it.
ETCD_MAX_MEMBERS = 7


@dataclass(frozen=True)
class Inventory:
    """A parsed inventory file (load_inventory)."""

    path: Path
    hostvars: Mapping[str, Mapping[str, Any]]
    groups: Mapping[str, frozenset[str]]
    all_vars: Mapping[str, Any]

    @cached_property
    def cluster(self) -> Cluster:
        """The cluster this inventory carries (its spec and API endpoint), typed."""
        where = f"{self.path}: all.vars.{SPEC_VAR}"
        raw = self.all_vars.get(SPEC_VAR)
        if not isinstance(raw, Mapping):
            raise UserError(
                f"{where} is missing: the inventory names no cluster "
                "(kubesmith writes it: kubesmith lab up, or kubesmith inventory -s STACK)"
            )
        try:
            spec = parse_cluster(raw)
        except ConfigError as exc:
            raise UserError(f"{where}: {'; '.join(exc.lines())}") from None
        endpoint = self.all_vars.get(ENDPOINT_VAR)
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            raise UserError(
                f"{self.path}: all.vars.{ENDPOINT_VAR} {endpoint!r} is not an https:// URL"
            )
        return Cluster(spec, endpoint)

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
    if len(etcd) > ETCD_MAX_MEMBERS:
        raise UserError(
            f"{where}: group 'etcd' has {len(etcd)} hosts; at most {ETCD_MAX_MEMBERS} "
            "(every write waits for a majority of them)"
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
    inventory.cluster  # noqa: B018 - parses and checks the cluster it carries
