"""What the user sees of a run: a live line per host while it runs, a recap table after.

On a terminal, `Progress` redraws a table; where output is a log (Pulumi's output, CI),
`LineProgress` reports a line when a host finishes a role, with its counts, through a
kubesmith.progress reporter, whose heartbeat names the latest task when a run goes quiet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kubesmith.progress import ConsoleReporter, Reporter
from kubesmith.provision.runner import RunResult
from kubesmith.state.pki import PkiReport


@dataclass
class _HostRow:
    task: str = "waiting"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: bool = False


class Progress:
    """An ansible-runner event handler: on a terminal, a per-host table redrawn as events
    arrive; elsewhere (CI logs), the latest task and the counts as `kubesmith.progress` lines.
    """

    def __init__(
        self,
        console: Console,
        hosts: Sequence[str],
        title: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rows = {host: _HostRow() for host in hosts}
        self.title = title
        self.live = Live(self.render(), console=console, refresh_per_second=8, transient=True)
        self.log = ConsoleReporter(console, clock=clock)

    def __enter__(self) -> Progress:
        if self.log.is_live:
            self.live.start()
        else:
            self.log.__enter__()
            self.log.phase(self.title)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.log.is_live:
            self.live.stop()
        else:
            self.log.__exit__(exc_type)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        row = self.rows.get(str(data.get("host", "")))
        if row is None:
            return
        if kind == "runner_on_start":
            row.task = str(data.get("task", "")).strip()
        elif kind == "runner_on_ok":
            row.ok += 1
            row.changed += int(bool((data.get("res") or {}).get("changed")))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            row.failed += 1
        elif kind == "runner_on_unreachable":
            row.unreachable = True
            row.task = "unreachable"
        if self.log.is_live:
            self.live.update(self.render())
        else:
            self.log.detail(f"{data.get('host')}: {row.task}; {self.counts()}")

    def counts(self) -> str:
        """``12 ok, 3 changed on 3 hosts``; failures and unreachable hosts only when there are."""
        rows = self.rows.values()
        parts = [f"{sum(r.ok for r in rows)} ok", f"{sum(r.changed for r in rows)} changed"]
        failed = sum(r.failed for r in rows)
        unreachable = sum(r.unreachable for r in rows)
        if failed:
            parts.append(f"{failed} failed")
        if unreachable:
            parts.append(f"{unreachable} unreachable")
        return f"{', '.join(parts)} on {len(self.rows)} hosts"

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        table.add_column("host", style="cyan", no_wrap=True)
        table.add_column("task", overflow="ellipsis", no_wrap=True, max_width=60)
        for name in ("ok", "changed", "failed"):
            table.add_column(name, justify="right")
        for host, row in self.rows.items():
            style = "red" if row.failed or row.unreachable else None
            table.add_row(
                host, row.task, str(row.ok), str(row.changed), str(row.failed), style=style
            )
        return table


def recap_table(result: RunResult, title: str) -> Table:
    table = Table(title=f"{title} ({result.seconds:.1f} s)", title_justify="left")
    table.add_column("host", style="cyan", no_wrap=True)
    for name in ("ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(name, justify="right")
    for host in sorted(result.stats):
        stats = result.stats[host]
        bad = stats.failed or stats.unreachable
        table.add_row(
            host,
            str(stats.ok),
            f"[yellow]{stats.changed}[/]" if stats.changed else "0",
            f"[red]{stats.failed}[/]" if stats.failed else "0",
            f"[red]{stats.unreachable}[/]" if stats.unreachable else "0",
            str(stats.skipped),
            style="bold" if bad else None,
        )
    return table


def pki_summary(report: PkiReport) -> str | None:
    """One line about certificates written this run, or None when nothing changed."""
    if not report.issued:
        return None
    by_reason: dict[str, int] = {}
    for _node, _path, reason in report.issued:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(by_reason.items()))
    return f"certificates issued: {len(report.issued)} ({parts})"


@dataclass
class _HostRole:
    role: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0


@dataclass
class LineProgress:
    """An ansible-runner event handler for logs (Pulumi's output, CI): a line through
    ``reporter.note`` when a host leaves a role (or the run ends),
    ``host: role ok N changed N`` (the reporter adds the time), and the task a host starts as
    the reporter's detail,
    which its heartbeat repeats when nothing else was printed for a while (kubesmith.progress).
    ``changed_roles`` keeps, per host, the roles that changed something and how many tasks.
    """

    reporter: Reporter
    changed_roles: dict[str, dict[str, int]] = field(default_factory=dict)
    _hosts: dict[str, _HostRole] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        with self._lock:
            if kind == "playbook_on_stats":
                for host, row in self._hosts.items():
                    self._finish(host, row)
                return
            host = str(data.get("host", ""))
            if not host:
                return
            row = self._hosts.setdefault(host, _HostRole())
            if kind == "runner_on_start":
                role = str(data.get("role") or data.get("play") or "-")
                if role != row.role:
                    self._finish(host, row)
                    self._hosts[host] = row = _HostRole(role=role)
                self.reporter.detail(f"{host}: {role}: {str(data.get('task', '')).strip()}")
            elif kind == "runner_on_ok":
                row.ok += 1
                if (data.get("res") or {}).get("changed"):
                    row.changed += 1
            elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get(
                "ignore_errors"
            ):
                row.failed += 1

    def _finish(self, host: str, row: _HostRole) -> None:
        if not row.role or not (row.ok or row.failed):
            return
        if row.changed:
            roles = self.changed_roles.setdefault(host, {})
            roles[row.role] = roles.get(row.role, 0) + row.changed
        failed = f" failed {row.failed}" if row.failed else ""
        self.reporter.note(f"{host}: {row.role} ok {row.ok} changed {row.changed}{failed}")
        row.role = ""
