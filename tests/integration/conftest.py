"""Fixtures for tests on real LXD nodes (marker `integration`; `make test` runs them).

    def test_role(lab, node_ssh):
        made = lab(control_planes=1, workers=2)       # kubesmith.local.lab.Lab
        made.inventory_path                           # Ansible inventory for the lab
        with node_ssh(made, made.nodes[0]) as client:  # paramiko, pinned host key
            status, output = run(client, "systemctl is-system-running")

`lxd_ready` (session) installs and starts LXD if needed, creates the `local` stack's pool,
bridge and profile and builds the node image: the same as `make lxd`, so it is quick when that
ran. It also removes what earlier test sessions that died left behind (see SESSION below),
never what a session that is still running uses.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import random
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pylxd
import pytest
import yaml

from kubesmith.local import daemon
from kubesmith.local.connection import connect, is_managed, label, socket_path
from kubesmith.local.host import gateway_interface, host_routes, init_host, lxd_networks
from kubesmith.local.image import build_stack_image
from kubesmith.local.instances import delete_node, managed_instances
from kubesmith.local.lab import SSH_USER, Lab, create_lab, destroy_lab
from kubesmith.local.ssh import KnownHosts, load_key, open_ssh
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.nodes import Node
from kubesmith.spec import ClusterSpec, LxdSpec

REPO = Path(__file__).resolve().parents[2]
STACK = "local"
TEST_LABEL = "user.kubesmith.test"

# Several test sessions may share one LXD (engineers and CI on one machine). Every name a
# session makes embeds its id, and the session holds a lock file while it runs; an object
# whose session holds no lock is left over from a run that died, and is removed at start-up.
SESSION = secrets.token_hex(2)
SESSION_LOCKS = Path(tempfile.gettempdir()) / "kubesmith-test-sessions"
#: Lab/cluster names `t-SSSSrrrr`, networks and pools `kstSSSSrrrr`, profiles `kst-SSSSrrrr`
#: and `kubesmith-kstSSSSrrrr` (the profile of a test stack).
_SESSION_OF = re.compile(r"^(?:t-|kst-?|kubesmith-kst)([0-9a-f]{4})[0-9a-f]{4}(?:-|$)")
#: Instances named before sessions were recorded: stale once this old.
_UNRECORDED_AGE = dt.timedelta(hours=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def unique_name(prefix: str = "t-") -> str:
    return f"{prefix}{SESSION}{secrets.token_hex(2)}"


@contextmanager
def _session_lock() -> Iterator[None]:
    SESSION_LOCKS.mkdir(exist_ok=True)
    path = SESSION_LOCKS / f"{SESSION}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _session_alive(session: str) -> bool:
    path = SESSION_LOCKS / f"{session}.lock"
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    path.unlink(missing_ok=True)
    return False


def _stale(name: str, created_at: str | None = None) -> bool:
    match = _SESSION_OF.match(name)
    if match:
        return not _session_alive(match[1])
    if created_at is None or not name.startswith("t-"):
        return False
    created = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return dt.datetime.now(dt.UTC) - created > _UNRECORDED_AGE


@dataclass(frozen=True)
class LxdHost:
    stack: str
    spec: ClusterSpec
    lxd: LxdSpec
    socket: Path

    def client(self) -> pylxd.Client:
        return connect(self.socket)


def remove_stale(client: pylxd.Client) -> list[str]:
    """Delete what dead test sessions left: instances, then profiles, networks, pools."""
    removed = []
    for instance in managed_instances(client):
        cluster = label(instance.config, "cluster") or ""
        if _stale(cluster, instance.created_at):
            delete_node(client, instance.name)
            removed.append(f"instance {instance.name}")
    for profile in client.profiles.all():
        if _stale(profile.name) and (
            profile.config.get(TEST_LABEL) == "true" or is_managed(profile.config)
        ):
            profile.delete()
            removed.append(f"profile {profile.name}")
    for network in client.networks.all():
        if network.managed and _stale(network.name):
            network.delete()
            removed.append(f"network {network.name}")
    for pool in client.storage_pools.all():
        if _stale(pool.name) and is_managed(pool.config):
            pool.delete()
            removed.append(f"storage pool {pool.name}")
    return removed


@pytest.fixture(scope="session")
def lxd_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LxdHost]:
    """LXD running with the local stack's pool, bridge, profile and node image; idempotent."""
    with _session_lock(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(tmp_path_factory.mktemp("lxd-ready")))
        spec, lxd = load_lxd_spec(STACK, REPO)
        daemon.ensure_packages()
        socket = socket_path()
        daemon.ensure_daemon(socket)
        daemon.raise_kernel_limits()
        client = connect(socket)
        remove_stale(client)
        init_host(client, STACK, lxd)
        build_stack_image(client, spec)
        patch.undo()
        yield LxdHost(STACK, spec, lxd, socket)


@dataclass
class _Labs:
    host: LxdHost
    names: list[str] = field(default_factory=list)

    def __call__(
        self, *, control_planes: int = 1, workers: int = 0, name: str | None = None, **kw: Any
    ) -> Lab:
        name = name or unique_name()
        if name not in self.names:
            self.names.append(name)
        return create_lab(
            name,
            stack=self.host.stack,
            control_planes=control_planes,
            workers=workers,
            socket=self.host.socket,
            **kw,
        )


@pytest.fixture
def lab(
    lxd_ready: LxdHost, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Lab]]:
    """Make labs (``lab(control_planes=1, workers=2)``); every one is destroyed afterwards.

    Keys, known_hosts and inventories go to the test's own KUBESMITH_HOME (isolated_home).
    """
    del isolated_home  # requested so it is torn down after the labs, not for its value
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    labs = _Labs(lxd_ready)
    yield labs
    for name in labs.names:
        destroy_lab(name, socket=lxd_ready.socket)


@pytest.fixture
def node_ssh() -> Callable[[Lab, Node], paramiko.SSHClient]:
    """Connect to a lab node as root with the stack key; unknown or changed host keys fail."""

    def connect_node(made: Lab, node: Node) -> paramiko.SSHClient:
        return open_ssh(
            node.private_address,
            user=SSH_USER,
            key=load_key(made.key.private_path),
            known_hosts=KnownHosts(made.known_hosts_path),
            learn=False,
        )

    return connect_node


@dataclass
class Scratch:
    """Throwaway LXD networks and profiles, labelled as test objects and removed afterwards."""

    client: pylxd.Client
    profiles: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    #: Stacks whose `lxd init` objects (profile, network, pool named after them) go too.
    stacks: list[str] = field(default_factory=list)

    def free_subnet(self) -> ipaddress.IPv4Network:
        """A random /24 in 10.204.0.0-10.209.255.0 that no LXD network or host route uses.

        Random, so sessions running at the same time rarely pick the same one.
        """
        taken = [*lxd_networks(self.client).values(), *(r.network for r in host_routes())]
        free = [
            subnet
            for second in range(204, 210)
            for subnet in ipaddress.ip_network(f"10.{second}.0.0/16").subnets(new_prefix=24)
            if not any(subnet.overlaps(other) for other in taken)
        ]
        return random.choice(free)

    def network(self, **config: str) -> tuple[str, ipaddress.IPv4Network]:
        """A bridge on a free subnet that is not kubesmith's (no user.kubesmith.managed)."""
        name = unique_name("kst")
        subnet = self.free_subnet()
        self.client.networks.create(
            name,
            type="bridge",
            config={
                "ipv4.address": gateway_interface(subnet),
                "ipv6.address": "none",
                TEST_LABEL: "true",
                **config,
            },
        )
        self.networks.append(name)
        return name, subnet

    def profile(self, config: dict[str, str], devices: dict[str, dict[str, str]]) -> str:
        name = unique_name("kst-")
        self.client.profiles.create(name, config={**config, TEST_LABEL: "true"}, devices=devices)
        self.profiles.append(name)
        return name

    def cleanup(self) -> None:
        for instance in self.instances:
            delete_node(self.client, instance)
        for profile in [*self.profiles, *(f"kubesmith-{stack}" for stack in self.stacks)]:
            if self.client.profiles.exists(profile):
                self.client.profiles.get(profile).delete()
        for network in [*self.networks, *self.stacks]:
            if self.client.networks.exists(network):
                self.client.networks.get(network).delete()
        for pool in self.stacks:
            if self.client.storage_pools.exists(pool):
                self.client.storage_pools.get(pool).delete()


@pytest.fixture
def scratch(lxd_ready: LxdHost) -> Iterator[Scratch]:
    made = Scratch(lxd_ready.client())
    yield made
    made.cleanup()


def ssh_node(
    inventory: dict[str, Any],
    host: str,
    command: str,
    *,
    stdin: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``command`` as root on ``host`` of a written inventory, over OpenSSH with the stack's key
    and pinned host keys, as Ansible reaches it (the caller judges the exit status)."""
    variables = inventory["all"]["vars"]
    address = inventory["all"]["hosts"][host]["kubesmith_node_ip"]
    args = ["ssh", "-i", variables["ansible_ssh_private_key_file"], "-o", "BatchMode=yes"]
    args += str(variables["ansible_ssh_common_args"]).split()
    return subprocess.run(
        [*args, f"root@{address}", command],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


#: The installed `kubesmith` command, run as a user would run it.
KUBESMITH = str(Path(sys.executable).with_name("kubesmith"))


def kubesmith(
    *args: str, timeout: float = 1500, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, in this process's environment (KUBESMITH_HOME), with
    no terminal on stdin (as in CI) unless ``stdin`` says otherwise."""
    return subprocess.run(
        [KUBESMITH, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        stdin=stdin,
    )


@contextmanager
def provisioned_lab(
    lxd_ready: LxdHost,
    home: Path,
    *,
    control_planes: int,
    workers: int,
    name: str | None = None,
    provision: bool = True,
) -> Iterator[Lab]:
    """A lab of its own for a test module: KUBESMITH_HOME is ``home`` while the block runs;
    the lab is created, provisioned with `kubesmith provision --no-kubernetes-binaries`
    (unless ``provision`` is false) and destroyed at the end, whatever happened."""
    name = name or unique_name()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(home))
        patch.setenv("KUBESMITH_PROJECT", str(REPO))
        try:
            made = create_lab(
                name,
                stack=lxd_ready.stack,
                control_planes=control_planes,
                workers=workers,
                socket=lxd_ready.socket,
            )
            if provision:
                args = ("provision", "--inventory", str(made.inventory_path))
                result = kubesmith(*args, "--no-kubernetes-binaries")
                assert result.returncode == 0, result.stdout + result.stderr
            yield made
        finally:
            destroy_lab(name, socket=lxd_ready.socket)


@dataclass(frozen=True)
class InventoryLab:
    """A lab as a test module reads it: the inventory kubesmith wrote (read afresh each time:
    a test may change it) and a root shell on its nodes. Modules subclass it with what they
    record."""

    inventory: Path

    @property
    def data(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.inventory.read_text(encoding="utf-8"))
        assert isinstance(loaded, dict)
        return loaded

    @property
    def hosts(self) -> list[str]:
        return [str(host) for host in self.data["all"]["hosts"]]

    def hosts_in(self, group: str) -> list[str]:
        return [str(host) for host in self.data["all"]["children"][group]["hosts"]]

    @property
    def control_planes(self) -> list[str]:
        return self.hosts_in("kube_control_plane")

    @property
    def workers(self) -> list[str]:
        control_planes = self.control_planes
        return [str(host) for host in self.data["all"]["hosts"] if host not in control_planes]

    def ip(self, host: str) -> str:
        return str(self.data["all"]["hosts"][host]["kubesmith_node_ip"])

    def run(
        self,
        host: str,
        command: str,
        *,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 180,
        data: dict[str, Any] | None = None,
    ) -> str:
        """``command``'s stdout on ``host`` (of ``data``, an earlier reading of the inventory,
        if given); with ``check``, a failure is an AssertionError naming host, command and
        stderr."""
        result = ssh_node(data or self.data, host, command, stdin=stdin, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: {command!r} exited {result.returncode}: {result.stderr}")
        return result.stdout
