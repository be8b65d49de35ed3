"""Pinned host keys (accept-new) in an OpenSSH known_hosts file, and bounded SSH waits."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from kubesmith.errors import KubesmithError
from kubesmith.local.ssh import HostKeyMismatchError, KnownHosts, wait_for_ssh


@pytest.fixture(scope="module")
def keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


def test_first_contact_is_learnt_in_a_private_file(
    tmp_path: Path, keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    known = KnownHosts(tmp_path / "lab" / "known_hosts")
    known.learn("10.203.0.5", keys[0])
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600
    assert known.load().lookup("10.203.0.5") == {keys[0].get_name(): keys[0]}
    # Learning the same key again changes nothing.
    before = known.path.read_text()
    known.learn("10.203.0.5", keys[0])
    assert known.path.read_text() == before


def test_a_different_key_for_a_pinned_host_is_refused(
    tmp_path: Path, keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    known.learn("10.203.0.5", keys[0])
    with pytest.raises(HostKeyMismatchError, match=r"10\.203\.0\.5"):
        known.learn("10.203.0.5", keys[1])
    assert known.load().lookup("10.203.0.5") == {keys[0].get_name(): keys[0]}


def test_forget_drops_only_the_named_hosts(
    tmp_path: Path, keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    known.learn("10.203.0.5", keys[0])
    known.learn("10.203.0.6", keys[1])
    known.forget(["10.203.0.5", "10.203.0.99"])
    assert known.load().lookup("10.203.0.5") is None
    assert known.load().lookup("10.203.0.6") is not None
    # A re-created node may now be learnt with its new key.
    known.learn("10.203.0.5", keys[1])


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_openssh_reads_the_file(tmp_path: Path, keys: tuple[paramiko.PKey, paramiko.PKey]) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    known.learn("10.203.0.5", keys[0])
    found = subprocess.run(
        ["ssh-keygen", "-F", "10.203.0.5", "-f", str(known.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0
    assert keys[0].get_base64() in found.stdout


def test_waiting_for_a_node_that_never_answers_ends_with_its_name(
    tmp_path: Path, keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    with pytest.raises(
        KubesmithError, match=r"node t-node-1 \(127\.0\.0\.1\): SSH as root not ready after 1 s"
    ):
        # Nothing listens on loopback port 22 here: every attempt is refused.
        wait_for_ssh(
            "t-node-1",
            "127.0.0.1",
            user="root",
            key=keys[0],
            known_hosts=KnownHosts(tmp_path / "known_hosts"),
            timeout=1,
        )
