"""playbooks/library/kubesmith_files.py: the module every base role writes its files with.

Runs the module's functions on a temporary directory (the module's whole logic is local file
work; the roles' use of it over SSH is covered by tests/integration/test_provision.py).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO, load_plugin

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="module")
def files() -> ModuleType:
    return load_plugin(REPO / "playbooks" / "library" / "kubesmith_files.py", "kubesmith_files")


def _file(dest: Path, content: str, mode: str = "0644", **extra: str) -> dict[str, str]:
    spec = {"dest": str(dest), "content": content, "mode": mode, "owner": OWNER, "group": GROUP}
    return spec | extra


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_new_file_with_its_mode(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "etcd.conf.yml"
    assert files.converge_file(_file(dest, "name: a\n", "0600"), check=False)
    assert dest.read_text() == "name: a\n"
    assert _mode(dest) == 0o600
    # No temporary file is left next to it.
    assert [p.name for p in tmp_path.iterdir()] == ["etcd.conf.yml"]


def test_converged_file_is_left_alone(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    spec = _file(dest, "x = 1\n")
    files.converge_file(spec, check=False)
    inode = dest.stat().st_ino
    assert not files.converge_file(spec, check=False)
    assert dest.stat().st_ino == inode


def test_loosened_mode_is_corrected_without_rewriting(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "key.pem"
    spec = _file(dest, "secret\n", "0600")
    files.converge_file(spec, check=False)
    inode = dest.stat().st_ino
    dest.chmod(0o644)
    assert files.converge_file(spec, check=False)
    assert _mode(dest) == 0o600
    assert dest.stat().st_ino == inode


def test_changed_content_replaces_the_file(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    files.converge_file(_file(dest, "old\n"), check=False)
    assert files.converge_file(_file(dest, "new\n"), check=False)
    assert dest.read_text() == "new\n"


def test_check_mode_reports_without_writing(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    assert files.converge_file(_file(dest, "x\n"), check=True)
    assert not dest.exists()
    assert files.converge_directory(
        {"path": str(tmp_path / "d"), "mode": "0755", "owner": OWNER, "group": GROUP}, check=True
    )
    assert not (tmp_path / "d").exists()


def test_check_mode_takes_an_owner_still_to_be_created_as_a_change(
    files: ModuleType, tmp_path: Path
) -> None:
    """A role creates its service user in a task the check run only reports: the files and
    directories that user will own are changes then, and errors only in a real run."""
    spec = {"path": str(tmp_path / "d"), "mode": "0700", "owner": "no-such-user-kubesmith"}
    assert files._converges(files.converge_directory, spec | {"group": GROUP}, check=True)
    assert not (tmp_path / "d").exists()
    with pytest.raises(files.FileError, match="unknown owner or group"):
        files._converges(files.converge_directory, spec | {"group": GROUP}, check=False)


def test_rejected_content_keeps_the_old_file(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "config.toml"
    files.converge_file(_file(dest, "good\n"), check=False)
    bad = _file(dest, "bad\n", validate="grep -q good %s")
    with pytest.raises(files.FileError, match=r"config\.toml: new content rejected by `grep`"):
        files.converge_file(bad, check=False)
    assert dest.read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_accepted_content_is_validated_then_written(files: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "config.toml"
    assert files.converge_file(_file(dest, "good\n", validate="grep -q good %s"), check=False)
    assert dest.read_text() == "good\n"


def test_directory_is_created_with_its_mode_despite_the_umask(
    files: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "var" / "lib" / "etcd"
    spec = {"path": str(path), "mode": "0700", "owner": OWNER, "group": GROUP}
    previous = os.umask(0o077)
    try:
        assert files.converge_directory(spec | {"mode": "0775"}, check=False)
    finally:
        os.umask(previous)
    assert _mode(path) == 0o775
    assert files.converge_directory(spec, check=False)
    assert _mode(path) == 0o700
    assert not files.converge_directory(spec, check=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "rw-r--r--"}, r"a\.conf: mode 'rw-r--r--' is not octal"),
        ({"owner": "no-such-user-kubesmith"}, r"a\.conf: unknown owner or group"),
        ({"validate": "true"}, r"a\.conf: validate command must contain %s"),
    ],
)
def test_bad_arguments_name_the_file(
    files: ModuleType, tmp_path: Path, spec: dict[str, str], message: str
) -> None:
    with pytest.raises(files.FileError, match=message):
        files.converge_file(_file(tmp_path / "a.conf", "x\n") | spec, check=False)


def test_a_directory_in_the_way_is_an_error(files: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "a.conf").mkdir()
    with pytest.raises(files.FileError, match=r"a\.conf: exists and is not a regular file"):
        files.converge_file(_file(tmp_path / "a.conf", "x\n"), check=False)


def test_missing_parent_directory_is_an_error(files: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(files.FileError, match=r"does not exist"):
        files.converge_file(_file(tmp_path / "nope" / "a.conf", "x\n"), check=False)
