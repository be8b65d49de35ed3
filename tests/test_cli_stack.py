"""`kubesmith preview|up|destroy|inventory` and the Automation API glue behind them.

No Pulumi CLI exists on the development machines: getting one (kubesmith.downloads.pulumi) is
tested in tests/test_pulumi_tools.py; here the offline path runs for real (against a closed
loopback port) and the Automation API is replaced by recorders only to check what kubesmith
asks of it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.cli import stack as stack_cli
from kubesmith.errors import KubesmithError, UserError
from kubesmith.program import automation
from kubesmith.state import sshkeys
from kubesmith.state.paths import stack_dir
from tests.conftest import REPO
from tests.pulumi_tools import offline_pulumi_urls

runner = CliRunner()
COMMANDS = (["preview"], ["up"], ["destroy", "--yes"], ["inventory"])


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)


class FakeCommand:
    """Stands in for auto.PulumiCommand: nothing here can run a real Pulumi CLI."""


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> str:
    """No `pulumi` on PATH, and every Pulumi download URL a closed port on 127.0.0.1."""
    monkeypatch.setattr(automation.shutil, "which", lambda _name: None)
    return offline_pulumi_urls(monkeypatch)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Pretend the CLI is ready and record the automation calls the commands make."""
    recorded: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(name: str, result: Any) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            recorded.append((name, args, kwargs))
            return result

        return record

    monkeypatch.setattr(automation, "pulumi_command", recorder("pulumi_command", COMMAND))
    summary = automation.PreviewSummary({"create": 1, "update": 1}, ["dev-worker-3: new node"])
    monkeypatch.setattr(automation, "preview", recorder("preview", summary))
    monkeypatch.setattr(
        automation,
        "up",
        recorder("up", {"nodes": [{}, {}, {}], "apiEndpoint": "https://10.20.0.4:6443"}),
    )
    monkeypatch.setattr(automation, "destroy", recorder("destroy", None))
    monkeypatch.setattr(
        automation, "stack_output", recorder("stack_output", "all:\n  vars: {x: '[bold]'}\n")
    )
    return recorded


COMMAND = FakeCommand()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_offline_without_the_pulumi_cli_commands_fail_in_one_line(
    command: list[str], offline: str
) -> None:
    result = runner.invoke(app, [*command, "-s", "dev"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot download pulumi")
    assert f"from {offline}/" in line
    assert "set kubesmith:cluster.artifacts.mirrorBaseUrl to a mirror" in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_config_errors_show_first_and_nothing_reaches_pulumi(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[Any]
) -> None:
    cluster = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["kubesmith:cluster"]
    cluster["controlPlanes"] = 2
    (tmp_path / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(
        yaml.safe_dump({"config": {"kubesmith:cluster": cluster}})
    )
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))

    result = runner.invoke(app, [*command, "-s", "dev"])
    assert result.exit_code == 2
    assert "kubesmith:cluster.controlPlanes: must be 1 or an odd number" in result.stderr
    assert calls == [], "nothing reached Pulumi"

    # Offline and without the CLI, the config problem is still what the user sees first.
    monkeypatch.setattr(automation.shutil, "which", lambda _name: None)
    offline_pulumi_urls(monkeypatch)
    result = runner.invoke(app, [*command, "-s", "dev"])
    assert "kubesmith:cluster.controlPlanes" in result.stderr
    assert "cannot download" not in result.stderr


@pytest.mark.usefixtures("offline")
def test_an_unknown_stack_is_named_before_pulumi_is_needed() -> None:
    result = runner.invoke(app, ["up", "-s", "nosuch"])
    assert result.exit_code == 2
    assert "Pulumi.nosuch.yaml: no such stack file" in result.stderr


def test_destroy_without_yes_and_without_a_terminal_refuses(calls: list[Any]) -> None:
    result = runner.invoke(app, ["destroy", "-s", "dev"])
    assert result.exit_code == 2
    assert "refusing to destroy stack 'dev' without --yes" in result.stderr
    assert calls == [], "refused before anything is downloaded"


@pytest.mark.parametrize("remove", [False, True])
def test_destroy_with_yes_destroys_and_removes_on_request(calls: list[Any], remove: bool) -> None:
    # What a provisioned stack keeps on the controller, and another stack's state.
    pods = stack_dir("dev") / "pod-cidrs.json"
    pods.write_text("{}")
    key = sshkeys.stack_key("dev").private_path
    other = sshkeys.stack_key("prod").private_path

    result = runner.invoke(
        app, ["destroy", "-s", "dev", "--yes", *(["--remove"] if remove else [])]
    )

    assert result.exit_code == 0, result.output
    (tools, (name, args, kwargs)) = calls
    assert tools[0] == "pulumi_command"
    assert tools[2]["plugins"] is True
    assert (name, args[:3], kwargs) == ("destroy", ("dev", REPO, COMMAND), {"remove": remove})
    assert pods.exists() is not remove
    assert key.exists() is not remove
    assert other.exists()
    said = " ".join(result.stdout.split())
    if remove:
        assert f"its state in {pods.parent} is deleted" in said
    else:
        assert f"kept in {pods.parent}" in said


@pytest.mark.parametrize(("answer", "destroyed"), [("n\n", False), ("y\n", True)])
def test_destroy_at_a_terminal_asks_first(
    calls: list[Any], monkeypatch: pytest.MonkeyPatch, answer: str, destroyed: bool
) -> None:
    monkeypatch.setattr(stack_cli, "_stdin_is_terminal", lambda: True)
    result = runner.invoke(app, ["destroy", "-s", "dev"], input=answer)
    assert "Destroy every resource of stack 'dev'?" in result.output
    assert [c[0] for c in calls] == (["pulumi_command", "destroy"] if destroyed else [])
    removing = runner.invoke(app, ["destroy", "-s", "dev", "--remove"], input="n\n")
    assert "its Pulumi stack and its controller state" in removing.output
    assert result.exit_code == (0 if destroyed else 1)


def test_confirm_destroy_rules() -> None:
    asked: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return False

    assert stack_cli.confirm_destroy("prod", yes=True, interactive=False, ask=ask) is True
    assert stack_cli.confirm_destroy("prod", yes=False, interactive=True, ask=ask) is False
    assert asked == ["Destroy every resource of stack 'prod'?"]
    with pytest.raises(UserError, match="--yes"):
        stack_cli.confirm_destroy("prod", yes=False, interactive=False, ask=ask)


def test_inventory_prints_the_output_verbatim(calls: list[Any]) -> None:
    result = runner.invoke(app, ["inventory", "-s", "dev"])
    assert result.exit_code == 0
    # Exactly the YAML: no console markup ("[bold]" survives), no added newline.
    assert result.stdout == "all:\n  vars: {x: '[bold]'}\n"
    # The inventory is a stack output: no provider plugin is needed for it.
    assert calls[0][2]["plugins"] is False
    assert calls[1][1] == ("dev", REPO, COMMAND, "inventory")


def test_up_and_preview_report_a_summary(calls: list[Any]) -> None:
    up = runner.invoke(app, ["up", "-s", "dev"])
    assert up.exit_code == 0
    # The stack's own mirror setting (none in dev) reaches the CLI and plugin installs.
    assert calls[0][1][:2] == (REPO, None)
    assert calls[0][2]["plugins"] is True
    assert calls[1][1][2] is COMMAND
    assert "stack dev is up: 3 nodes, API at https://10.20.0.4:6443" in up.stdout
    preview = runner.invoke(app, ["preview", "-s", "dev"])
    assert "stack dev: 1 to create, 1 to update" in preview.stdout
    # provisioning's hosts and why, one line each (kubesmith.program.hostdiff)
    assert "provisioning, host by host:\n  dev-worker-3: new node\n" in preview.stdout


# -- the environment Pulumi gets ---------------------------------------------------------


def test_default_backend_is_a_private_file_backend_in_the_state_dir(tmp_path: Path) -> None:
    url = automation.backend_url(tmp_path, {})
    assert url == f"file://{tmp_path.resolve()}/pulumi"
    assert stat.S_IMODE((tmp_path / "pulumi").stat().st_mode) == 0o700


def test_pulumi_backend_url_overrides_the_default(tmp_path: Path) -> None:
    assert automation.backend_url(tmp_path, {"PULUMI_BACKEND_URL": "s3://bucket/kubesmith"}) == (
        "s3://bucket/kubesmith"
    )
    assert not (tmp_path / "pulumi").exists()


def test_a_passphrase_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    env = automation.passphrase_env(tmp_path, {})
    path = tmp_path / automation.PASSPHRASE_FILE
    assert env == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert len(first.strip()) >= 40
    assert automation.passphrase_env(tmp_path, {}) == env
    assert path.read_text() == first, "the same passphrase on every run, or state is unreadable"


@pytest.mark.parametrize(
    "environ",
    [
        {"PULUMI_CONFIG_PASSPHRASE": "s3cret"},
        {"PULUMI_CONFIG_PASSPHRASE": ""},
        {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/secrets/pulumi"},
    ],
)
def test_a_passphrase_the_user_set_wins(tmp_path: Path, environ: dict[str, str]) -> None:
    assert automation.passphrase_env(tmp_path, environ) == {}
    assert not (tmp_path / automation.PASSPHRASE_FILE).exists()


def test_a_readable_passphrase_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / automation.PASSPHRASE_FILE
    path.write_text("x\n")
    path.chmod(0o644)
    with pytest.raises(KubesmithError, match="readable by others") as failed:
        automation.passphrase_env(tmp_path, {})
    assert str(path) in failed.value.message


def test_pulumi_env_combines_backend_and_passphrase(tmp_path: Path) -> None:
    env = automation.pulumi_env(tmp_path, {})
    assert env["PULUMI_BACKEND_URL"].startswith("file://")
    assert env["PULUMI_CONFIG_PASSPHRASE_FILE"] == str(tmp_path / automation.PASSPHRASE_FILE)
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    # The dynamic providers' process (which forks ansible-runner's children) without gRPC's
    # fork support (tests/integration/test_pulumi_up.py runs its provider server so).
    assert env["GRPC_ENABLE_FORK_SUPPORT"] == "false"
    # Pulumi looks for plugins where kubesmith installed them.
    assert env["PULUMI_HOME"] == str(Path.home() / ".pulumi")
    assert automation.pulumi_env(tmp_path, {"PULUMI_HOME": "/srv/p"})["PULUMI_HOME"] == "/srv/p"


# -- what kubesmith asks of the Automation API (the API itself cannot run here) -----------


class FakeWorkspace:
    def __init__(self) -> None:
        self.removed: list[tuple[str, dict[str, Any]]] = []

    def remove_stack(self, name: str, **kwargs: Any) -> None:
        self.removed.append((name, kwargs))


class FakeStack:
    def __init__(self, outputs: dict[str, Any] | None = None) -> None:
        self.workspace = FakeWorkspace()
        self.destroyed: list[dict[str, Any]] = []
        self._outputs = outputs or {}

    def destroy(self, **kwargs: Any) -> None:
        self.destroyed.append(kwargs)

    def outputs(self) -> dict[str, auto.OutputValue]:
        return {k: auto.OutputValue(v, secret=False) for k, v in self._outputs.items()}


@dataclass
class Opened:
    """What the fake Automation API was asked to open, and the stacks it handed out."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    created: FakeStack = field(default_factory=FakeStack)
    selected: FakeStack = field(default_factory=lambda: FakeStack({"inventory": "all: {}\n"}))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Opened:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    record = Opened()

    def opener(create: bool, stack: FakeStack) -> Any:
        def open_(name: str, work_dir: str, opts: auto.LocalWorkspaceOptions) -> FakeStack:
            record.calls.append(
                {"create": create, "name": name, "work_dir": work_dir, "opts": opts}
            )
            return stack

        return open_

    monkeypatch.setattr(auto, "create_or_select_stack", opener(True, record.created))
    monkeypatch.setattr(auto, "select_stack", opener(False, record.selected))
    return record


def test_open_stack_uses_the_project_and_the_private_state(opened: Opened) -> None:
    automation.open_stack("dev", REPO, COMMAND, create=True)
    (call,) = opened.calls
    assert (call["create"], call["name"], call["work_dir"]) == (True, "dev", str(REPO))
    opts = call["opts"]
    assert opts.pulumi_command is COMMAND, "the CLI kubesmith chose, not PATH's"
    assert opts.secrets_provider == "passphrase"
    assert opts.env_vars["PULUMI_BACKEND_URL"].endswith("/home/pulumi")
    assert opts.env_vars["PULUMI_CONFIG_PASSPHRASE_FILE"].endswith("/home/pulumi-passphrase")


@pytest.mark.parametrize("remove", [False, True])
def test_destroy_streams_and_removes_only_the_state(opened: Opened, remove: bool) -> None:
    def echo(line: str) -> None:
        del line

    automation.destroy("dev", REPO, COMMAND, echo, remove=remove)
    assert opened.calls[0]["create"] is False, "destroy never creates a stack"
    assert opened.selected.destroyed == [{"on_output": echo, "on_error": echo}]
    # preserve_config: Pulumi.dev.yaml stays, it is the project's source of truth.
    expected = [("dev", {"preserve_config": True})] if remove else []
    assert opened.selected.workspace.removed == expected


@pytest.mark.usefixtures("opened")
def test_stack_output_reads_an_existing_stack() -> None:
    assert automation.stack_output("dev", REPO, COMMAND, "inventory") == "all: {}\n"
    with pytest.raises(UserError, match="has no 'nodes' output yet"):
        automation.stack_output("dev", REPO, COMMAND, "nodes")


def test_a_missing_stack_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path))

    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise auto.StackNotFoundError(auto.CommandResult("", "no stack named 'dev' found", 255))

    monkeypatch.setattr(auto, "select_stack", missing)
    with pytest.raises(UserError, match="stack 'dev' does not exist") as failed:
        automation.stack_output("dev", REPO, COMMAND, "inventory")
    assert failed.value.hint == "create it with: kubesmith up -s dev"
