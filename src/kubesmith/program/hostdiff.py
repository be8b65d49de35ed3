"""Which hosts a provisioning update runs on, and why: the Provisioning resource's per-host diff.

The resource's inputs carry, besides the whole inventory and its trigger digest, two maps the
diff reads (and that `pulumi preview --diff` shows property by property, one key per host):

- ``hosts``: host name -> what provisioning reads of that host alone: its address, node IP,
  SSH user, role and groups (``host_inputs``; not its pod range, which provisioning itself
  allocates and keeps: a new node gets a free one, the others keep theirs);
- ``cluster``: setting -> what every host reads: each `kubesmith:cluster` setting but the node
  counts (those show as hosts coming and going), the API endpoint, and digests of
  versions.yaml and of the playbooks (``cluster_inputs``).

``plan`` compares the last outputs with the new inputs and says, host by host, what runs:

- a changed cluster-wide setting: every host, reason naming the settings;
- a new, removed or changed control plane or etcd member: every host (certificates, the etcd
  cluster and the API endpoint hang on them; a full run is the safe answer);
- otherwise each new or changed host gets a full run limited to it, and the hosts that read
  it (kubesmith.provision.scope: the bridge CNI's pod routes) run those plays alone.

A state written before these inputs existed has no ``hosts`` in its outputs: it diffs by the
trigger as before (never a replacement), and its next run is a full one.

During a preview the nodes' addresses are unknown while any node is still to be created (the
inventory is built from all of them), so a preview names new and removed hosts and changed
settings; a host whose own address changed is named by the update's diff.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.runtime.rpc import UNKNOWN

from kubesmith.nodes import natural_key
from kubesmith.provision.scope import FollowUp, follow_up
from kubesmith.resources import package_file, playbooks_dir
from kubesmith.spec import ClusterSpec

HOSTS_KEY = "hosts"
CLUSTER_KEY = "cluster"
TRIGGER_KEY = "trigger"
#: Settings that only decide which hosts exist: their change shows as hosts added or removed.
COUNT_SETTINGS = ("controlPlanes", "workers")
#: Host variables under the names a diff shows.
HOST_FIELDS = {
    "ansible_host": "address",
    "kubesmith_node_ip": "nodeIp",
    "ansible_user": "user",
    "kubesmith_node_role": "role",
}
#: Groups whose members every other host depends on beyond what kubesmith.provision.scope
#: tracks (certificates, the etcd cluster, the API endpoint): a change there runs everything.
CORE_GROUPS = ("kube_control_plane", "etcd")

NEW_NODE = "new node"


def _group_members(inventory: Mapping[str, Any]) -> dict[str, set[str]]:
    """Group -> its hosts, children included, from an inventory in kubesmith's YAML shape."""
    members: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}

    def collect(name: str, node: Any) -> None:
        node = node or {}
        members.setdefault(name, set()).update(node.get("hosts") or {})
        for child, child_node in (node.get("children") or {}).items():
            children.setdefault(name, set()).add(child)
            collect(child, child_node)

    collect("all", inventory.get("all"))

    def expand(name: str, seen: frozenset[str]) -> set[str]:
        found = set(members.get(name, set()))
        for child in children.get(name, set()) - seen:
            found |= expand(child, seen | {name})
        return found

    return {name: expand(name, frozenset()) for name in members if name != "all"}


def host_inputs(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """Host name -> what provisioning reads of that host alone (see the module doc)."""
    groups = _group_members(inventory)
    hosts = (inventory.get("all") or {}).get("hosts") or {}
    found: dict[str, Any] = {}
    for host, variables in hosts.items():
        entry = {HOST_FIELDS.get(key, key): value for key, value in (variables or {}).items()}
        entry["groups"] = sorted(g for g, names in groups.items() if host in names)
        found[host] = entry
    return found


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


def known_settings(
    spec: ClusterSpec, *, playbooks: Path | None = None, versions_file: Path | None = None
) -> dict[str, Any]:
    """The cluster-wide settings known before any node exists (a preview knows them)."""
    settings = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    for key in COUNT_SETTINGS:
        settings.pop(key, None)
    versions = (versions_file or package_file("versions.yaml")).read_bytes()
    if "apps" in settings:
        # Apps are deployed by the program, not provisioned; a digest keeps their values
        # (which may name secrets) out of the state while still showing that they changed.
        apps = json.dumps(settings["apps"], sort_keys=True).encode()
        settings["apps"] = hashlib.sha256(apps).hexdigest()[:16]
    settings["versions"] = hashlib.sha256(versions).hexdigest()[:16]
    settings["playbooks"] = tree_digest(playbooks or playbooks_dir())
    return settings


#: The key of the digest over every cluster-wide input (see ``cluster_inputs``).
DIGEST_KEY = "clusterInputs"


def cluster_inputs(spec: ClusterSpec, api_endpoint: Any, digest: Any) -> dict[str, Any]:
    """Setting -> value of everything every host reads (see the module doc). ``api_endpoint``
    and ``digest`` may be pulumi Outputs (the nodes decide the endpoint). ``digest`` covers
    whatever the provisioning trigger covers but the hosts (kubesmith.program.provisioning
    .cluster_digest), so a cluster-wide input the named settings miss still counts."""
    return {**known_settings(spec), "apiEndpoint": api_endpoint, DIGEST_KEY: digest}


def hostless(
    inventory: Mapping[str, Any], counts: Sequence[str] = COUNT_SETTINGS
) -> dict[str, Any]:
    """``inventory``'s cluster-wide part: its all.vars, without the node counts."""
    variables = dict((inventory.get("all") or {}).get("vars") or {})
    for key, value in variables.items():
        if isinstance(value, Mapping) and any(count in value for count in counts):
            variables[key] = {k: v for k, v in value.items() if k not in counts}
    return {"all": {"vars": variables}}


def _plain(value: Any) -> Any:
    """``value`` with integral floats made ints (Pulumi carries numbers as doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _unknown(value: Any) -> bool:
    return isinstance(value, str) and value == UNKNOWN


def _has_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_unknown(item) for item in value.values())
    return _unknown(value)


def _differs(old: Any, new: Any) -> bool:
    """Whether a value changed; an unknown new value (a preview) is not a known change."""
    return not _unknown(new) and _plain(old) != _plain(new)


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in {*new, *old} if _differs(old.get(key), new.get(key)))


@dataclass(frozen=True)
class Plan:
    """What a provisioning update runs: host -> why, in the new inventory's order."""

    reasons: dict[str, str] = field(default_factory=dict)
    #: Hosts of the last run the new inputs no longer have.
    removed: tuple[str, ...] = ()
    #: One run of everything on every host (else: ``hosts`` fully, then ``follow``).
    full: bool = False
    hosts: tuple[str, ...] = ()
    follow: FollowUp | None = None

    @property
    def changes(self) -> bool:
        return self.full or bool(self.reasons or self.removed)

    def lines(self) -> list[str]:
        """One line per host: what provisioning will do there and why."""
        lines = [f"{host}: {reason}" for host, reason in self.reasons.items()]
        lines += [f"{host}: removed (no longer provisioned)" for host in self.removed]
        return lines


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _groups_of(entry: Any) -> list[str]:
    groups = _mapping(entry).get("groups")
    return [str(g) for g in groups] if isinstance(groups, list) else []


def _everyone(
    hosts: Sequence[str], reason: str, own: Mapping[str, str], removed: tuple[str, ...] = ()
) -> Plan:
    reasons = {host: own.get(host, reason) for host in hosts}
    return Plan(reasons=reasons, removed=removed, full=True, hosts=tuple(hosts))


def plan(olds: Mapping[str, Any], news: Mapping[str, Any]) -> Plan:
    """The hosts an update of the Provisioning resource runs on (``olds``: its last outputs)."""
    new_hosts = _mapping(news.get(HOSTS_KEY))
    # Pulumi keeps no order in a map: name order, numbers as numbers (worker-10 after -9).
    order = sorted(new_hosts, key=natural_key)
    old_hosts = olds.get(HOSTS_KEY)
    trigger_unknown = _unknown(news.get(TRIGGER_KEY))
    trigger_moved = _differs(olds.get(TRIGGER_KEY), news.get(TRIGGER_KEY))
    if not isinstance(old_hosts, Mapping):
        # A state from before the per-host inputs: the trigger decides, as it did.
        if trigger_moved or trigger_unknown or "pod_cidrs" not in olds:
            return _everyone(order, "first run since per-host diffs (state has no hosts)", {})
        return Plan()
    own: dict[str, str] = {}
    touched: dict[str, list[str]] = {}
    for host, entry in new_hosts.items():
        if host not in old_hosts:
            own[host] = NEW_NODE
            touched[host] = _groups_of(entry)
        elif not _unknown(entry):
            keys = changed_keys(_mapping(old_hosts[host]), _mapping(entry))
            if keys:
                own[host] = f"its inputs changed: {', '.join(keys)}"
                touched[host] = sorted({*_groups_of(entry), *_groups_of(old_hosts[host])})
    removed = tuple(sorted((h for h in old_hosts if h not in new_hosts), key=natural_key))
    for host in removed:
        touched[host] = _groups_of(old_hosts[host])
    changed = changed_keys(_mapping(olds.get(CLUSTER_KEY)), _mapping(news.get(CLUSTER_KEY)))
    if len(changed) > 1 and DIGEST_KEY in changed:
        changed.remove(DIGEST_KEY)  # the named settings say it better
    if changed:
        return _everyone(order, f"cluster-wide change: {', '.join(changed)}", own, removed)
    core = sorted(h for h, groups in touched.items() if set(groups) & set(CORE_GROUPS))
    if core:
        why = f"cluster-wide change: control plane or etcd member {', '.join(core)}"
        return _everyone(order, why, own, removed)
    if "pod_cidrs" not in olds or (trigger_moved and not touched):
        return _everyone(order, "cluster-wide change: provisioning inputs", own, removed)
    if not touched:
        if trigger_unknown:
            # A preview in which a node is replaced: its new address is not known yet.
            unsure = [h for h in order if _has_unknown(new_hosts[h])]
            why = "its inputs are not known until its node exists (its address may change)"
            return Plan(reasons=dict.fromkeys(unsure, why), hosts=tuple(unsure))
        return Plan()
    groups = {g: [h for h in order if g in _groups_of(new_hosts[h])] for g in _all_groups(news)}
    touched_groups = {h: tuple(g) for h, g in touched.items()}
    settings = _mapping(news.get(CLUSTER_KEY))
    follow = follow_up(settings, groups, order, touched_groups, skip=list(own))
    reasons = dict(own)
    if follow is not None:
        for host in follow.hosts:
            reasons[host] = f"only {', '.join(follow.tags)}: {'; '.join(follow.reasons[host])}"
    ordered = {host: reasons[host] for host in order if host in reasons}
    return Plan(reasons=ordered, removed=removed, hosts=tuple(own), follow=follow)


def _all_groups(news: Mapping[str, Any]) -> set[str]:
    return {g for entry in _mapping(news.get(HOSTS_KEY)).values() for g in _groups_of(entry)}
