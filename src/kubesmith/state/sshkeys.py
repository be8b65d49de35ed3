"""The per-stack SSH key pair: ed25519, created once, private half 0600, never printed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubesmith.errors import KubesmithError
from kubesmith.state.files import check_private
from kubesmith.state.paths import stack_dir

KEY_NAME = "id_ed25519"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_key: str

    @property
    def public_path(self) -> Path:
        return self.private_path.with_suffix(".pub")


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _public_line(key: Ed25519PrivateKey, comment: str) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} {comment}"


def ensure_key(directory: Path, comment: str) -> KeyPair:
    """Load the key pair in ``directory``, creating it the first time."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / KEY_NAME
    public_path = private_path.with_suffix(".pub")
    if private_path.exists():
        check_private(private_path, "private key")
        loaded = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise KubesmithError(f"{private_path}: expected an ed25519 key")
        text = _public_line(loaded, comment)
        if not public_path.exists():
            public_path.write_text(text + "\n", encoding="utf-8")
        return KeyPair(private_path, text)

    key = Ed25519PrivateKey.generate()
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    text = _public_line(key, comment)
    public_path.write_text(text + "\n", encoding="utf-8")
    return KeyPair(private_path, text)


def stack_key(stack: str, root: Path | None = None) -> KeyPair:
    return ensure_key(stack_dir(stack, root) / "ssh", comment=f"kubesmith-{stack}")
