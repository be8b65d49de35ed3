"""A Kubernetes version change, rolled through the cluster in the order version skew allows.

When the spec's ``kubernetesVersion`` differs from the version the cluster was last
provisioned with (kubesmith.state.records), `kubesmith provision`, `kubesmith upgrade` and the
Pulumi Provisioning resource run these steps instead of one site.yml run, each step a
provisioning run of the same playbooks:

1. the node base (base.yml: prep, PKI, containerd, etcd) on every node. Nothing of it depends
   on the Kubernetes version, so nothing changes or restarts there (etcd keeps running)
   unless something else changed too;
2. each control plane alone (site.yml's api_proxy, control_plane, cni, kubelet and
   kube_proxy parts, limited to it: its apiserver restarts and answers before the role goes
   on, see the control_plane role's handlers), then a wait until its node is Ready, before
   the next;
3. the other nodes in batches of ``kubesmith:cluster.upgrade.maxUnavailable``: drain the
   batch, the same parts limited to it, wait until Ready, uncordon;
4. the pod network (node side and add-on) and CoreDNS.

Drain, waits and uncordon go through the API (playbooks/upgrade.yml on the first control
plane). When the API does not answer (no Kubernetes binaries, or a cluster that is down)
they are skipped, with a note saying so. A version change Kubernetes does not support (two
minors, or back) is refused before step 1. A marker in the state directory keeps an
interrupted upgrade an upgrade when it runs again, although its second step already recorded
the new version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kubesmith import versions
from kubesmith.errors import UserError
from kubesmith.provision.inventory import SPEC_VAR, dump_inventory
from kubesmith.provision.provisioner import BASE_TAGS, Options, Outcome
from kubesmith.provision.runner import RunRequest, TaskOutputs, run_playbook
from kubesmith.provision.target import Target
from kubesmith.provision.variables import binaries_enabled
from kubesmith.state import records
from kubesmith.state.files import atomic_write
from kubesmith.state.lock import cluster_lock

#: site.yml's parts of a node: what a Kubernetes version changes (binaries, units, configs),
#: and its pod network (unchanged by the version, but a node that joins with the upgrade
#: needs it before its kubelet can be Ready).
NODE_TAGS = ("api_proxy", "control_plane", "cni", "kubelet", "kube_proxy")
#: What follows the nodes: the pod network (node side and add-on) and CoreDNS.
ADDON_TAGS = ("cni", "coredns")
#: The API side of the upgrade (drain, ready, uncordon; probe first).
API_PLAYBOOK = "upgrade.yml"
PROBE_TASK = "Rolling upgrade | probe the API"

ApiAction = Literal["probe", "drain", "ready", "uncordon"]
#: Runs one provisioning step (kubesmith.provision.provisioner.provision with the caller's
#: progress display) and raises when it fails: the title says which step.
RunStep = Callable[[Options, str], Outcome]
Note = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What an upgrade does, in order (see the module doc)."""

    current: str
    target: str
    control_planes: tuple[str, ...]
    #: The other Kubernetes nodes, ``maxUnavailable`` at a time, in inventory order.
    batches: tuple[tuple[str, ...], ...]
    #: Control planes that also take workloads (kube_node): drained like workers.
    schedulable: frozenset[str] = frozenset()

    def lines(self) -> list[str]:
        lines = [
            f"Kubernetes {self.current} -> {self.target}:",
            "  1. node base on every node (prep, pki, runtime, etcd; the version changes "
            "nothing there, etcd is not restarted)",
        ]
        for host in self.control_planes:
            drain = "drain, " if host in self.schedulable else ""
            done = ", uncordon" if host in self.schedulable else ""
            lines.append(
                f"  {len(lines)}. control plane {host}: {drain}upgrade, wait until Ready{done}"
            )
        for batch in self.batches:
            lines.append(
                f"  {len(lines)}. {'node' if len(batch) == 1 else 'nodes'} {', '.join(batch)}: "
                "drain, upgrade, wait until Ready, uncordon"
            )
        lines.append(f"  {len(lines)}. pod network and CoreDNS")
        return lines


def pending(target: Target, wanted: str | None = None) -> Plan | None:
    """The upgrade to ``wanted`` (default: the spec's version), or None when the cluster was
    never provisioned or already runs it. Refuses a change Kubernetes does not support."""
    state = target.state_dir
    spec = target.inventory.cluster.spec
    wanted = wanted or spec.kubernetes_version
    recorded = records.recorded_version(state)
    interrupted = records.upgrade_in_progress(state)
    current = interrupted[0] if interrupted else recorded
    if current is None or (current == wanted and interrupted is None):
        return None
    records.check_version_change(current, wanted)
    if recorded is not None:
        records.check_version_change(recorded, wanted)
    inventory = target.inventory
    control_planes = tuple(inventory.hosts_in("kube_control_plane"))
    others = [h for h in inventory.hosts_in("k8s_cluster") if h not in control_planes]
    size = spec.upgrade.max_unavailable
    batches = tuple(tuple(others[i : i + size]) for i in range(0, len(others), size))
    workers = set(inventory.hosts_in("kube_node"))
    return Plan(current, wanted, control_planes, batches, frozenset(workers & {*control_planes}))


def check_target_version(version: str) -> None:
    """``--to VERSION``: only a version pinned in versions.yaml."""
    pinned = versions.kubernetes_versions()
    if version not in pinned:
        raise UserError(
            f"--to: Kubernetes {version} is not pinned in versions.yaml "
            f"(pinned: {', '.join(pinned)})"
        )


def write_version(inventory: Path, version: str) -> None:
    """Set the cluster's kubernetesVersion in an inventory file kubesmith wrote (a lab's)."""
    data = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    data["all"]["vars"][SPEC_VAR]["kubernetesVersion"] = version
    mode = inventory.stat().st_mode & 0o777
    atomic_write(inventory, dump_inventory(data).encode("utf-8"), mode)


def _api(target: Target, action: ApiAction, nodes: Sequence[str] = ()) -> str:
    """Run one action of playbooks/upgrade.yml; the probe's answer ("ok" when ready)."""
    outputs = TaskOutputs(PROBE_TASK)
    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=API_PLAYBOOK,
        extravars={"upgrade_action": action, "upgrade_nodes": list(nodes)},
    )
    result = run_playbook(request, outputs)
    what = f"upgrade: {action} {', '.join(nodes)}".strip()
    result.raise_for_failure(what)
    return "".join(outputs.stdout[PROBE_TASK].values()).strip()


def run(
    target: Target,
    plan: Plan,
    run_step: RunStep,
    note: Note,
    extravars: Mapping[str, Any] | None = None,
) -> list[Outcome]:
    """Carry out ``plan`` (see the module doc); ``extravars`` go to every provisioning step
    (e.g. kubesmith_kubernetes_binaries for one run). Stops at the first failing step. Holds
    the cluster's change lock throughout: nothing else changes the cluster between steps."""
    with cluster_lock(target.state_dir, f"upgrade {plan.current} -> {plan.target}"):
        return _run(target, plan, run_step, note, dict(extravars or {}))


def _run(
    target: Target, plan: Plan, run_step: RunStep, note: Note, extra: dict[str, Any]
) -> list[Outcome]:
    state = target.state_dir
    records.start_upgrade(state, plan.current, plan.target)
    outcomes = [run_step(Options(tags=BASE_TAGS, extravars=extra), "upgrade: node base")]
    answers = _api(target, "probe") == "ok"
    if not answers:
        why = (
            "no Kubernetes binaries (configuration only)"
            if not binaries_enabled(target.inventory, extra)
            else f"the API on {plan.control_planes[0]} does not answer"
        )
        note(f"upgrade: {why}: drain, readiness waits and uncordon are skipped")

    def api(action: ApiAction, nodes: Sequence[str]) -> None:
        if answers and nodes:
            _api(target, action, nodes)

    steps: list[tuple[tuple[str, ...], str]] = [
        ((host,), f"control plane {host}") for host in plan.control_planes
    ]
    steps += [(batch, f"nodes {', '.join(batch)}") for batch in plan.batches]
    for hosts, title in steps:
        drained = [h for h in hosts if h not in plan.control_planes or h in plan.schedulable]
        api("drain", drained)
        options = Options(tags=NODE_TAGS, limit=",".join(hosts), extravars=extra)
        outcomes.append(run_step(options, f"upgrade: {title}"))
        api("ready", hosts)
        api("uncordon", drained)
    addons = Options(tags=ADDON_TAGS, extravars=extra)
    outcomes.append(run_step(addons, "upgrade: pod network and CoreDNS"))
    records.finish_upgrade(state)
    return outcomes
