"""Fixtures for tests on real LXD nodes (marker `integration`; `make test` runs them).

    def test_role(lab, node_ssh):
        made = lab(control_planes=1, workers=2)       # kubesmith.local.lab.Lab
        made.inventory_path                           # Ansible inventory for the lab
        with node_ssh(made, made.nodes[0]) as client:  # paramiko, pinned host key
            status, output = run(client, "systemctl is-system-running")

`lxd_ready` (session) installs and starts LXD if needed, creates the `local` stack's pool,
bridge and profile and builds the node image: the same as `make lxd`, so it is quick when that
ran. It also removes what earlier, interrupted runs left behind: instances of test clusters
(`t-...`) and networks and profiles labelled ``user.kubesmith.test``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pylxd
import pytest

from kubesmith.local import daemon
from kubesmith.local.connection import connect, is_managed, label, socket_path
from kubesmith.local.host import init_host
from kubesmith.local.image import build_image
from kubesmith.local.instances import delete_node, managed_instances
from kubesmith.local.lab import SSH_USER, Lab, create_lab, destroy_lab
from kubesmith.local.ssh import KnownHosts, load_key, open_ssh
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.nodes import Node
from kubesmith.spec import ClusterSpec, LxdSpec

REPO = Path(__file__).resolve().parents[2]
STACK = "local"
#: Clusters and labs made by tests; anything of theirs still in LXD at start-up is stale.
TEST_PREFIX = "t-"
TEST_LABEL = "user.kubesmith.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def unique_name(prefix: str = TEST_PREFIX) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LxdHost:
    stack: str
    spec: ClusterSpec
    lxd: LxdSpec
    socket: Path

    def client(self) -> pylxd.Client:
        return connect(self.socket)


def remove_stale(client: pylxd.Client) -> list[str]:
    removed = []
    for instance in managed_instances(client):
        if (label(instance.config, "cluster") or "").startswith(TEST_PREFIX):
            delete_node(client, instance.name)
            removed.append(f"instance {instance.name}")
    for profile in client.profiles.all():
        if profile.config.get(TEST_LABEL) == "true" or profile.name.startswith("kubesmith-kst"):
            profile.delete()
            removed.append(f"profile {profile.name}")
    for network in client.networks.all():
        if network.managed and (
            network.config.get(TEST_LABEL) == "true" or network.name.startswith("kst")
        ):
            network.delete()
            removed.append(f"network {network.name}")
    for pool in client.storage_pools.all():
        if pool.name.startswith("kst") and is_managed(pool.config):
            pool.delete()
            removed.append(f"storage pool {pool.name}")
    return removed


@pytest.fixture(scope="session")
def lxd_ready(tmp_path_factory: pytest.TempPathFactory) -> LxdHost:
    """LXD running with the local stack's pool, bridge, profile and node image; idempotent."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(tmp_path_factory.mktemp("lxd-ready")))
        spec, lxd = load_lxd_spec(STACK, REPO)
        daemon.ensure_packages()
        socket = socket_path()
        daemon.ensure_daemon(socket)
        client = connect(socket)
        remove_stale(client)
        init_host(client, STACK, lxd)
        build_image(client, lxd.image)
    return LxdHost(STACK, spec, lxd, socket)


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

    def network(self, gateway: str, **config: str) -> str:
        """A bridge that is not kubesmith's (no user.kubesmith.managed), e.g. 10.206.0.1/24."""
        name = unique_name("kst")
        self.client.networks.create(
            name,
            type="bridge",
            config={"ipv4.address": gateway, "ipv6.address": "none", TEST_LABEL: "true", **config},
        )
        self.networks.append(name)
        return name

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
