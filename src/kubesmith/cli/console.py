"""Shared rich consoles: results on stdout; progress, errors and notices on stderr."""

from __future__ import annotations

from rich.console import Console

from kubesmith.progress import ConsoleReporter

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)
progress = Console(stderr=True, highlight=False, soft_wrap=True)


def reporter() -> ConsoleReporter:
    """Phases and live details of a long step, on the progress console."""
    return ConsoleReporter(progress)
