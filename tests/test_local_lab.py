"""Lab settings and the CLI's answers when LXD is not there (no daemon needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import UserError
from kubesmith.local.connection import SOCKET_ENV, LxdUnavailableError, connect
from kubesmith.local.lab import check_lab_name, lab_spec
from kubesmith.stackfile import load_spec

REPO = Path(__file__).resolve().parents[1]


def test_lab_spec_is_the_stack_spec_with_the_labs_name_and_counts() -> None:
    base = load_spec("local", REPO)
    spec = lab_spec(base, "t-abc", 3, 1)
    assert (spec.name, spec.control_planes, spec.workers) == ("t-abc", 3, 1)
    assert spec.lxd == base.lxd
    assert spec.kubernetes_version == base.kubernetes_version
    assert spec.pod_cidr == base.pod_cidr


def test_lab_counts_are_checked_and_reported_by_their_option() -> None:
    base = load_spec("local", REPO)
    with pytest.raises(UserError, match=r"^--control-planes: must be 1 or an odd number"):
        lab_spec(base, "t-abc", 2, 0)
    with pytest.raises(UserError, match=r"^--workers: must be >= 0"):
        lab_spec(base, "t-abc", 1, -1)


@pytest.mark.parametrize("name", ["", "Lab", "lab_1", "-lab", "../etc", "x" * 41])
def test_lab_names_must_be_usable_as_node_name_prefixes(name: str) -> None:
    with pytest.raises(UserError, match="lab name"):
        check_lab_name(name)


def test_lxd_not_running_is_one_line_naming_the_socket(tmp_path: Path) -> None:
    socket = tmp_path / "missing" / "unix.socket"
    with pytest.raises(LxdUnavailableError, match=f"no socket at {socket}"):
        connect(socket)


def test_lxd_socket_that_does_not_answer_is_named(tmp_path: Path) -> None:
    socket = tmp_path / "unix.socket"
    socket.write_text("", encoding="utf-8")  # exists, but nothing listens
    with pytest.raises(LxdUnavailableError, match=f"LXD at {socket} does not answer"):
        connect(socket)


@pytest.mark.parametrize(
    "command", [["lab", "up", "t-x"], ["lab", "down", "t-x"], ["image", "build"]]
)
def test_cli_without_lxd_exits_1_with_one_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "unix.socket"))
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: LXD is not running: no socket at {tmp_path / 'unix.socket'}"
    assert lines[1].startswith("hint: run: kubesmith lxd init")
    assert "Traceback" not in result.output


def test_cli_refuses_a_stack_that_is_not_lxd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["lab", "up", "t-x", "-s", "dev"])
    assert result.exit_code == 2
    assert "the local backend needs a stack with backend: lxd" in result.stderr
