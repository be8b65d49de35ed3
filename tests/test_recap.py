"""The plain-line progress of a provisioning run (what `pulumi up` shows of it)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from kubesmith.progress import ConsoleReporter
from kubesmith.provision.recap import LineProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, host: str = "", role: str | None = None, **data: Any) -> dict[str, Any]:
    event_data: dict[str, Any] = {"host": host, **data}
    if role is not None:
        event_data["role"] = role
    return {"event": kind, "event_data": event_data}


def task(progress: LineProgress, host: str, role: str, name: str, *, changed: bool) -> None:
    progress(event("runner_on_start", host, role, task=name))
    progress(event("runner_on_ok", host, role, task=name, res={"changed": changed}))


def log_reporter(clock: Clock) -> tuple[ConsoleReporter, io.StringIO]:
    """A reporter writing plain lines (not a terminal), as in the provider's stderr."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    return ConsoleReporter(console, clock=clock), buffer


def test_one_line_per_host_and_role_with_its_counts() -> None:
    clock = Clock()
    reporter, buffer = log_reporter(clock)
    progress = LineProgress(reporter)

    task(progress, "cp-1", "etcd", "Etcd | write the unit", changed=True)
    task(progress, "cp-1", "etcd", "Etcd | start", changed=False)
    assert buffer.getvalue() == ""  # the role has not ended yet
    clock.now += 2.5
    task(progress, "cp-1", "kubelet", "Kubelet | config", changed=False)
    task(progress, "w-1", "kubelet", "Kubelet | config", changed=True)
    progress(event("runner_on_start", "w-1", "cni", task="CNI | routes"))
    progress(event("runner_on_failed", "w-1", "cni", task="CNI | routes"))
    progress(event("playbook_on_stats"))

    assert buffer.getvalue().splitlines() == [
        "cp-1: etcd ok 2 changed 1 (2.5s)",
        "w-1: kubelet ok 1 changed 1 (2.5s)",
        "cp-1: kubelet ok 1 changed 0 (2.5s)",
        "w-1: cni ok 0 changed 0 failed 1 (2.5s)",
    ]
    assert progress.changed_roles == {"cp-1": {"etcd": 1}, "w-1": {"kubelet": 1}}


def test_a_quiet_run_gets_a_line_naming_the_running_task() -> None:
    clock = Clock()
    reporter, buffer = log_reporter(clock)
    progress = LineProgress(reporter)
    reporter.phase("provisioning local")
    progress(event("runner_on_start", "w-1", "node_prep", task="Node prep | install packages"))
    lines = buffer.getvalue().splitlines()
    assert lines == ["provisioning local"]

    clock.now += 4.9
    reporter.tick()
    assert buffer.getvalue().splitlines() == lines
    clock.now += 0.1
    reporter.tick()
    assert buffer.getvalue().splitlines()[-1] == (
        "provisioning local: w-1: node_prep: Node prep | install packages (5.0s)"
    )
