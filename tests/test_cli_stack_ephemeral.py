"""`kubesmith stack new` (real stack files in a project of the test's own) and `kubesmith stack
sweep`.

`stack sweep` needs the Pulumi CLI, which the development machines cannot obtain: its stack
listing runs through the Automation API's real ``LocalWorkspace.list_stacks`` (argument
building, JSON and timestamp parsing) with a stand-in for the CLI that answers
`pulumi stack ls --json` the way the CLI prints it; the destroy of each stale stack is
``automation.destroy``, replaced by a recorder here (its own tests are in test_cli_stack.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import KubesmithError, UserError
from kubesmith.program import automation, sweep
from kubesmith.stackfile import load_spec
from kubesmith.state.paths import stack_dir
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project holding the shipped stack files, plus one with Pulumi's per-stack keys."""
    (tmp_path / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    for stack in ("dev", "prod", "local"):
        name = f"Pulumi.{stack}.yaml"
        (tmp_path / name).write_text((REPO / name).read_text())
    used = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    used = {
        "secretsprovider": "passphrase",
        "encryptionsalt": "v1:c2FsdA==:v1:bm9uY2U=:Y2lwaGVy",
        **used,
    }
    used["config"]["aws:region"] = "eu-west-1"
    (tmp_path / "Pulumi.used.yaml").write_text(yaml.safe_dump(used))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))
    return tmp_path


def stack_files(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(root.glob("Pulumi.*.yaml"))}


@pytest.mark.parametrize("template", ["dev", "prod", "used"])
def test_a_new_stack_is_the_template_with_its_cluster_named_after_it(
    project: Path, template: str
) -> None:
    result = runner.invoke(app, ["stack", "new", "ci-1234567890-2", "--from", template])

    assert result.exit_code == 0, result.output
    assert "Pulumi.ci-1234567890-2.yaml written" in result.stdout
    assert "kubesmith up -s ci-1234567890-2" in result.stdout
    copy = load_spec("ci-1234567890-2", project)
    original = load_spec(template, project)
    assert copy.name == "ci-1234567890-2"
    # The cluster's name is the only setting that differs: AWS resources are named after it.
    assert copy.model_dump(exclude={"name"}) == original.model_dump(exclude={"name"})
    written = yaml.safe_load((project / "Pulumi.ci-1234567890-2.yaml").read_text())
    source = yaml.safe_load((project / f"Pulumi.{template}.yaml").read_text())
    # Pulumi's per-stack key material stays with the template; the rest travels.
    assert "encryptionsalt" not in written
    assert {k: v for k, v in source.items() if k not in ("encryptionsalt", "config")} == {
        k: v for k, v in written.items() if k != "config"
    }
    assert {k: v for k, v in source["config"].items() if k != "kubesmith:cluster"} == {
        k: v for k, v in written["config"].items() if k != "kubesmith:cluster"
    }
    # A file a person may commit: it passes the project's own YAML lint.
    yamllint = Path(sys.executable).parent / "yamllint"
    config = REPO / ".yamllint.yml"
    lint = subprocess.run(
        [str(yamllint), "-s", "-c", str(config), str(project / "Pulumi.ci-1234567890-2.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dev", "--from", "prod"], "error: Pulumi.dev.yaml already exists"),
        (["ci-1", "--from", "nosuch"], "error: Pulumi.nosuch.yaml: no such stack file"),
        (
            ["CI_1", "--from", "dev"],
            "error: stack name 'CI_1' cannot name its cluster: kubesmith:cluster.name: "
            "must be a DNS-1123 label",
        ),
        (
            ["ci-" + "9" * 38, "--from", "dev"],
            f"error: stack name 'ci-{'9' * 38}' cannot name its cluster",
        ),
        (["ci/1", "--from", "dev"], "error: stack name 'ci/1' may only hold letters"),
        (
            ["ci-1", "--from", "local"],
            "error: Pulumi.local.yaml is an LXD stack: its bridge and subnet",
        ),
    ],
    ids=["exists", "unknown-source", "invalid-name", "too-long", "path", "lxd"],
)
def test_stack_new_refuses_in_one_line_and_writes_nothing(
    project: Path, args: list[str], message: str
) -> None:
    before = stack_files(project)
    result = runner.invoke(app, ["stack", "new", *args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert stack_files(project) == before


def test_a_template_with_secrets_is_refused_naming_them(project: Path) -> None:
    document = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())
    document["config"]["kubesmith:token"] = {"secure": "v1:abc"}
    document["config"]["kubesmith:cluster"]["apps"][0]["values"] = {"key": {"secure": "v1:x"}}
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))

    result = runner.invoke(app, ["stack", "new", "ci-7", "--from", "dev"])

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: Pulumi.dev.yaml holds secrets (kubesmith:cluster.apps[0].values.key, "
        "kubesmith:token) encrypted with its own key; a copy cannot decrypt them"
    )
    assert not (project / "Pulumi.ci-7.yaml").exists()


def test_an_invalid_template_is_reported_as_the_template_s_problem(project: Path) -> None:
    text = (project / "Pulumi.dev.yaml").read_text().replace("workers: 2", "workers: -1")
    (project / "Pulumi.dev.yaml").write_text(text)
    result = runner.invoke(app, ["stack", "new", "ci-8", "--from", "dev"])
    assert result.exit_code == 2
    assert "kubesmith:cluster.workers" in result.stderr
    assert not (project / "Pulumi.ci-8.yaml").exists()


# --- stack sweep ------------------------------------------------------------------------

NOW = datetime.now(UTC)


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return NOW.astimezone(tz) if tz else NOW


def listed(name: str, *, age: timedelta | None, running: bool = False) -> dict[str, Any]:
    """One entry of `pulumi stack ls --json` as the CLI prints it."""
    entry: dict[str, Any] = {"name": name, "current": False, "updateInProgress": running}
    if age is not None:
        stamp = (NOW - age).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        entry |= {"lastUpdate": stamp, "resourceCount": 12}
    return entry


class FakeCli:
    """Stands in for auto.PulumiCommand: answers `stack ls --json`, records every call."""

    def __init__(self, stacks: list[dict[str, Any]], *, fail: str | None = None) -> None:
        self.stacks = stacks
        self.fail = fail
        self.calls: list[tuple[list[str], str, dict[str, str]]] = []

    def run(
        self, args: list[str], cwd: str, env: dict[str, str], *_: Any, **__: Any
    ) -> CommandResult:
        self.calls.append((args, cwd, dict(env)))
        assert args == ["stack", "ls", "--json"], args
        if self.fail:
            raise auto.CommandError(CommandResult("", f"warning: x\n{self.fail}\n", 255))
        return CommandResult(json.dumps(self.stacks), "", 0)


STACKS = [
    listed("ci-100-1", age=timedelta(hours=7)),
    listed("organization/kubesmith/ci-101-1", age=timedelta(hours=30)),
    listed("ci-102-1", age=timedelta(hours=1)),
    listed("ci-103-1", age=timedelta(hours=9), running=True),
    listed("ci-104-1", age=None),
    listed("prod", age=timedelta(days=40)),
    listed("dev-ci-105", age=timedelta(days=40)),
]


@pytest.fixture
def swept(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CLI stand-in and the recorded destroys of a sweep in the repository's project."""
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://state-bucket/kubesmith")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-the-secret")
    # The sweep's clock is the listing's: ages print exactly, however slow the machine.
    monkeypatch.setattr("kubesmith.cli.stack.datetime", _FrozenClock)
    record: dict[str, Any] = {"cli": FakeCli(STACKS), "tools": [], "destroyed": []}

    def pulumi_command(root: Path, mirror: str | None, *_: Any, plugins: bool) -> FakeCli:
        record["tools"].append((root, mirror, plugins))
        cli: FakeCli = record["cli"]
        return cli

    def destroy(stack: str, root: Path, command: Any, _echo: Any, *, remove: bool) -> None:
        assert command is record["cli"]
        if stack in record.get("failing", ()):
            raise KubesmithError(f"pulumi destroy failed for stack {stack!r} (output above)")
        record["destroyed"].append((stack, root, remove))

    monkeypatch.setattr(automation, "pulumi_command", pulumi_command)
    monkeypatch.setattr(automation, "destroy", destroy)
    for name in ("ci-100-1", "ci-101-1", "ci-102-1", "ci-103-1"):
        (stack_dir(name) / "pod-cidrs.json").write_text("{}")
    return record


def state_left() -> list[str]:
    return sorted(p.name for p in stack_dir("x").parent.iterdir() if p.name != "x")


def test_sweep_destroys_and_removes_only_stale_prefixed_stacks(swept: dict[str, Any]) -> None:
    result = runner.invoke(app, ["stack", "sweep", "--prefix", "ci-", "--older-than", "6h"])

    assert result.exit_code == 0, result.output
    assert swept["destroyed"] == [
        ("ci-100-1", REPO, True),
        ("organization/kubesmith/ci-101-1", REPO, True),
    ]
    # Plugins are installed (the AWS provider deletes the machines); no mirror without a stack.
    assert swept["tools"] == [(REPO, None, True)]
    # The destroyed stacks' controller state is gone; a running or recent stack's is kept.
    assert state_left() == ["ci-102-1", "ci-103-1"]
    lines = result.stdout.splitlines()
    assert "ci-100-1: destroying (last update 7h00m ago)" in lines
    assert "ci-101-1: destroying (last update 30h00m ago)" in lines
    assert "ci-102-1: kept (recent, 1h00m ago)" in lines
    assert "ci-103-1: kept (an update is running, 9h00m ago)" in lines
    assert "ci-104-1: kept (never updated, age unknown)" in lines
    assert not any("prod" in line or "dev-ci" in line for line in lines)
    assert lines[-1] == "sweep ci-* older than 6h: destroyed 2, kept 3"
    # The stack listing went to the configured backend with the configured passphrase.
    ((_, cwd, env),) = swept["cli"].calls
    assert cwd == str(REPO)
    assert env["PULUMI_BACKEND_URL"] == "s3://state-bucket/kubesmith"
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in env


def test_a_dry_run_lists_and_changes_nothing(swept: dict[str, Any]) -> None:
    result = runner.invoke(
        app, ["stack", "sweep", "--prefix", "ci-", "--older-than", "8h", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert swept["destroyed"] == []
    assert swept["tools"] == [(REPO, None, False)], "no plugins needed to list"
    assert state_left() == ["ci-100-1", "ci-101-1", "ci-102-1", "ci-103-1"]
    assert "ci-100-1: kept (recent, 7h00m ago)" in result.stdout
    assert "ci-101-1: would destroy (last update 30h00m ago)" in result.stdout
    assert result.stdout.splitlines()[-1] == "sweep ci-* older than 8h: would destroy 1, kept 4"


def test_one_failed_destroy_does_not_stop_the_sweep(swept: dict[str, Any]) -> None:
    swept["failing"] = {"ci-100-1"}
    result = runner.invoke(app, ["stack", "sweep", "--prefix", "ci-", "--older-than", "6h"])
    assert result.exit_code == 1
    assert swept["destroyed"] == [("organization/kubesmith/ci-101-1", REPO, True)]
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "error: sweep: 1 of 2 stale stacks not destroyed: ci-100-1 (pulumi destroy failed "
        "for stack 'ci-100-1' (output above))"
    )
    assert "ci-100-1" in state_left(), "its state is kept for the next try"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix", "ci-", "--older-than", "6x"], "--older-than '6x': expected a number"),
        (["--prefix", "ci-", "--older-than", "0h"], "--older-than '0h': expected a number"),
        (["--prefix", "", "--older-than", "6h"], "--prefix '': an empty prefix"),
    ],
)
def test_bad_sweep_arguments_fail_in_one_line_before_pulumi(
    swept: dict[str, Any], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["stack", "sweep", *args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: " + message), line
    assert swept["tools"] == []


def test_a_failing_stack_listing_is_one_line_with_pulumi_s_reason(
    swept: dict[str, Any],
) -> None:
    swept["cli"] = FakeCli([], fail="error: failed to load checkpoint: access denied")
    result = runner.invoke(app, ["stack", "sweep", "--prefix", "ci-", "--older-than", "6h"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: pulumi stack ls failed: error: failed to load checkpoint: access denied"
    )
    assert swept["destroyed"] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("6h", timedelta(hours=6)),
        (" 2d", timedelta(days=2)),
    ],
)
def test_ages(text: str, expected: timedelta) -> None:
    assert sweep.parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "6", "h", "-6h", "6 h", "1.5h", "6w", "0d"])
def test_bad_ages(text: str) -> None:
    with pytest.raises(UserError, match="expected a number and a unit"):
        sweep.parse_age(text)


def test_the_age_limit_is_exclusive_and_timestamps_are_utc() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    stacks = [
        auto.StackSummary("ci-a", False, False, datetime(2026, 11, 30, 6, 0)),  # naive = UTC
        auto.StackSummary("ci-b", False, False, datetime(2026, 11, 30, 5, 59, tzinfo=UTC)),
    ]
    found = sweep.candidates(stacks, "ci-", timedelta(hours=6), now)
    assert [(c.short_name, c.stale) for c in found] == [("ci-a", False), ("ci-b", True)]
