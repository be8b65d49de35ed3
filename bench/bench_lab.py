"""Seconds from `lab up` start until every node answers SSH, for 1, 3 and 6 nodes.

Nodes launch concurrently. Each case makes a fresh lab of the `local` stack (image and
profile prepared first, untimed), times `create_lab`, then times `destroy_lab` as well.
A last case times `lab up` again on an existing 3-node lab (reuse, the idempotent path).
The `storage` column names the pool's LXD driver (btrfs clones the image, dir unpacks it).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

from bench.labrun import prepare_stack
from kubesmith.local.lab import create_lab, destroy_lab

REPO = Path(__file__).resolve().parents[1]
#: The stack whose settings labs copy; another one (and KUBESMITH_PROJECT) to compare setups.
STACK = os.environ.get("KUBESMITH_BENCH_STACK", "local")
SIZES = (1, 3, 6)


def _timed_lab(nodes: int) -> dict[str, object]:
    name = f"b-{secrets.token_hex(3)}"
    started = time.monotonic()
    try:
        create_lab(name, stack=STACK, control_planes=1, workers=nodes - 1)
        up = time.monotonic() - started
    finally:
        teardown_started = time.monotonic()
        destroy_lab(name)
    return {
        "case": f"lab up, {nodes} node{'s' if nodes > 1 else ''}",
        "seconds": round(up, 2),
        "nodes": nodes,
        "down_seconds": round(time.monotonic() - teardown_started, 2),
    }


def _timed_rerun(nodes: int) -> dict[str, object]:
    name = f"b-{secrets.token_hex(3)}"
    try:
        create_lab(name, stack=STACK, control_planes=1, workers=nodes - 1)
        started = time.monotonic()
        create_lab(name, stack=STACK, control_planes=1, workers=nodes - 1)
        again = time.monotonic() - started
    finally:
        destroy_lab(name)
    return {
        "case": f"lab up again, {nodes} nodes (reused)",
        "seconds": round(again, 2),
        "nodes": nodes,
    }


def run() -> list[dict[str, object]]:
    saved = {key: os.environ.get(key) for key in ("KUBESMITH_HOME", "KUBESMITH_PROJECT")}
    with tempfile.TemporaryDirectory(prefix="kubesmith-bench-") as home:
        os.environ["KUBESMITH_HOME"] = home
        os.environ.setdefault("KUBESMITH_PROJECT", str(REPO))
        try:
            driver, node_base = prepare_stack(STACK)
            rows = [_timed_lab(nodes) for nodes in SIZES]
            rows.append(_timed_rerun(3))
            for row in rows:
                row["storage"] = driver
                row["image_node_base"] = node_base
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return rows
