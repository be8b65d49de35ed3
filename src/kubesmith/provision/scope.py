"""Which other hosts a run limited to some hosts must also reach, and with which tags.

A play that runs on one host may read what other hosts are (site.yml passes their addresses
and group membership to its roles): the bridge CNI routes every node's pod range through that
node's address, the API proxy forwards to every control plane, the apiserver names every etcd
member, etcd lists its peers. When hosts are added, removed or re-addressed, those plays must
run again on the hosts that read them, or they keep a stale picture (a route to nowhere, a
missing backend). Everything else of those hosts stays untouched: their own inputs did not
change.

``FOLLOWERS`` is that table, read from the playbooks; ``follow_up`` turns a set of changed
hosts into the one extra run (hosts and tags) that keeps the others correct. The Pulumi
provisioning resource (kubesmith.program.provisioning), `kubesmith provision --limit` and
`kubesmith node remove` (kubesmith.provision.removal) use it.

Which hosts changed: the Pulumi resource knows from its state; `kubesmith provision` from
the record every successful run keeps beside the inventory (``RECORD_FILE``: each host's
variables and groups as it was last provisioned). A limited run of a host that is new or
differs from its record (or of any host, without a record) brings the follow-up run; a
limited run of an unchanged host stays limited.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubesmith.provision.inventory import Inventory
from kubesmith.state.files import atomic_write

#: A cluster's settings as `kubesmith:cluster` spells them (ClusterSpec.model_dump by alias):
#: a preview knows them while the typed spec's inventory is still unknown.
Settings = Mapping[str, Any]


@dataclass(frozen=True)
class Follower:
    """Play ``tags`` on the hosts of group ``runs_on`` reads the hosts of group ``reads``."""

    reads: str
    runs_on: str
    tags: tuple[str, ...]
    why: str
    #: Whether the cluster has this dependency at all.
    applies: Callable[[Settings], bool]
    #: Hosts of ``runs_on`` that are excluded (the play's own host pattern leaves them out).
    except_in: str | None = None


def _bridge_routes(settings: Settings) -> bool:
    # On AWS the VPC route table carries the ranges (site.yml: cni_host_routes).
    cni = settings.get("cni")
    plugin = cni.get("plugin", "bridge") if isinstance(cni, Mapping) else "bridge"
    return plugin == "bridge" and settings.get("backend") != "aws"


def _always(_settings: Settings) -> bool:
    return True


FOLLOWERS: tuple[Follower, ...] = (
    Follower(
        "k8s_cluster",
        "k8s_cluster",
        ("cni",),
        "pod routes to every node's range (bridge CNI)",
        _bridge_routes,
    ),
    Follower(
        "kube_control_plane",
        "k8s_cluster",
        ("api_proxy",),
        "API proxy backends",
        _always,
        except_in="kube_control_plane",
    ),
    Follower("etcd", "kube_control_plane", ("control_plane",), "apiserver's etcd list", _always),
    Follower("etcd", "etcd", ("etcd",), "etcd member list", _always),
)


@dataclass(frozen=True)
class FollowUp:
    """The extra run: ``tags`` on ``hosts`` (inventory order), and why."""

    hosts: tuple[str, ...]
    tags: tuple[str, ...]
    reasons: Mapping[str, tuple[str, ...]]


def follow_up(
    settings: Settings,
    groups: Mapping[str, Collection[str]],
    order: Collection[str],
    changed: Mapping[str, Collection[str]],
    *,
    skip: Collection[str] = (),
) -> FollowUp | None:
    """The run the hosts outside ``skip`` need because of ``changed``.

    ``groups``: group -> hosts of the inventory now; ``order``: its hosts in inventory order;
    ``changed``: each added, removed or re-addressed host -> the groups it was or is in (a
    removed host is no longer in ``groups``). ``skip``: hosts that get a full run anyway.
    None when nobody else reads the changed hosts.
    """
    tags: list[str] = []
    reasons: dict[str, list[str]] = {}
    for rule in FOLLOWERS:
        if not rule.applies(settings) or not any(rule.reads in g for g in changed.values()):
            continue
        excluded = set(groups.get(rule.except_in, ())) if rule.except_in else set()
        readers = set(groups.get(rule.runs_on, ())) - excluded - set(skip)
        if not readers:
            continue
        tags += [t for t in rule.tags if t not in tags]
        for host in readers:
            reasons.setdefault(host, []).append(rule.why)
    if not reasons:
        return None
    hosts = tuple(h for h in order if h in reasons)
    return FollowUp(hosts, tuple(tags), {h: tuple(reasons[h]) for h in hosts})


def matched_hosts(inventory: Path, pattern: str) -> list[str]:
    """The hosts an Ansible ``--limit`` pattern selects in ``inventory`` (Ansible's own
    pattern rules: names, groups, ``!``, ``&``, wildcards)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    return [host.name for host in manager.get_hosts(pattern=pattern)]


#: Each host's variables and groups as the last successful run on it saw them.
RECORD_FILE = "provisioned-hosts.json"


def host_entry(inventory: Inventory, host: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(json.dumps(dict(inventory.hostvars[host]), default=str))
    entry["groups"] = sorted(inventory.groups_of(host) - {"all"})
    return entry


def load_record(state_dir: Path) -> dict[str, Any] | None:
    """The record of the last runs; None when none was kept (a state from before it)."""
    path = state_dir / RECORD_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def record_run(state_dir: Path, inventory: Inventory, hosts: Collection[str]) -> None:
    """Note what ``hosts`` were provisioned with; hosts gone from the inventory are dropped."""
    kept = {h: e for h, e in (load_record(state_dir) or {}).items() if h in inventory.hostvars}
    kept.update({h: host_entry(inventory, h) for h in hosts if h in inventory.hostvars})
    data = json.dumps(kept, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(state_dir / RECORD_FILE, data, 0o600)


def forget_hosts(state_dir: Path, hosts: Collection[str]) -> list[str]:
    """Drop ``hosts`` (removed for good) from the record; the hosts it had."""
    record = load_record(state_dir)
    gone = [h for h in hosts if record is not None and h in record]
    if record is not None and gone:
        kept = {h: e for h, e in record.items() if h not in gone}
        data = json.dumps(kept, indent=1, sort_keys=True).encode("utf-8")
        atomic_write(state_dir / RECORD_FILE, data, 0o600)
    return gone


def changed_hosts(
    inventory: Inventory, record: Mapping[str, Any] | None, limited: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """Of ``limited``, the hosts new or different since their record, and the recorded hosts
    the inventory no longer has: host -> its groups. Without a record, every limited host."""
    current = {h: host_entry(inventory, h) for h in limited if h in inventory.hostvars}
    if record is None:
        return {h: tuple(e["groups"]) for h, e in current.items()}
    changed = {h: tuple(e["groups"]) for h, e in current.items() if record.get(h) != e}
    for host, entry in record.items():
        if host not in inventory.hostvars and isinstance(entry, Mapping):
            changed[host] = tuple(entry.get("groups") or ())
    return changed
