"""Progress output: never silent for long, never flooding, a kept line per finished phase.

Time is a fake clock the test moves; `tick()` is what the heartbeat thread calls each second.
"""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from kubesmith.progress import SILENT, ConsoleReporter, duration
from kubesmith.provision.recap import Progress

INTERVAL = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _plain() -> tuple[ConsoleReporter, io.StringIO, Clock]:
    """A reporter on a console that is not a terminal (a CI log), driven by a fake clock."""
    buffer = io.StringIO()
    clock = Clock()
    console = Console(file=buffer, width=200)
    return ConsoleReporter(console, interval=INTERVAL, clock=clock), buffer, clock


def _lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.04, "0.0s"), (4.25, "4.2s"), (42.4, "42s"), (59.6, "1m00s"), (113.0, "1m53s")],
)
def test_durations_read_like_a_stopwatch(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_a_long_silent_step_prints_a_line_at_least_every_interval() -> None:
    reporter, buffer, clock = _plain()
    reporter.phase("import into LXD", 4, 4)
    printed_at = [clock.now]
    for _ in range(120):  # two minutes of a blocking call; the heartbeat ticks every second
        clock.now += 1.0
        before = len(_lines(buffer))
        reporter.tick()
        if len(_lines(buffer)) > before:
            printed_at.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(printed_at)]
    assert len(gaps) >= 20
    assert max(gaps) <= INTERVAL
    assert _lines(buffer)[0] == "[4/4] import into LXD"
    assert _lines(buffer)[-1] == "[4/4] import into LXD (2m00s)"


def test_details_arriving_fast_are_condensed_to_one_line_per_interval() -> None:
    reporter, buffer, clock = _plain()
    reporter.phase("debootstrap bookworm", 1, 4)
    for count in range(1, 1001):  # 1000 details in 20 s
        clock.now += 0.02
        reporter.detail(f"retrieved {count} packages")
    lines = _lines(buffer)
    assert lines[0] == "[1/4] debootstrap bookworm"
    assert len(lines) <= 1 + 20 / INTERVAL
    assert lines[1].startswith("[1/4] debootstrap bookworm: retrieved ")
    # The last line says where it was then, not where it started.
    assert lines[-1].startswith("[1/4] debootstrap bookworm: retrieved 7")


def test_each_phase_ends_with_its_last_detail_and_time_and_notes_have_the_total_time() -> None:
    reporter, buffer, clock = _plain()
    reporter.note("node image x: no image yet; building")
    reporter.phase("pack rootfs", 3, 4)
    clock.now += 6.0
    reporter.detail("312 MB")
    reporter.phase("import into LXD", 4, 4)
    clock.now += 20.0
    reporter.note("something happened")
    reporter.__exit__(None, None, None)
    assert _lines(buffer) == [
        "node image x: no image yet; building (0.0s)",
        "[3/4] pack rootfs",
        "[3/4] pack rootfs: 312 MB (6.0s)",
        "[4/4] import into LXD",
        "something happened (26s)",
        "[4/4] import into LXD (20s)",
    ]


def test_a_step_that_raises_is_reported_as_failed_not_done() -> None:
    reporter, buffer, clock = _plain()

    def build() -> None:
        with reporter:
            reporter.phase("configure rootfs", 2, 4)
            clock.now += 3.0
            raise RuntimeError("chroot failed")

    with pytest.raises(RuntimeError):
        build()
    assert _lines(buffer)[-1] == "[2/4] configure rootfs: failed after 3.0s"


def test_on_a_terminal_each_finished_phase_leaves_a_line() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    with ConsoleReporter(console) as reporter:
        assert reporter.is_live
        reporter.phase("debootstrap bookworm", 1, 2)
        reporter.detail("retrieved 3 packages")
        reporter.phase("import into LXD", 2, 2)
    text = buffer.getvalue()
    assert "[1/2] debootstrap bookworm: retrieved 3 packages (" in text
    assert "[2/2] import into LXD (" in text


def test_a_quiet_console_shows_nothing() -> None:
    reporter, buffer, clock = _plain()
    reporter.console.quiet = True
    reporter.note("x")
    reporter.phase("y")
    clock.now += 60
    reporter.tick()
    assert buffer.getvalue() == ""


def test_the_silent_default_accepts_every_call() -> None:
    SILENT.phase("a", 1, 2)
    SILENT.detail("b")
    SILENT.note("c")


def test_a_playbook_run_in_a_log_shows_the_latest_task_and_the_counts() -> None:
    buffer = io.StringIO()
    clock = Clock()
    console = Console(file=buffer, width=200)
    with Progress(console, ["n1", "n2"], "provision: lab x", clock=clock) as handler:
        for number in range(1, 31):  # a task a second on n1 for 30 s
            clock.now += 1.0
            started = {"host": "n1", "task": f"containerd | task {number}"}
            handler({"event": "runner_on_start", "event_data": started})
            done = {"host": "n1", "res": {"changed": True}}
            handler({"event": "runner_on_ok", "event_data": done})
    lines = _lines(buffer)
    assert lines[0] == "provision: lab x"
    assert len(lines) <= 2 + 30 / INTERVAL
    assert lines[-1] == (
        "provision: lab x: n1: containerd | task 30; 30 ok, 30 changed on 2 hosts (30s)"
    )


def test_a_playbook_run_in_a_log_names_failures_once_there_are_some() -> None:
    buffer = io.StringIO()
    with Progress(Console(file=buffer, width=200), ["n1", "n2"], "provision") as handler:
        handler({"event": "runner_on_failed", "event_data": {"host": "n2"}})
        handler({"event": "runner_on_unreachable", "event_data": {"host": "n1"}})
    assert _lines(buffer)[-1].startswith(
        "provision: n1: unreachable; 0 ok, 0 changed, 1 failed, 1 unreachable on 2 hosts ("
    )
