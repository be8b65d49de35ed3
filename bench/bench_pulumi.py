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
overhead (plugin start, checkpoints) is not in these numbers.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from tests.pulumi_engine import Engine, UpResult
from tests.pulumi_mocks import REPO, stack_config

from bench.labrun import bench_home

_DONE = re.compile(r"provisioning \S+: done in ([0-9.]+) s")


def _provisioning_seconds(result: UpResult) -> float | None:
    for line in result.provider_log:
        found = _DONE.search(line)
        if found:
            return float(found.group(1))
    return None


def _row(case: str, seconds: float, result: UpResult) -> dict[str, object]:
    steps: dict[str, int] = {}
    for step in result.steps:
        steps[step.op] = steps.get(step.op, 0) + 1
    found: dict[str, object] = {"case": case, "seconds": round(seconds, 1)}
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
        try:
            for case in ("up cold", "up no change"):
                started = time.monotonic()
                result = engine.up("local", config)
                rows.append(_row(case, time.monotonic() - started, result))
        finally:
            started = time.monotonic()
            result = engine.destroy()
            rows.append(_row("destroy", time.monotonic() - started, result))
    return rows
