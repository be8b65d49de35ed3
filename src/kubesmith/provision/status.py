"""`kubesmith status`: what a provisioned cluster looks like now, and what needs attention.

One raw command per node (playbooks/status.yml: no Python started on the nodes, unreachable
nodes reported, not fatal) prints the state of the units kubesmith manages, the versions of
the installed components and, on etcd members, the member's health and the member list. The
controller adds what it keeps: the soonest certificate expiry (kubesmith.state.certs) and the
last provisioning run (kubesmith.state.records). ``problems`` lists everything that needs
attention, one line each, naming the node.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kubesmith.cluster import Cluster
from kubesmith.provision.runner import RunRequest, TaskOutputs, run_playbook
from kubesmith.provision.target import Target
from kubesmith.state import records
from kubesmith.state.certs import Expiry, expiries

STATUS_PLAYBOOK = "status.yml"
PROBE_TASK = "Status | probe the node"
_ETCDCTL = "/usr/local/sbin/kubesmith-etcdctl"
#: Kubernetes binaries whose link tells which release a node runs (the release role's links).
_RELEASE_LINKS = {
    "kubelet": "/usr/local/bin/kubelet",
    "kube-apiserver": "/usr/local/bin/kube-apiserver",
}
#: Component -> a shell command printing its version (empty when not installed).
_VERSIONS = {
    "containerd": "containerd --version 2>/dev/null | awk '{print $3}'",
    "runc": "runc --version 2>/dev/null | awk 'NR==1{print $3}'",
    "etcd": "etcd --version 2>/dev/null | awk '/^etcd Version/{print $3}'",
}
_KUBERNETES_UNITS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)


def expected_units(cluster: Cluster, groups: frozenset[str], kubernetes: bool) -> list[str]:
    """The services a node of ``groups`` runs once provisioned (``kubernetes``: with the
    Kubernetes binaries; without them their units are written but not started)."""
    units = []
    if "etcd" in groups:
        units.append("etcd")
    if "k8s_cluster" in groups or groups & {"kube_control_plane", "kube_node"}:
        units.append("containerd")
        if cluster.uses_local_api_proxy and "kube_control_plane" not in groups:
            units.append("haproxy")
        if kubernetes:
            if "kube_control_plane" in groups:
                units += ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
            units += ["kubelet", "kube-proxy"]
    return units


def probe_command() -> str:
    """The node's report: ``unit NAME ACTIVE``, ``version NAME VALUE``, ``link NAME TARGET``,
    and on etcd members ``etcd-health JSON`` and ``etcd-members JSON``."""
    units = ("etcd", "containerd", "haproxy", *_KUBERNETES_UNITS)
    lines = [
        f"for u in {' '.join(units)}; do "
        'printf "unit %s %s\\n" "$u" "$(systemctl is-active "$u" 2>/dev/null || true)"; done'
    ]
    lines += [
        f'printf "version {name} %s\\n" "$({command})"' for name, command in _VERSIONS.items()
    ]
    lines += [
        f'printf "link {name} %s\\n" "$(readlink {shlex.quote(path)} 2>/dev/null)"'
        for name, path in _RELEASE_LINKS.items()
    ]
    etcd = {"etcd-health": "endpoint health", "etcd-members": "member list"}
    lines.append(
        f"if [ -x {_ETCDCTL} ]; then "
        + " ".join(
            f'printf "{key} %s\\n" "$({_ETCDCTL} {command} -w json 2>/dev/null | tr -d "\\n")";'
            for key, command in etcd.items()
        )
        + " fi"
    )
    return "; ".join(lines) + "; true"


@dataclass
class NodeStatus:
    name: str
    groups: list[str]
    reachable: bool
    error: str = ""
    units: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    kubernetes: str = ""
    etcd_healthy: bool | None = None
    etcd_members: list[str] = field(default_factory=list)


@dataclass
class ClusterStatus:
    cluster: str
    nodes: list[NodeStatus]
    kubernetes_binaries: bool
    certificate: dict[str, Any] | None
    last_run: dict[str, Any] | None
    problems: list[str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def _release_version(link: str) -> str:
    """The version directory of a release link (/opt/kubesmith/<name>/<version>/<name>)."""
    parts = link.strip("/").split("/")
    return parts[-2] if len(parts) >= 3 else ""


def parse_probe(node: NodeStatus, output: str) -> NodeStatus:
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        key, _, value = rest.partition(" ")
        if kind == "unit":
            node.units[key] = value.strip() or "unknown"
        elif kind == "version" and value.strip():
            node.versions[key] = value.strip()
        elif kind == "link" and value.strip():
            node.versions[key] = _release_version(value.strip())
        elif kind == "etcd-health":
            node.etcd_healthy = _etcd_health(rest)
        elif kind == "etcd-members":
            node.etcd_members = _etcd_members(rest)
    node.kubernetes = node.versions.get("kubelet", "")
    return node


def _etcd_health(text: str) -> bool:
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        return False
    entries = found if isinstance(found, list) else [found]
    return bool(entries) and all(isinstance(e, dict) and e.get("health") is True for e in entries)


def _etcd_members(text: str) -> list[str]:
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        return []
    members = found.get("members", []) if isinstance(found, dict) else []
    return sorted(str(m.get("name", "")) for m in members if isinstance(m, dict))


def problems_of(
    cluster: Cluster,
    nodes: Sequence[NodeStatus],
    kubernetes: bool,
    certificate: Expiry | None,
    last_run: Mapping[str, Any] | None,
    now: dt.datetime,
) -> list[str]:
    found = []
    etcd_hosts = sorted(n.name for n in nodes if "etcd" in n.groups)
    for node in nodes:
        if not node.reachable:
            found.append(f"{node.name}: unreachable: {node.error}")
            continue
        for unit in expected_units(cluster, frozenset(node.groups), kubernetes):
            state = node.units.get(unit, "unknown")
            if state != "active":
                found.append(f"{node.name}: {unit} is {state}")
        if "etcd" in node.groups:
            if node.etcd_healthy is not True:
                found.append(f"{node.name}: its etcd member does not answer healthy")
            elif node.etcd_members != etcd_hosts:
                found.append(
                    f"{node.name}: etcd members {', '.join(node.etcd_members) or 'none'} "
                    f"differ from the inventory's {', '.join(etcd_hosts)}"
                )
        if kubernetes and node.kubernetes and node.kubernetes != cluster.spec.kubernetes_version:
            found.append(
                f"{node.name}: runs Kubernetes {node.kubernetes}, the stack says "
                f"{cluster.spec.kubernetes_version}"
            )
    if certificate is None:
        found.append("no certificates on the controller: the cluster was never provisioned here")
    elif certificate.due(now):
        found.append(
            f"certificate {certificate.path} expires {certificate.not_after:%Y-%m-%d} "
            f"({certificate.days_left(now)} days): renew with kubesmith certs --renew "
            "(docs/runbooks/certificates.md)"
        )
    if last_run is None:
        found.append("no provisioning run recorded on this controller")
    elif not last_run.get("ok"):
        found.append(f"the last provisioning run failed: {last_run.get('failure', 'unknown')}")
    return found


def collect(target: Target, now: dt.datetime | None = None) -> ClusterStatus:
    """Probe every node (in parallel, through Ansible) and judge what it reports."""
    now = now or dt.datetime.now(dt.UTC)
    inventory = target.inventory
    cluster = inventory.cluster
    probes = TaskOutputs(PROBE_TASK)
    result = run_playbook(
        RunRequest(
            private_data_dir=target.runner_dir,
            inventory=inventory.path,
            playbook=STATUS_PLAYBOOK,
            extravars={"status_probe": probe_command()},
        ),
        probes,
    )
    outputs = probes.stdout[PROBE_TASK]
    failures = {f.host: f.message for f in result.failures}
    nodes = []
    for host in inventory.hostvars:
        groups = sorted(inventory.groups_of(host))
        if host in outputs:
            nodes.append(parse_probe(NodeStatus(host, groups, True), outputs[host]))
        else:
            reason = (failures.get(host) or result.error or "no answer").splitlines()[0]
            nodes.append(NodeStatus(host, groups, False, reason))
    last_run = records.last_run(target.state_dir)
    recorded = last_run.get("kubernetes_binaries") if last_run else None
    kubernetes = (
        recorded if isinstance(recorded, bool) else cluster.spec.artifacts.kubernetes_binaries
    )
    found = expiries(target.pki_dir) if target.pki_dir.is_dir() else []
    soonest = found[0] if found else None
    return ClusterStatus(
        cluster=cluster.spec.name,
        nodes=nodes,
        kubernetes_binaries=kubernetes,
        certificate=(
            {
                "path": str(soonest.path),
                "not_after": soonest.not_after.isoformat(),
                "days_left": soonest.days_left(now),
                "due": soonest.due(now),
            }
            if soonest
            else None
        ),
        last_run=dict(last_run) if last_run else None,
        problems=problems_of(cluster, nodes, kubernetes, soonest, last_run, now),
    )
