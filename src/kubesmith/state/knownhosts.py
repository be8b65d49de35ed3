"""A known_hosts file of pinned SSH host keys (OpenSSH format), kept per stack or lab.

Connections learn a host's key on first contact (kubesmith.local.ssh, Ansible with
accept-new) and check it on every later one; an address handed to a new machine, or a node
removed for good (`kubesmith node remove`), is forgotten here so the next machine with that
address starts clean.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import paramiko

from kubesmith.errors import KubesmithError


class HostKeyMismatchError(KubesmithError):
    """A node presented a host key other than the pinned one."""


class KnownHosts:
    """One known_hosts file. Threads of one process may learn keys at the same time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            keys.load(str(self.path))
        return keys

    def _write(self, keys: paramiko.HostKeys) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        keys.save(str(temporary))
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def learn(self, host: str, key: paramiko.PKey) -> None:
        """Pin ``key`` for ``host``, unless another thread pinned a different one meanwhile."""
        with self._lock:
            keys = self.load()
            known = keys.lookup(host)
            if known is not None:
                if known.get(key.get_name()) != key:
                    raise HostKeyMismatchError(
                        f"{host}: host key changed while connecting; pinned in {self.path}"
                    )
                return
            keys.add(host, key.get_name(), key)
            self._write(keys)

    def forget(self, hosts: Iterable[str]) -> None:
        """Drop the entries of ``hosts`` (an address handed to a brand-new node)."""
        with self._lock:
            keys = self.load()
            changed = False
            for host in hosts:
                while host in keys:
                    del keys[host]
                    changed = True
            if changed:
                self._write(keys)
