"""SSH to nodes with paramiko: bounded readiness waits and pinned host keys.

Host keys are pinned per stack or lab in an OpenSSH-format known_hosts file with accept-new
semantics: a host seen for the first time is learnt, every later connection must present the
same key. Ansible reads the same file (``UserKnownHostsFile``), so paramiko and OpenSSH agree.
"""

from __future__ import annotations

import time
from pathlib import Path

import paramiko

from kubesmith.errors import KubesmithError

# Re-exported: connections here pin keys in it (the file itself is controller state).
from kubesmith.state.knownhosts import HostKeyMismatchError as HostKeyMismatchError
from kubesmith.state.knownhosts import KnownHosts as KnownHosts

SSH_TIMEOUT_S = 120.0
_ATTEMPT_TIMEOUT_S = 5.0
_RETRY_S = 0.5


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: KnownHosts) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(
        self,
        client: paramiko.SSHClient,  # noqa: ARG002 (paramiko's signature)
        hostname: str,
        key: paramiko.PKey,
    ) -> None:
        self._known_hosts.learn(hostname, key)


def load_key(path: Path) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def open_ssh(
    host: str,
    *,
    user: str,
    key: paramiko.PKey,
    known_hosts: KnownHosts,
    learn: bool = True,
    timeout: float = _ATTEMPT_TIMEOUT_S,
) -> paramiko.SSHClient:
    """A connected client; unknown hosts are learnt when ``learn``, else refused."""
    client = paramiko.SSHClient()
    for host_name, by_type in known_hosts.load().items():
        for key_type, host_key in by_type.items():
            client.get_host_keys().add(host_name, key_type, host_key)
    client.set_missing_host_key_policy(
        _AcceptNew(known_hosts) if learn else paramiko.RejectPolicy()
    )
    try:
        client.connect(
            host,
            username=user,
            pkey=key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except BaseException:
        client.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> tuple[int, str]:
    """Exit status and combined output of ``command`` on a connected node."""
    _, stdout, _ = client.exec_command(command, timeout=timeout, get_pty=False)
    stdout.channel.set_combine_stderr(True)
    output = stdout.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), output


def wait_for_ssh(
    node: str,
    host: str,
    *,
    user: str,
    key: paramiko.PKey,
    known_hosts: KnownHosts,
    timeout: float = SSH_TIMEOUT_S,
) -> None:
    """Return once ``node`` accepts ``key`` and runs a command; a clear error otherwise."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while True:
        try:
            client = open_ssh(host, user=user, key=key, known_hosts=known_hosts)
        except paramiko.BadHostKeyException:
            raise HostKeyMismatchError(
                f"node {node} ({host}): host key differs from the one pinned in "
                f"{known_hosts.path}; refusing to connect (if the node was re-created on "
                "purpose, delete its line there)"
            ) from None
        except HostKeyMismatchError as exc:
            raise HostKeyMismatchError(f"node {node}: {exc.message}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            last_error = str(exc) or type(exc).__name__
        else:
            with client:
                status, output = run(client, "true")
            if status == 0:
                return
            last_error = f"`true` exited {status}: {output.strip()}"
        if time.monotonic() >= deadline:
            raise KubesmithError(
                f"node {node} ({host}): SSH as {user} not ready after {timeout:g} s "
                f"(last error: {last_error})"
            )
        time.sleep(_RETRY_S)
