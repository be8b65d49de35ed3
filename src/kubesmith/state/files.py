"""Writing and checking the controller's state files: one writer, one private-file check.

Every file kubesmith keeps across runs (keys, certificates, kubeconfigs, the encryption
configuration, records) is written here: through a temporary file created with its final
mode, then renamed, so it is never partly written and never, even briefly, wider than asked.
Files that hold a secret are checked before use: readable by anyone but the owner is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubesmith.errors import KubesmithError


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode``: never partly written, never wider."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def check_private(path: Path, what: str) -> None:
    """Refuse a secret-holding file that others may read (``what`` says what it holds)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KubesmithError(
            f"{path}: {what} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
