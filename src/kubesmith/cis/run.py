"""Judge every node of a target: the probe through Ansible (playbooks/cis.yml), one raw task
per node, and the evaluator on the controller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kubesmith.cis.benchmark import ROLES, Benchmark, Role, load
from kubesmith.cis.evaluate import Result, evaluate
from kubesmith.cis.probe import parse_output, request_for
from kubesmith.errors import KubesmithError
from kubesmith.provision.runner import (
    EventHandler,
    RunRequest,
    RunResult,
    TaskOutputs,
    run_playbook,
)
from kubesmith.provision.target import Target

PLAYBOOK = "cis.yml"
_TASK = "CIS | probe the node's files and units"


@dataclass(frozen=True)
class NodeReport:
    host: str
    role: Role
    results: list[Result]


def role_of(target: Target, host: str) -> Role:
    return "control_plane" if "kube_control_plane" in target.inventory.groups_of(host) else "worker"


def check_target(
    target: Target,
    on_event: EventHandler | None = None,
    run: Callable[[RunRequest, EventHandler | None], RunResult] = run_playbook,
) -> list[NodeReport]:
    """Every node of ``target`` judged on every item of its role, in inventory order."""
    benchmark: Benchmark = load()
    capture = TaskOutputs(_TASK, then=on_event)
    outputs = capture.stdout[_TASK]

    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=PLAYBOOK,
        extravars={"cis_probe_commands": {r: request_for(benchmark, r).command() for r in ROLES}},
    )
    result = run(request, capture)
    result.raise_for_failure("CIS probe")
    reports = []
    for host in target.inventory.hosts_in("k8s_cluster"):
        if host not in outputs:
            raise KubesmithError(f"CIS probe: no output from {host}")
        try:
            node = parse_output(outputs[host].strip())
        except (ValueError, KeyError, TypeError) as exc:
            raise KubesmithError(
                f"CIS probe: {host} sent something else than its files ({exc})"
            ) from exc
        role = role_of(target, host)
        reports.append(NodeReport(host, role, evaluate(benchmark, role, node)))
    return reports
