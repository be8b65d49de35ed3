"""The per-stack SSH key: created once, private half 0600, stable across runs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kubesmith.errors import KubesmithError
from kubesmith.state.sshkeys import ensure_key, stack_key


def test_key_is_created_once_with_private_mode(tmp_path: Path) -> None:
    first = ensure_key(tmp_path / "ssh", comment="kubesmith-t")
    assert stat.S_IMODE(first.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ssh").stat().st_mode) == 0o700
    assert first.public_key.startswith("ssh-ed25519 ")
    assert first.public_key.endswith(" kubesmith-t")
    assert first.public_path.read_text().strip() == first.public_key
    again = ensure_key(tmp_path / "ssh", comment="kubesmith-t")
    assert again == first


def test_public_half_matches_the_private_half(tmp_path: Path) -> None:
    pair = ensure_key(tmp_path, comment="c")
    private = serialization.load_ssh_private_key(pair.private_path.read_bytes(), password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert pair.public_key.split()[:2] == public.decode().split()


def test_lost_public_half_is_rewritten_from_the_private_key(tmp_path: Path) -> None:
    pair = ensure_key(tmp_path, comment="c")
    pair.public_path.unlink()
    assert ensure_key(tmp_path, comment="c").public_key == pair.public_key
    assert pair.public_path.exists()


def test_world_readable_private_key_is_refused(tmp_path: Path) -> None:
    pair = ensure_key(tmp_path, comment="c")
    pair.private_path.chmod(0o644)
    with pytest.raises(KubesmithError, match="chmod 600"):
        ensure_key(tmp_path, comment="c")


def test_stack_keys_live_in_the_state_dir_per_stack(isolated_home: Path) -> None:
    local = stack_key("local")
    dev = stack_key("dev")
    assert local.private_path.is_relative_to(isolated_home)
    assert local.public_key != dev.public_key
    assert stack_key("local") == local
