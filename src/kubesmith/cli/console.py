"""Shared rich consoles: results on stdout; progress, errors and notices on stderr.

`--quiet` silences `progress` alone (`set_quiet`, from the root command's options): every
command's progress goes there, so results (`out`) and errors (`err`) stay in CI logs.
"""

from __future__ import annotations

from rich.console import Console

from kubesmith.progress import ConsoleReporter

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)
progress = Console(stderr=True, highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    progress.quiet = quiet


def reporter() -> ConsoleReporter:
    """Phases and live details of a long step, on the progress console."""
    return ConsoleReporter(progress)
