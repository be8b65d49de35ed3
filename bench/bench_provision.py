"""Provisioning speed on real LXD labs: prep, pki, runtime and etcd (`make bench`).

Cases, each on fresh nodes that already answer SSH (lab creation is not timed):
  cold N nodes   first run until every etcd member is healthy, N = 1, 3, 5 (all members)
  re-run 3 nodes the idempotent second run on the 3-node lab (must report no change)
  re-run 3 nodes (paramiko)  the same with Ansible's paramiko transport, for the transport choice
Targets (issue 4): cold 3 <= 30 s, re-run <= 10 s, cold 5 <= 1.3 x cold 3.

Each row also says where the CPU went: `node_cpu_s` is the CPU time the lab's containers used
during the run (their cgroups, read through LXD), `controller_cpu_s` that of Ansible on this
machine (the run's child processes), and `cpu_floor_s` their sum divided by this machine's
cores: no run can be faster than that on this machine, whose cores also run every node.

Needs the local stack's LXD setup (`make lxd`). Runs in a temporary KUBESMITH_HOME and
removes its labs afterwards.
"""

from __future__ import annotations

import os
import resource
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubesmith.local.connection import connect
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.target import for_inventory

TAGS = ("prep", "pki", "runtime", "etcd")
TARGETS = {"cold 3 nodes": 30.0, "re-run 3 nodes": 10.0}


@contextmanager
def _lab(nodes: int) -> Iterator[tuple[Path, list[str]]]:
    name = f"bench-prov-{nodes}-{secrets.token_hex(2)}"
    try:
        lab = create_lab(name, control_planes=nodes, workers=0)
        yield lab.inventory_path, [node.name for node in lab.nodes]
    finally:
        destroy_lab(name)


def _nodes_cpu_seconds(names: list[str]) -> float:
    client = connect()
    return sum(client.instances.get(name).state().cpu["usage"] for name in names) / 1e9


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Run:
    seconds: float
    changed: int
    node_cpu: float
    controller_cpu: float

    def fields(self) -> dict[str, object]:
        cores = os.cpu_count() or 1
        return {
            "seconds": round(self.seconds, 1),
            "changed": self.changed,
            "node_cpu_s": round(self.node_cpu, 1),
            "controller_cpu_s": round(self.controller_cpu, 1),
            "cpu_floor_s": round((self.node_cpu + self.controller_cpu) / cores, 1),
        }


def _timed_run(inventory: Path, nodes: list[str], env: dict[str, str] | None = None) -> Run:
    node_cpu, controller_cpu = _nodes_cpu_seconds(nodes), _children_cpu_seconds()
    started = time.monotonic()
    outcome = provision(for_inventory(inventory), Options(tags=TAGS, env=env or {}))
    seconds = time.monotonic() - started
    outcome.run.raise_for_failure("provisioning")
    return Run(
        seconds,
        sum(s.changed for s in outcome.run.stats.values()),
        _nodes_cpu_seconds(nodes) - node_cpu,
        _children_cpu_seconds() - controller_cpu,
    )


def _row(case: str, run: Run, **extra: object) -> dict[str, object]:
    seconds = run.seconds
    row: dict[str, object] = {"case": case, **run.fields()}
    if case in TARGETS:
        row["target"] = TARGETS[case]
        row["met"] = seconds <= TARGETS[case]
    row.update(extra)
    return row


def run() -> list[dict[str, object]]:
    previous = os.environ.get("KUBESMITH_HOME")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-provision-") as home:
        os.environ["KUBESMITH_HOME"] = home
        try:
            cold: dict[int, float] = {}
            for nodes in (3, 1, 5):
                with _lab(nodes) as (inventory, names):
                    first = _timed_run(inventory, names)
                    cold[nodes] = first.seconds
                    rows.append(_row(f"cold {nodes} node{'s' if nodes > 1 else ''}", first))
                    if nodes == 3:
                        again = _timed_run(inventory, names)
                        rows.append(_row("re-run 3 nodes", again, transport="ssh"))
                        slow = _timed_run(inventory, names, {"ANSIBLE_TRANSPORT": "paramiko"})
                        rows.append(_row("re-run 3 nodes (paramiko)", slow, transport="paramiko"))
            ratio = cold[5] / cold[3]
            rows.append(
                {
                    "case": "cold 5 nodes vs 3",
                    "seconds": round(cold[5], 1),
                    "ratio": round(ratio, 2),
                    "target": "ratio <= 1.3",
                    "met": ratio <= 1.3,
                }
            )
        finally:
            if previous is None:
                os.environ.pop("KUBESMITH_HOME", None)
            else:
                os.environ["KUBESMITH_HOME"] = previous
    return rows
