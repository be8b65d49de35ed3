"""`kubesmith --quiet`: progress goes, results and errors stay (fake builds and Pulumi runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.cli import image as image_cli
from kubesmith.errors import KubesmithError
from kubesmith.local.image import BuildResult
from kubesmith.program import automation
from kubesmith.progress import Reporter
from kubesmith.spec import ClusterSpec

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _fake_build(fail: bool = False) -> Any:
    def build(
        _client: object, spec: ClusterSpec, *, reporter: Reporter, **_: object
    ) -> BuildResult:
        assert spec.lxd is not None
        alias = spec.lxd.image
        reporter.note(f"node image {alias}: inputs changed; building")
        reporter.phase("debootstrap bookworm", 1, 4)
        reporter.detail("retrieved 87 packages")
        if fail:
            raise KubesmithError("node image: debootstrap failed (exit 1): E: no space")
        reporter.phase("import into LXD", 4, 4)
        return BuildResult(alias, "f" * 64, "a" * 64, True, 113.0)

    return build


@pytest.fixture
def fake_lxd(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("KUBESMITH_QUIET", raising=False)
    monkeypatch.setattr(image_cli, "connect", lambda: object())
    return monkeypatch


def test_progress_shows_phases_on_stderr_and_the_result_on_stdout(
    fake_lxd: pytest.MonkeyPatch,
) -> None:
    fake_lxd.setattr(image_cli, "build_stack_image", _fake_build())
    result = runner.invoke(app, ["image", "build"])
    assert result.exit_code == 0, result.output
    assert "node image kubesmith-node: inputs changed; building (" in result.stderr
    assert "[1/4] debootstrap bookworm\n" in result.stderr
    assert "[1/4] debootstrap bookworm: retrieved 87 packages (" in result.stderr
    assert "[4/4] import into LXD (" in result.stderr
    assert result.stdout.startswith("image kubesmith-node: built in 1m53s (fingerprint ffff")


@pytest.mark.parametrize("how", [["--quiet"], ["-q"], "KUBESMITH_QUIET=1"])
def test_quiet_keeps_only_the_result(fake_lxd: pytest.MonkeyPatch, how: list[str] | str) -> None:
    fake_lxd.setattr(image_cli, "build_stack_image", _fake_build())
    if isinstance(how, str):
        fake_lxd.setenv(*how.split("="))
        how = []
    result = runner.invoke(app, [*how, "image", "build"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.startswith("image kubesmith-node: built in 1m53s")
    # The next command without it shows progress again (one process, as in tests).
    fake_lxd.delenv("KUBESMITH_QUIET", raising=False)
    assert "[1/4] debootstrap bookworm" in runner.invoke(app, ["image", "build"]).stderr


def test_quiet_keeps_errors(fake_lxd: pytest.MonkeyPatch) -> None:
    fake_lxd.setattr(image_cli, "build_stack_image", _fake_build(fail=True))
    result = runner.invoke(app, ["--quiet", "image", "build"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: node image: debootstrap failed (exit 1): E: no space"
    ]


def test_without_quiet_a_failed_phase_says_so_before_the_error(
    fake_lxd: pytest.MonkeyPatch,
) -> None:
    fake_lxd.setattr(image_cli, "build_stack_image", _fake_build(fail=True))
    result = runner.invoke(app, ["image", "build"])
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("[1/4] debootstrap bookworm: failed after ")
    assert lines[-1] == "error: node image: debootstrap failed (exit 1): E: no space"


@pytest.mark.parametrize("quiet", [False, True])
def test_pulumi_lines_are_progress_too(monkeypatch: pytest.MonkeyPatch, quiet: bool) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    monkeypatch.delenv("KUBESMITH_QUIET", raising=False)
    # The CLI and plugins are someone else's test (tests/test_pulumi_tools.py).
    monkeypatch.setattr(automation, "pulumi_command", lambda *_args, **_kw: object())

    def up(
        _stack: str, _root: Path, _command: object, on_line: Callable[[str], None]
    ) -> dict[str, Any]:
        on_line(" +  aws:ec2:Instance dev-cp-1 creating (3s) [bold]")
        return {"nodes": [{}], "apiEndpoint": "https://10.20.0.4:6443"}

    monkeypatch.setattr(automation, "up", up)
    result = runner.invoke(app, [*(["-q"] if quiet else []), "up", "-s", "dev"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("stack dev is up: 1 nodes")
    expected = "" if quiet else " +  aws:ec2:Instance dev-cp-1 creating (3s) [bold]\n"
    assert result.stderr == expected
