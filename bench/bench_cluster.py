"""The whole cluster on real LXD labs: every role of site.yml, cold and re-run (`make bench`).

Cases, each on fresh nodes that already answer SSH (lab creation is not timed), with
`kubesmith_kubernetes_binaries: false` (these machines cannot download the Kubernetes server
binaries; every file, unit, certificate, route and add-on manifest is still written):
  cold 1+2      first `site.yml` run on 1 control plane + 2 workers
  re-run 1+2    the idempotent second run (must report no change)
  cold 3+2      the same on 3 control planes + 2 workers (etcd of three, local HA API proxy)
  re-run 3+2
Targets (the speed issue): cold 1+2 <= 25 s, re-run 1+2 <= 4 s, cold 3+2 <= 1.5 x cold 1+2.

With KUBESMITH_BENCH_ARTIFACTS=DIR (filled by `kubesmith artifacts fetch -s local --source
release --dest DIR` on a machine with internet access) DIR is served on 127.0.0.1 as the
mirror and the runs install and start the real binaries (mounted into the nodes); the nodes
still pull the pinned images from their registries. Never run on the project's machines,
which cannot obtain the binaries.

Each row carries the CPU the nodes and Ansible used and the floor that sets on this machine
(bench/labrun.py), and `roles`: seconds per role, the sum of its tasks' wall times
(first start to last end across hosts), from the runner's events, and `tasks_per_host`: how
many task results (ok, changed, skipped, failed) Ansible produced over all hosts (and per host,
fewest to most), the number that sets the controller's share of a re-run.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.clusterlab import serve

from bench.labrun import Run, bench_home, lab, prepare_stack, ratio_row, row, timed_run
from kubesmith.provision.provisioner import Options

SHAPES = ((1, 2), (3, 2))
#: site.yml without the Kubernetes binaries (see the module doc).
SITE = Options(extravars={"kubesmith_kubernetes_binaries": False})
#: A directory in the mirror layout holding the real release files (see the module doc).
ARTIFACTS_ENV = "KUBESMITH_BENCH_ARTIFACTS"
TARGETS = {"cold 1+2": 25.0, "re-run 1+2": 4.0}
_TASK_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


class RoleClock:
    """Seconds per role: each task's first start to its last end over every host, summed."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[str, dt.datetime, dt.datetime]] = {}
        self.results: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") not in _TASK_EVENTS:
            return
        data = event.get("event_data") or {}
        host = str(data.get("host"))
        self.results[host] = self.results.get(host, 0) + 1
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

    def per_host(self) -> str:
        """Task results of all hosts, and per host fewest to most."""
        counts = sorted(self.results.values())
        return f"{sum(counts)} ({counts[0]}-{counts[-1]})" if counts else "0"


@contextmanager
def _binaries() -> Iterator[tuple[Options, str | None]]:
    """site.yml's options and the mirror: the real binaries from $KUBESMITH_BENCH_ARTIFACTS,
    else none."""
    directory = os.environ.get(ARTIFACTS_ENV)
    if not directory:
        yield SITE, None
        return
    with serve(Path(directory)) as files:
        yield Options(extravars={"kubesmith_kubernetes_binaries": True}), files.url


def _timed_site_run(
    inventory: Path, names: list[str], options: Options, mirror: str | None
) -> tuple[Run, dict[str, object]]:
    """One site.yml run, task results per host and each role's seconds, slowest first."""
    clock = RoleClock()
    result = timed_run(inventory, names, options, clock, mirror)
    roles = ", ".join(f"{name} {seconds:.1f}" for name, seconds in clock.by_role().items())
    return result, {"tasks_per_host": clock.per_host(), "roles": roles}


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    cold: dict[str, float] = {}
    with bench_home("bench-cluster-"), _binaries() as (options, mirror):
        # Labs come from the local stack's image: built first, with its node base if it has one.
        _, node_base = prepare_stack("local")
        for planes, workers in SHAPES:
            shape = f"{planes}+{workers}"
            with lab(f"bench-cl-{planes}{workers}", planes, workers) as (inventory, names):
                first, extra = _timed_site_run(inventory, names, options, mirror)
                cold[shape] = first.seconds
                rows.append(row(f"cold {shape}", first, TARGETS, **extra))
                again, extra = _timed_site_run(inventory, names, options, mirror)
                rows.append(row(f"re-run {shape}", again, TARGETS, **extra))
    for found in rows:
        found["image_node_base"] = node_base
    rows.append(ratio_row("cold 3+2 vs 1+2", cold["3+2"], cold["1+2"], 1.5))
    return rows
