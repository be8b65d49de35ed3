"""Shared rich consoles: results on stdout; progress, errors and notices on stderr.

`--quiet` silences `progress` alone (`set_quiet`, from the root command's options): every
command's progress goes there, so results (`out`) and errors (`err`) stay in CI logs.

`download_progress` reports downloads in bytes on the progress console: a live bar at a
terminal; otherwise plain lines (start, every few seconds, done), so a log never goes quiet
for long.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kubesmith.downloads.download import ByteProgress, Download
from kubesmith.progress import ConsoleReporter

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)
progress = Console(stderr=True, highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    progress.quiet = quiet


def reporter() -> ConsoleReporter:
    """Phases and live details of a long step, on the progress console."""
    return ConsoleReporter(progress)


#: Seconds between two plain progress lines of one download.
PLAIN_INTERVAL = 5.0


@contextmanager
def download_progress(console: Console | None = None) -> Iterator[ByteProgress]:
    """A ByteProgress that shows every download on ``console`` (default: the progress console)."""
    console = console or progress
    if console.is_terminal:
        with _bars(console) as report:
            yield report
    else:
        yield _PlainLines(console).report


@contextmanager
def _bars(console: Console) -> Iterator[ByteProgress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:
        tasks: dict[str, TaskID] = {}

        def report(download: Download, done: int, total: int | None) -> None:
            if download.url not in tasks:
                tasks[download.url] = bars.add_task(download.label, total=total)
            bars.update(tasks[download.url], completed=done)

        yield report


class _PlainLines:
    """One line when a download starts, then at most one per PLAIN_INTERVAL, and at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last: dict[str, float] = {}

    def report(self, download: Download, done: int, total: int | None) -> None:
        now = time.monotonic()
        size = "unknown size" if total is None else f"{total} bytes"
        if download.url not in self.last:
            self._say(f"downloading {download.label} from {download.url} ({size})")
        elif done == total:
            self._say(f"{download.label}: {done} bytes, done")
        elif now - self.last[download.url] >= PLAIN_INTERVAL:
            self._say(f"{download.label}: {done} of {size}")
        else:
            return
        self.last[download.url] = now

    def _say(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
