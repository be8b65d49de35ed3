"""Find the stacks a sweep destroys: named with a prefix, last updated longer ago than a limit.

Ephemeral CI stacks (`ci-<run id>-<attempt>`) are destroyed by the job that made them; the
sweep catches those whose job died first (a cancelled run, a runner lost mid-`up`). Their age
is the backend's record of the stack's last update (`pulumi stack ls --json`, read through
the Automation API's ``LocalWorkspace.list_stacks``), not anything on the runner, which is
gone with the job.

Verified here: the selection and the parsing of `stack ls` output through the Automation API
(with a stand-in for the CLI that answers it). Unverified: a real `pulumi stack ls` against a
real backend; the development machines cannot obtain the Pulumi CLI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from kubesmith.errors import KubesmithError, UserError
from kubesmith.program.automation import pulumi_env
from kubesmith.state.paths import state_dir

if TYPE_CHECKING:
    from pulumi import automation as auto

_AGE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    """``90m``, ``6h``, ``2d``: a positive whole number and one unit (s, m, h, d)."""
    match = _AGE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise UserError(f"--older-than {text!r}: expected a number and a unit, such as 6h or 2d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Candidate:
    """A stack whose name has the prefix, and what the sweep does with it."""

    name: str  # as the backend lists it (may be organization/project/stack)
    short_name: str  # the stack name kubesmith commands take
    age: timedelta | None
    stale: bool
    reason: str


def short_name(listed: str) -> str:
    """DIY backends list project-scoped stacks as organization/project/stack."""
    return listed.rsplit("/", 1)[-1]


def candidates(
    stacks: Sequence[auto.StackSummary], prefix: str, older_than: timedelta, now: datetime
) -> list[Candidate]:
    """The stacks named ``prefix*``, each marked stale or kept with the reason."""
    found = []
    for summary in sorted(stacks, key=lambda s: s.name):
        name = short_name(summary.name)
        if not name.startswith(prefix):
            continue
        age = None if summary.last_update is None else now - _utc(summary.last_update)
        if summary.update_in_progress:
            found.append(Candidate(summary.name, name, age, False, "an update is running"))
        elif age is None:
            found.append(Candidate(summary.name, name, age, False, "never updated"))
        elif age <= older_than:
            found.append(Candidate(summary.name, name, age, False, "recent"))
        else:
            found.append(Candidate(summary.name, name, age, True, "stale"))
    return found


def _utc(moment: datetime) -> datetime:
    # The Automation API parses Pulumi's `...Z` timestamps into naive datetimes.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def describe_age(age: timedelta | None) -> str:
    if age is None:
        return "age unknown"
    minutes = max(0, int(age.total_seconds()) // 60)  # a clock ahead of the backend's: 0
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m ago"


def list_stacks(root: Path, command: auto.PulumiCommand) -> list[auto.StackSummary]:
    """The project's stacks in the backend kubesmith uses (PULUMI_BACKEND_URL or its own)."""
    from pulumi import automation as auto

    workspace = auto.LocalWorkspace(
        work_dir=str(root),
        env_vars=pulumi_env(state_dir(root)),
        secrets_provider="passphrase",
        pulumi_command=command,
    )
    try:
        return workspace.list_stacks()
    except auto.CommandError as exc:
        # str(CommandError) is "code: N, stdout: ..., stderr: ..."; its last stderr line says why.
        stderr = str(exc).rsplit(" stderr: ", 1)[-1]
        detail = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
        raise KubesmithError(f"pulumi stack ls failed: {detail}") from None
    except ValueError as exc:
        raise KubesmithError(f"pulumi stack ls printed what kubesmith cannot read: {exc}") from None
