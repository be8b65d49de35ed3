"""The Pulumi dynamic provider's create/read/delete against real LXD (the engine is not here)."""

from __future__ import annotations

import ipaddress

import paramiko
import pytest

from kubesmith.errors import KubesmithError
from kubesmith.local.connection import labels
from kubesmith.local.instances import get_instance, image_source, stack_node
from kubesmith.program.backends.lxd import provider as provider_module
from kubesmith.program.backends.lxd.provider import LxdNodeProvider, node_props, stack_known_hosts
from tests.integration.conftest import LxdHost, Scratch, unique_name

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderKeyForTheTest test"


def worker_props(host: LxdHost, cluster: str) -> dict[str, object]:
    node = stack_node(
        host.stack,
        host.lxd,
        f"{cluster}-worker-1",
        image=image_source(host.lxd),
        labels=labels(stack=host.stack, cluster=cluster, role="worker", owner="pulumi"),
        public_key=KEY,
    )
    return node_props(node, "worker")


def test_create_read_delete_a_node(lxd_ready: LxdHost, scratch: Scratch) -> None:
    props = worker_props(lxd_ready, unique_name())
    name = str(props["name"])
    scratch.instances.append(name)
    provider = LxdNodeProvider()

    created = provider.create(props)

    assert created.id == name
    assert created.outs is not None
    address = created.outs["private_address"]
    assert ipaddress.ip_address(address) in lxd_ready.lxd.subnet_network
    instance = lxd_ready.client().instances.get(name)
    assert instance.status == "Running"
    assert instance.profiles == [f"kubesmith-{lxd_ready.stack}"]
    assert instance.config["user.kubesmith.owner"] == "pulumi"
    assert instance.files.get("/root/.ssh/authorized_keys").decode().strip() == KEY

    read = provider.read(name, created.outs)
    assert (read.id, read.outs) == (name, created.outs)

    provider.delete(name, created.outs)
    assert get_instance(lxd_ready.client(), name) is None
    assert provider.read(name, created.outs).id is None


def test_create_never_adopts_or_deletes_an_existing_instance(
    lxd_ready: LxdHost, scratch: Scratch
) -> None:
    props = worker_props(lxd_ready, unique_name())
    scratch.instances.append(str(props["name"]))
    provider = LxdNodeProvider()
    first = provider.create(props)

    with pytest.raises(KubesmithError, match="exists already"):
        provider.create(props)

    instance = get_instance(lxd_ready.client(), first.id)
    assert instance is not None
    assert instance.status == "Running"


def test_a_failed_create_leaves_nothing_behind(
    lxd_ready: LxdHost, scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = lxd_ready.client()
    stack_profile = client.profiles.get(f"kubesmith-{lxd_ready.stack}")
    silent, _ = scratch.network(**{"ipv4.dhcp": "false"})
    profile = scratch.profile(
        {k: v for k, v in stack_profile.config.items() if not k.startswith("user.")},
        {**stack_profile.devices, "eth0": {"type": "nic", "name": "eth0", "network": silent}},
    )
    props = {**worker_props(lxd_ready, unique_name()), "profile": profile}
    scratch.instances.append(str(props["name"]))
    monkeypatch.setattr(provider_module, "ADDRESS_TIMEOUT_S", 3.0)

    with pytest.raises(KubesmithError, match=f"node {props['name']}: no IPv4 address"):
        LxdNodeProvider().create(props)

    assert get_instance(client, str(props["name"])) is None


def test_create_and_delete_drop_the_stale_host_key_of_the_address(
    lxd_ready: LxdHost, scratch: Scratch
) -> None:
    """A replacement node often gets its predecessor's address with a new host key; the
    stack's pinned known_hosts must not go on refusing it."""
    props = worker_props(lxd_ready, unique_name())
    scratch.instances.append(str(props["name"]))
    known_hosts = stack_known_hosts(props)
    # Earlier nodes' keys pinned for every address the bridge can hand out: whichever the
    # new node gets is stale.
    stale = paramiko.ECDSAKey.generate()
    pins = paramiko.HostKeys()
    subnet = [str(a) for a in lxd_ready.lxd.subnet_network.hosts()]
    for address in subnet:
        pins.add(address, stale.get_name(), stale)
    pins.save(str(known_hosts.path))
    provider = LxdNodeProvider()

    created = provider.create(props)

    assert created.outs is not None
    address = created.outs["private_address"]
    left = known_hosts.load()
    assert address not in left
    assert sorted(left.keys()) == sorted(a for a in subnet if a != address), "only its pin"

    # Provisioning learns the node's key (accept-new); deleting the node drops it again.
    known_hosts.learn(address, paramiko.ECDSAKey.generate())
    provider.delete(created.id, created.outs)

    assert get_instance(lxd_ready.client(), created.id) is None
    assert address not in known_hosts.load()
    assert len(known_hosts.load().keys()) == len(subnet) - 1
