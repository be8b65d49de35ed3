"""`kubesmith reset`: playbooks/reset.yml on a cluster's nodes, and what each node reported.

The reset role's script prints one line per thing it undoes ("reset: ...") and per thing it
keeps ("kept: ...", etcd's data without ``include_etcd_data``); this module runs the playbook
and returns those lines by host. Controller-side state (PKI, SSH key and host keys, pod
ranges, run records) is not touched: a reset node provisioned again gets the same
certificates and pod range. Forgetting a node for good is node removal's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubesmith.errors import UserError
from kubesmith.provision.runner import (
    EventHandler,
    RunRequest,
    RunResult,
    TaskOutputs,
    run_playbook,
)
from kubesmith.provision.target import Target
from kubesmith.state.lock import cluster_lock

RESET_PLAYBOOK = "reset.yml"
#: The reset role's tasks whose output lists what a node had (probe) and what was done.
PLAN_TASK = "Reset | find what kubesmith left on the node"
APPLY_TASK = "Reset | stop, disable and remove it"
#: The playbook's hosts: every node of the cluster.
GROUPS = ("k8s_cluster", "etcd")
_PATTERN_CHARACTERS = frozenset("*?[]:!&~")


@dataclass
class NodeReset:
    """One node: what was reset (the apply step's lines) and what was kept."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


@dataclass
class ResetOutcome:
    run: RunResult
    nodes: dict[str, NodeReset]


def reset_hosts(target: Target, limit: str | None) -> list[str]:
    """The inventory's hosts a reset with ``limit`` reaches; names that are neither a host nor
    a group of the inventory are an error (Ansible patterns are passed through as they are)."""
    inventory = target.inventory
    hosts = [h for h in inventory.hostvars if inventory.groups_of(h) & set(GROUPS)]
    if limit is None:
        return hosts
    chosen: list[str] = []
    for item in (part.strip() for part in limit.split(",")):
        if not item:
            continue
        if set(item) & _PATTERN_CHARACTERS:
            return hosts  # an Ansible pattern: Ansible decides which hosts it matches
        if item in hosts:
            chosen.append(item)
        elif any(item in inventory.groups_of(h) for h in hosts):
            chosen += [h for h in hosts if item in inventory.groups_of(h)]
        else:
            raise UserError(f"--limit: {item!r} is no host or group of {target.label}")
    return list(dict.fromkeys(chosen))


def _tagged(lines: list[str], tag: str) -> list[str]:
    return [line.removeprefix(tag) for line in lines if line.startswith(tag)]


def reset(
    target: Target,
    *,
    limit: str | None = None,
    include_etcd_data: bool = False,
    on_event: EventHandler | None = None,
) -> ResetOutcome:
    """Run the reset playbook; each host's lines (what was undone, what was kept)."""
    collect = TaskOutputs(PLAN_TASK, APPLY_TASK, then=on_event)
    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=RESET_PLAYBOOK,
        extravars={"reset_include_etcd_data": include_etcd_data},
        limit=limit,
    )
    with cluster_lock(target.state_dir, "reset"):
        result = run_playbook(request, collect)
    # The plan's lines say what a node has; the apply's (where it ran) what was undone.
    nodes: dict[str, NodeReset] = {}
    for task in (PLAN_TASK, APPLY_TASK):
        for host, stdout in collect.stdout[task].items():
            lines = stdout.splitlines()
            node = nodes.setdefault(host, NodeReset())
            node.kept = _tagged(lines, "kept: ")
            if task == APPLY_TASK:
                node.done = _tagged(lines, "reset: ")
    return ResetOutcome(result, nodes)
