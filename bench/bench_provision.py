"""Provisioning speed on real LXD labs: prep, pki, runtime and etcd (`make bench`).

Cases, each on fresh nodes that already answer SSH (lab creation is not timed):
  cold N nodes   first run until every etcd member is healthy, N = 1, 3, 5 (all members)
  re-run 3 nodes the idempotent second run on the 3-node lab (must report no change)
  re-run 3 nodes (paramiko)  the same with Ansible's paramiko transport, for the transport choice
Targets (issue 4): cold 3 <= 30 s, re-run <= 10 s, cold 5 <= 1.3 x cold 3.

Needs the local stack's LXD setup (`make lxd`). Runs in a temporary KUBESMITH_HOME and
removes its labs afterwards.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.target import for_inventory

TAGS = ("prep", "pki", "runtime", "etcd")
TARGETS = {"cold 3 nodes": 30.0, "re-run 3 nodes": 10.0}


@contextmanager
def _lab(nodes: int) -> Iterator[Path]:
    name = f"bench-prov-{nodes}-{secrets.token_hex(2)}"
    try:
        lab = create_lab(name, control_planes=nodes, workers=0)
        yield lab.inventory_path
    finally:
        destroy_lab(name)


def _timed_run(inventory: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    started = time.monotonic()
    outcome = provision(for_inventory(inventory), Options(tags=TAGS, env=env or {}))
    seconds = time.monotonic() - started
    outcome.run.raise_for_failure("provisioning")
    return seconds, sum(s.changed for s in outcome.run.stats.values())


def _row(case: str, seconds: float, changed: int, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"case": case, "seconds": round(seconds, 1), "changed": changed}
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
                with _lab(nodes) as inventory:
                    seconds, changed = _timed_run(inventory)
                    cold[nodes] = seconds
                    rows.append(
                        _row(f"cold {nodes} node{'s' if nodes > 1 else ''}", seconds, changed)
                    )
                    if nodes == 3:
                        again, changed = _timed_run(inventory)
                        rows.append(_row("re-run 3 nodes", again, changed, transport="ssh"))
                        slow, changed = _timed_run(inventory, {"ANSIBLE_TRANSPORT": "paramiko"})
                        rows.append(
                            _row("re-run 3 nodes (paramiko)", slow, changed, transport="paramiko")
                        )
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
