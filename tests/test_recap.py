"""The plain-line progress of a provisioning run (what `pulumi up` shows of it)."""

from __future__ import annotations

from typing import Any

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


def test_one_line_per_host_and_role_with_its_counts_and_time() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = LineProgress(lines.append, clock=clock)

    task(progress, "cp-1", "etcd", "Etcd | write the unit", changed=True)
    task(progress, "cp-1", "etcd", "Etcd | start", changed=False)
    assert lines == []  # the role has not ended yet
    clock.now += 2.5
    task(progress, "cp-1", "kubelet", "Kubelet | config", changed=False)
    task(progress, "w-1", "kubelet", "Kubelet | config", changed=True)
    progress(event("runner_on_start", "w-1", "cni", task="CNI | routes"))
    progress(event("runner_on_failed", "w-1", "cni", task="CNI | routes"))
    progress(event("playbook_on_stats"))

    assert lines == [
        "cp-1: etcd ok 2 changed 1 (2.5 s)",
        "w-1: kubelet ok 1 changed 1 (0.0 s)",
        "cp-1: kubelet ok 1 changed 0 (0.0 s)",
        "w-1: cni ok 0 changed 0 failed 1 (0.0 s)",
    ]
    assert progress.changed_roles == {"cp-1": {"etcd": 1}, "w-1": {"kubelet": 1}}


def test_a_host_quiet_for_a_while_gets_a_line_naming_its_task() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = LineProgress(lines.append, quiet_s=10.0, clock=clock)
    progress(event("runner_on_start", "w-1", "node_prep", task="Node prep | install packages"))

    clock.now += 9.9
    progress.tick()
    assert lines == []
    clock.now += 0.1
    progress.tick()
    assert lines == ["w-1: node_prep: Node prep | install packages (running 10 s)"]
    clock.now += 5
    progress.tick()
    assert len(lines) == 1  # told 5 s ago
    clock.now += 5
    progress.tick()
    assert lines[-1] == "w-1: node_prep: Node prep | install packages (running 20 s)"


def test_the_ticker_thread_stops_with_the_run() -> None:
    progress = LineProgress(lambda _line: None)
    with progress:
        assert progress._ticker is not None
        assert progress._ticker.is_alive()
    assert not progress._ticker.is_alive()
