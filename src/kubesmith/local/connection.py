"""Reach the LXD daemon, and mark what kubesmith creates in it.

Everything kubesmith creates in LXD carries the ``user.kubesmith.managed`` config key (or the
image property of the same meaning); nothing without it is ever changed or deleted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pylxd
from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

from kubesmith.errors import KubesmithError

#: Overrides where the LXD socket is (also useful to point tests at a daemon that is not there).
SOCKET_ENV = "KUBESMITH_LXD_SOCKET"
#: The Debian package's socket, then the snap's (a laptop with the LXD snap).
DEFAULT_SOCKETS = (Path("/var/lib/lxd/unix.socket"), Path("/var/snap/lxd/common/lxd/unix.socket"))

MANAGED_KEY = "user.kubesmith.managed"
LABEL_PREFIX = "user.kubesmith."
DESCRIPTION = "managed by kubesmith"


class LxdUnavailableError(KubesmithError):
    """The daemon is not installed, not running or does not answer."""


def socket_path() -> Path:
    """$KUBESMITH_LXD_SOCKET, else $LXD_DIR/unix.socket, else the first default that exists."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return Path(explicit)
    lxd_dir = os.environ.get("LXD_DIR")
    if lxd_dir:
        return Path(lxd_dir) / "unix.socket"
    return next((p for p in DEFAULT_SOCKETS if p.exists()), DEFAULT_SOCKETS[0])


def may_start_daemon(path: Path) -> bool:
    """True when ``path`` belongs to a daemon kubesmith may start: Debian's, or $LXD_DIR's.

    Never for an explicit $KUBESMITH_LXD_SOCKET nor for the snap, whose daemon snapd runs.
    """
    return SOCKET_ENV not in os.environ and path == socket_path() and path != DEFAULT_SOCKETS[1]


def connect(path: Path | None = None) -> pylxd.Client:
    """A client on the LXD unix socket, or a one-line error naming the socket.

    A client is cheap (one request); threads each make their own rather than share one.
    """
    path = path or socket_path()
    hint = "run: kubesmith lxd init -s STACK (installs and starts LXD)"
    if not path.exists():
        raise LxdUnavailableError(f"LXD is not running: no socket at {path}", hint=hint)
    try:
        # Probe first: pylxd leaks its socket when the connection is refused.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(10)
            probe.connect(str(path))
        return pylxd.Client(endpoint=str(path))
    except (ClientConnectionFailed, LXDAPIException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LxdUnavailableError(f"LXD at {path} does not answer: {reason}", hint=hint) from None


def labels(**values: str) -> dict[str, str]:
    """Config keys that mark an LXD object as kubesmith's, plus ``user.kubesmith.<key>`` labels."""
    keys = {MANAGED_KEY: "true"}
    keys.update({f"{LABEL_PREFIX}{key}": value for key, value in values.items()})
    return keys


def is_managed(config: Mapping[str, Any]) -> bool:
    return config.get(MANAGED_KEY) == "true"


def label(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(f"{LABEL_PREFIX}{key}")
    return str(value) if value is not None else None
