"""One change to a cluster at a time, from this controller.

Everything that changes a cluster (a provisioning run, a certificate renewal, a reset, an
etcd restore) writes the controller's PKI and records and then changes nodes. Two at once
(a renewal timer firing during `kubesmith provision`, two terminals, a `pulumi up` beside a
`kubesmith provision` of the same stack) would interleave certificate writes and restarts.
``cluster_lock`` takes an exclusive lock on ``run.lock`` in the cluster's state directory and
refuses at once, naming the process that holds it, when another has it (kubesmith does not
wait: an operator should know that someone else is changing the cluster, as with Pulumi's
stack lock). The lock is the kernel's (flock): a process that dies releases it, so no stale
lock is ever left to clear by hand. It is re-entrant within one process (a renewal holds it
around the provisioning run it starts).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubesmith.errors import KubesmithError

LOCK_FILE = "run.lock"
#: Locks this process holds: path -> depth.
_held: dict[Path, int] = {}


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        found = json.loads(os.read(fd, 4096) or b"{}")
    except ValueError:
        found = {}
    if not isinstance(found, dict) or "pid" not in found:
        return "another kubesmith process"
    return f"pid {found['pid']}: {found.get('what', '?')}, since {found.get('since', '?')}"


@contextmanager
def cluster_lock(state_dir: Path, what: str) -> Iterator[None]:
    """Hold the cluster's change lock while the block runs; ``what`` names the operation for
    whoever finds it taken."""
    path = (state_dir / LOCK_FILE).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KubesmithError(
                f"another kubesmith run is changing this cluster ({_holder(fd)}); "
                f"wait for it to end (lock: {path})"
            ) from None
        since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": since}).encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
