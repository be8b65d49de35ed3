"""`pulumi up` of the local stack's shape, all but the engine, on real LXD (`make bench`).

tests/pulumi_engine.py runs the stack's program under Pulumi's mocks and its dynamic
resources (LXD nodes, Provisioning) through the SDK's dynamic provider server, as the
engine would; these rows time it on 1 control plane + 2 workers, with the stack's
`artifacts.kubernetesBinaries: false` (the Kubernetes binaries cannot be downloaded here):
  up cold        nodes created, started and answering SSH, then provisioned (site.yml)
  up no change   the same inputs again: every Diff says no change, no playbook runs
  destroy        every node deleted
`provisioning_s` is the provisioning run's own time as it reports it in the update's output;
the rest of `up cold` is creating the nodes and the program around them. The engine's own
overhead (plugin start, checkpoints) is not in these numbers. CPU as in bench/labrun.py: the
nodes' cgroups, and the controller (this process, which runs the program, plus its children:
the provider server and Ansible), with the floor they set on this machine.
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.pulumi_engine import Engine, UpResult
from tests.pulumi_mocks import REPO, stack_config

from bench.labrun import Run, bench_home, children_cpu_seconds, nodes_cpu_seconds

#: The provisioning step's last line: its title and duration (kubesmith.progress.duration).
_DONE = re.compile(r"provisioning \S+: .*playbooks/site\.yml: done \((?:(\d+)m)?([0-9.]+)s\)$")


def _provisioning_seconds(result: UpResult) -> float | None:
    for line in result.provider_log:
        found = _DONE.search(line)
        if found:
            return 60 * int(found.group(1) or 0) + float(found.group(2))
    return None


def _controller_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + children_cpu_seconds()


def _changed(result: UpResult) -> int:
    """Tasks that changed something in this step's provisioning run (none when it did not run:
    the recap in the outputs is then the last run's)."""
    ran = {s.name for s in result.steps if s.op in ("create", "update", "replace")}
    recaps = [outs.get("recap") for name, outs in result.resources.items() if name in ran]
    return int(sum(host["changed"] for recap in recaps if recap for host in recap.values()))


def _timed(
    case: str, step: Callable[[], UpResult], nodes: Callable[[], list[str]]
) -> dict[str, object]:
    """Run ``step``; its row: wall time, CPU of the nodes and the controller, steps taken."""
    before = nodes()
    node_cpu = nodes_cpu_seconds(before) if before else 0.0
    controller_cpu = _controller_cpu_seconds()
    started = time.monotonic()
    result = step()
    seconds = time.monotonic() - started
    after = nodes()
    # Nodes the step created started at 0; those it deleted took their counts with them.
    used = nodes_cpu_seconds(after) - node_cpu if after else 0.0
    run = Run(seconds, _changed(result), used, _controller_cpu_seconds() - controller_cpu)
    return _row(case, run, result)


def _row(case: str, run: Run, result: UpResult) -> dict[str, object]:
    steps: dict[str, int] = {}
    for step in result.steps:
        steps[step.op] = steps.get(step.op, 0) + 1
    found: dict[str, object] = {"case": case, **run.fields()}
    provisioning = _provisioning_seconds(result)
    if provisioning is not None:
        found["provisioning_s"] = provisioning
    found["steps"] = ", ".join(f"{count} {op}" for op, count in sorted(steps.items()))
    return found


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    config = stack_config("local")
    config["kubesmith:cluster"]["name"] = f"bench-pu-{secrets.token_hex(2)}"
    config["kubesmith:cluster"].setdefault("artifacts", {})["kubernetesBinaries"] = False
    with bench_home("bench-pulumi-"), tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("KUBESMITH_PROJECT", str(REPO))
        engine = Engine(Path(scratch) / "state.json", REPO, echo=lambda _line: None)

        def nodes() -> list[str]:
            return [e.id for e in engine.load() if e.type.endswith(":LxdNode")]

        try:
            for case in ("up cold", "up no change"):
                rows.append(_timed(case, lambda: engine.up("local", config), nodes))
        finally:
            rows.append(_timed("destroy", engine.destroy, nodes))
    return rows
