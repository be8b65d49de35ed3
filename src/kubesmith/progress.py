"""Progress of long steps, so that no command looks hung (on a terminal or in a CI log).

Library code reports through the `Reporter` it is given (by default `SILENT`) and never
prints: `phase` starts a step, `detail` says what the step is doing now (as often as it likes),
`note` is an event worth a line of its own. `ConsoleReporter` shows that on a rich console:
on a terminal, one live line (spinner, step, detail, elapsed time) and a line kept per finished
step; elsewhere (CI logs), plain lines, at most one per ``interval`` seconds for details and at
least one per ``interval`` (plus a second) while a step runs. The command line hands it the
console that ``--quiet`` silences.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

#: Plain output: seconds between detail lines, and the longest silence while a step runs.
INTERVAL_S = 5.0
#: How often the plain output checks for that silence.
_TICK_S = 1.0


def duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``1m53s``."""
    whole = round(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60:02d}s"


class Reporter:
    """Where library code reports progress. This one drops everything (the default)."""

    def phase(self, name: str, step: int | None = None, steps: int | None = None) -> None:
        """A new step begins (the previous one has ended); ``step``/``steps`` number it."""

    def detail(self, text: str) -> None:
        """What the current step is doing now; shown live, or condensed in logs."""

    def note(self, text: str) -> None:
        """An event that gets its own line, with the time since the start."""


SILENT = Reporter()


class ConsoleReporter(Reporter):
    """Progress on a rich console: a live line on terminals, rate-limited lines elsewhere.

    Use it as a context manager around the work: it starts the live line (terminal) or the
    heartbeat that keeps plain output from going silent, and ends the last step. Safe to call
    from several threads (lab nodes come up in parallel).
    """

    def __init__(
        self,
        console: Console,
        *,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._lock = threading.RLock()
        self._phase: str | None = None
        self._phase_started = self.started
        self._detail = ""
        self._last_line = self.started
        self._last_text = ""
        self._live: Progress | None = None
        self._task: TaskID | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def is_live(self) -> bool:
        return self.console.is_terminal and not self.console.is_dumb_terminal

    def __enter__(self) -> ConsoleReporter:
        if self.is_live:
            self._live = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._live.start()
        else:
            self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        with self._lock:
            self._end_phase(failed=exc_type is not None)
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join()
            self._heartbeat = None

    def phase(self, name: str, step: int | None = None, steps: int | None = None) -> None:
        label = f"[{step}/{steps}] {name}" if step is not None and steps is not None else name
        with self._lock:
            self._end_phase()
            self._phase, self._detail, self._phase_started = label, "", self.clock()
            if self._live is None:
                self._line(label)
            elif self._task is None:
                self._task = self._live.add_task(label)
            else:
                self._live.reset(self._task, description=label)

    def detail(self, text: str) -> None:
        with self._lock:
            self._detail = text
            if self._live is not None and self._task is not None:
                self._live.update(self._task, description=self._text())
        self.tick()

    def note(self, text: str) -> None:
        with self._lock:
            self._line(f"{text} ({duration(self.clock() - self.started)})")

    def tick(self) -> None:
        """Plain output: the current step and detail, when nothing was printed for a while."""
        with self._lock:
            if self._live is not None or self._phase is None:
                return
            if self.clock() - self._last_line >= self.interval:
                self._line(self._status())

    def _beat(self) -> None:
        while not self._stop.wait(_TICK_S):
            self.tick()

    def _text(self) -> str:
        assert self._phase is not None
        return f"{self._phase}: {self._detail}" if self._detail else self._phase

    def _status(self) -> str:
        return f"{self._text()} ({duration(self.clock() - self._phase_started)})"

    def _end_phase(self, *, failed: bool = False) -> None:
        if self._phase is None:
            return
        if failed:
            self._line(
                f"{self._phase}: failed after {duration(self.clock() - self._phase_started)}"
            )
        else:
            self._line(self._status())
        self._phase = None

    def _line(self, text: str) -> None:
        if text != self._last_text:  # a step that ends right after its detail was printed
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self._last_text = text
        self._last_line = self.clock()
