"""The whole cluster on real LXD labs: every role of site.yml, cold and re-run (`make bench`).

Cases, each on fresh nodes that already answer SSH (lab creation is not timed), with
`kubesmith_kubernetes_binaries: false` (these machines cannot download the Kubernetes server
binaries; every file, unit, certificate, route and add-on manifest is still written):
  cold 1+2      first `site.yml` run on 1 control plane + 2 workers
  re-run 1+2    the idempotent second run (must report no change)
  cold 3+2      the same on 3 control planes + 2 workers (etcd of three, local HA API proxy)
  re-run 3+2
Targets (the speed issue): cold 1+2 <= 25 s, re-run 1+2 <= 4 s, cold 3+2 <= 1.5 x cold 1+2.

Each row carries the CPU the nodes and Ansible used and the floor that sets on this machine
(as in bench_provision), and `roles`: seconds per role, the sum of its tasks' wall times
(first start to last end across hosts), from the runner's events.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_provision import Run, _children_cpu_seconds, _nodes_cpu_seconds
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.target import for_inventory

SHAPES = ((1, 2), (3, 2))
OFF = {"kubesmith_kubernetes_binaries": False}
TARGETS = {"cold 1+2": 25.0, "re-run 1+2": 4.0}
_TASK_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


@contextmanager
def _lab(planes: int, workers: int) -> Iterator[tuple[Path, list[str]]]:
    name = f"bench-cl-{planes}{workers}-{secrets.token_hex(2)}"
    try:
        lab = create_lab(name, control_planes=planes, workers=workers)
        yield lab.inventory_path, [node.name for node in lab.nodes]
    finally:
        destroy_lab(name)


class RoleClock:
    """Seconds per role: each task's first start to its last end over every host, summed."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[str, dt.datetime, dt.datetime]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") not in _TASK_EVENTS:
            return
        data = event.get("event_data") or {}
        start, end = data.get("start"), data.get("end")
        if not (start and end):
            return
        began, ended = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
        role = str(data.get("role") or "(play)")
        uuid = str(data.get("task_uuid"))
        if uuid in self.tasks:
            _, first, last = self.tasks[uuid]
            began, ended = min(first, began), max(last, ended)
        self.tasks[uuid] = (role, began, ended)

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for role, began, ended in self.tasks.values():
            totals[role] = totals.get(role, 0.0) + (ended - began).total_seconds()
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _timed_site_run(inventory: Path, nodes: list[str]) -> tuple[Run, dict[str, float]]:
    clock = RoleClock()
    node_cpu, controller_cpu = _nodes_cpu_seconds(nodes), _children_cpu_seconds()
    started = time.monotonic()
    outcome = provision(for_inventory(inventory), Options(extravars=OFF), clock)
    seconds = time.monotonic() - started
    outcome.run.raise_for_failure("provisioning")
    run = Run(
        seconds,
        sum(s.changed for s in outcome.run.stats.values()),
        _nodes_cpu_seconds(nodes) - node_cpu,
        _children_cpu_seconds() - controller_cpu,
    )
    return run, clock.by_role()


def _row(case: str, run: Run, roles: dict[str, float]) -> dict[str, object]:
    row: dict[str, object] = {"case": case, **run.fields()}
    if case in TARGETS:
        row["target"] = TARGETS[case]
        row["met"] = run.seconds <= TARGETS[case]
    row["roles"] = ", ".join(f"{name} {seconds:.1f}" for name, seconds in roles.items())
    return row


def run() -> list[dict[str, object]]:
    previous = os.environ.get("KUBESMITH_HOME")
    rows: list[dict[str, object]] = []
    cold: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as home:
        os.environ["KUBESMITH_HOME"] = home
        try:
            for planes, workers in SHAPES:
                shape = f"{planes}+{workers}"
                with _lab(planes, workers) as (inventory, names):
                    first, roles = _timed_site_run(inventory, names)
                    cold[shape] = first.seconds
                    rows.append(_row(f"cold {shape}", first, roles))
                    again, roles = _timed_site_run(inventory, names)
                    rows.append(_row(f"re-run {shape}", again, roles))
            ratio = cold["3+2"] / cold["1+2"]
            rows.append(
                {
                    "case": "cold 3+2 vs 1+2",
                    "seconds": round(cold["3+2"], 1),
                    "ratio": round(ratio, 2),
                    "target": "ratio <= 1.5",
                    "met": ratio <= 1.5,
                }
            )
        finally:
            if previous is None:
                os.environ.pop("KUBESMITH_HOME", None)
            else:
                os.environ["KUBESMITH_HOME"] = previous
    return rows
