"""Run a playbook through ansible-runner and turn its event stream into a typed result.

The private data directory lives under the state directory; ansible-runner keeps the last
few runs' artifacts there (job events, stdout). Tasks that touch key material are `no_log`,
so those artifacts hold paths and checksums, never keys.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from kubesmith.errors import KubesmithError
from kubesmith.resources import playbooks_dir

#: Artifact directories of earlier runs kept for debugging.
KEEP_RUNS = 5


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool = False

    def describe(self) -> str:
        what = "unreachable" if self.unreachable else f"task '{self.task}' failed"
        return f"{self.host}: {what}: {self.message}"


@dataclass
class RunResult:
    status: str
    rc: int
    stats: dict[str, HostStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    artifact_dir: Path | None = None
    seconds: float = 0.0
    #: Ansible's own error when the run failed before or outside any task (a playbook that
    #: does not parse, a bad option): the first error line it printed.
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures

    def raise_for_failure(self, what: str) -> None:
        if self.ok and not self.stats:
            raise KubesmithError(f"{what}: no host matched (check --limit and the inventory)")
        if self.ok:
            return
        if self.failures:
            first = self.failures[0]
            others = len({f.host for f in self.failures} - {first.host})
            more = f" (and {others} more host{'s' if others > 1 else ''})" if others else ""
            raise KubesmithError(f"{what} failed on {first.describe()}{more}")
        reason = f": {self.error}" if self.error else ""
        raise KubesmithError(
            f"{what} failed: ansible-runner ended {self.status} (rc {self.rc}){reason}"
        )


@dataclass(frozen=True)
class RunRequest:
    private_data_dir: Path
    inventory: Path
    playbook: str = "site.yml"
    extravars: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    limit: str | None = None
    check: bool = False
    #: Extra environment for ansible (e.g. ANSIBLE_TRANSPORT for the benchmark).
    env: Mapping[str, str] = field(default_factory=dict)


def ansible_path_env() -> dict[str, str]:
    """PATH with this interpreter's bin directory first, where ansible-playbook lives even
    when the virtualenv is not activated (kubesmith run as .venv/bin/kubesmith)."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)])}


EventHandler = Callable[[dict[str, Any]], None]


class TaskOutputs:
    """An event handler keeping each host's stdout of the named tasks (their ``runner_on_ok``
    events): how a command reads what a probe printed on each node. Every event is passed on
    to ``then``."""

    def __init__(self, *tasks: str, then: EventHandler | None = None) -> None:
        self.then = then
        #: Task name -> host -> stdout.
        self.stdout: dict[str, dict[str, str]] = {task: {} for task in tasks}

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("event_data") or {}
        task = str(data.get("task", "")).strip()
        if event.get("event") == "runner_on_ok" and task in self.stdout:
            res = data.get("res") or {}
            self.stdout[task][str(data.get("host", ""))] = str(res.get("stdout", ""))
        if self.then is not None:
            self.then(event)


#: Ansible's message for a command that exited non-zero: its stderr says more.
_NONZERO = "non-zero return code"


def _message(res: Mapping[str, Any]) -> str:
    """The most useful single line of a failed result (censored results stay censored)."""
    keys: tuple[str, ...] = ("msg", "stderr", "censored", "module_stderr", "stdout")
    if res.get("msg") == _NONZERO and str(res.get("stderr", "")).strip():
        keys = ("stderr",)
    for key in keys:
        value = res.get(key)
        if value:
            lines = [line for line in str(value).strip().splitlines() if line.strip()]
            if lines:
                return lines[-1][:300] if key in ("stderr", "module_stderr") else lines[0][:300]
    return "no message"


class _Collector:
    """Accumulates failures and the recap from runner events, then forwards each event."""

    def __init__(self, forward: EventHandler | None) -> None:
        self.forward = forward
        self.failures: list[Failure] = []
        self.stats: dict[str, HostStats] = {}
        #: Events of ansible-playbook itself (not ansible-runner's verbose lines).
        self.events = 0

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        if kind not in ("", "verbose"):
            self.events += 1
        data = event.get("event_data") or {}
        host = str(data.get("host", ""))
        task = str(data.get("task", "")).strip()
        res = data.get("res") or {}
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            self.failures.append(Failure(host, task, _message(res)))
        elif kind == "runner_on_unreachable":
            self.failures.append(Failure(host, task, _message(res), unreachable=True))
        elif kind == "playbook_on_stats":
            self._recap(data)
        if self.forward is not None:
            self.forward(event)
        # Returning True keeps the event in the artifact directory (job_events/).
        return True

    def _recap(self, data: Mapping[str, Any]) -> None:
        counters = {
            "ok": "ok",
            "changed": "changed",
            "failures": "failed",
            "dark": "unreachable",
            "skipped": "skipped",
        }
        for source, attr in counters.items():
            for host, count in (data.get(source) or {}).items():
                setattr(self.stats.setdefault(host, HostStats()), attr, int(count))


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _first_error(artifact_dir: Path) -> str:
    """Ansible's first `[ERROR]: ...` / `ERROR! ...` line in a run's output artifacts."""
    lines: list[str] = []
    for name in ("stdout", "stderr"):
        try:
            text = (artifact_dir / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        lines += _COLOUR.sub("", text).splitlines()
    for line in lines:
        text = line.strip()
        if text.startswith(("[ERROR]:", "ERROR!")):
            return text.removeprefix("[ERROR]:").removeprefix("ERROR!").strip()[:300]
    return ""


def run_playbook(request: RunRequest, on_event: EventHandler | None = None) -> RunResult:
    playbooks = playbooks_dir()
    if not (playbooks / request.playbook).is_file():
        raise KubesmithError(f"{playbooks / request.playbook}: playbook not found")
    request.private_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # ansible-runner stores a run's command line options (--check) in env/cmdline and reuses
    # them when a later run passes none: a check run must not make the next run a check too.
    (request.private_data_dir / "env" / "cmdline").unlink(missing_ok=True)
    collector = _Collector(on_event)
    env = {
        # Found explicitly: ansible-runner runs from the project dir, but a stray
        # ANSIBLE_CONFIG in the caller's environment must not win.
        "ANSIBLE_CONFIG": str(playbooks / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(request.private_data_dir / "facts"),
        **ansible_path_env(),
        **request.env,
    }
    started = time.monotonic()
    for _attempt in range(_START_ATTEMPTS):
        runner = _run_once(request, playbooks, env, collector)
        # ansible-runner forks its child from this process: in a multi-threaded gRPC server
        # (Pulumi's dynamic provider) the child may die before ansible-playbook starts (no
        # event, no exit status). Nothing ran, so trying again is safe.
        if runner.rc is not None or collector.events:
            break
    artifact_dir = Path(runner.config.artifact_dir)
    if runner.rc is None:
        return RunResult(
            status=str(runner.status),
            rc=-1,
            artifact_dir=artifact_dir,
            seconds=time.monotonic() - started,
            error="ansible-playbook did not start (ansible-runner reported no exit status)",
        )
    rc = int(runner.rc)
    return RunResult(
        status=str(runner.status),
        rc=rc,
        stats=collector.stats,
        failures=collector.failures,
        artifact_dir=artifact_dir,
        seconds=time.monotonic() - started,
        error=_first_error(artifact_dir) if rc and not collector.failures else "",
    )


#: Tries of a run whose child never started (see run_playbook).
_START_ATTEMPTS = 2


def _run_once(
    request: RunRequest, playbooks: Path, env: dict[str, str], collector: _Collector
) -> Any:
    # SSH master connections of this run only: a run killed midway can leave a master socket
    # behind that later connections would hang on. A short path: sockets allow ~100 bytes.
    control_dir = Path(tempfile.mkdtemp(prefix="ks-ssh-"))
    env = {**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)}
    try:
        return ansible_runner.run(
            private_data_dir=str(request.private_data_dir),
            project_dir=str(playbooks),
            playbook=request.playbook,
            inventory=str(request.inventory),
            extravars=dict(request.extravars),
            tags=",".join(request.tags) or None,
            limit=request.limit,
            cmdline="--check" if request.check else None,
            envvars=env,
            event_handler=collector,
            quiet=True,
            rotate_artifacts=KEEP_RUNS,
        )
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
