"""LXD host setup and the node image on the real daemon, including the ways they refuse."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import tarfile
import time
from pathlib import Path

import pylxd
import pytest
import yaml
from pylxd.exceptions import NotFound
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import KubesmithError, UserError
from kubesmith.local.connection import labels
from kubesmith.local.host import init_host, profile_name, storage_driver
from kubesmith.local.image import (
    HASH_PROPERTY,
    MANAGED_PROPERTY,
    build_stack_image,
    make_recipe,
    stack_node_base,
)
from kubesmith.local.instances import ImageSource, NodeSpec, ensure_node, get_instance
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.spec import LxdSpec
from tests.integration.conftest import LxdHost, Scratch, unique_name

pytestmark = pytest.mark.integration


def test_init_again_changes_nothing(lxd_ready: LxdHost) -> None:
    report = init_host(lxd_ready.client(), lxd_ready.stack, lxd_ready.lxd)
    assert not [line for line in report if line.startswith(("created", "updated"))], report
    assert f"network {lxd_ready.lxd.network} ({lxd_ready.lxd.subnet}): ok" in report


def test_unchanged_image_is_not_rebuilt(lxd_ready: LxdHost) -> None:
    client = lxd_ready.client()
    current = client.images.get_by_alias(lxd_ready.lxd.image)
    recipe = make_recipe(node_base=stack_node_base(lxd_ready.spec))
    assert current.properties[HASH_PROPERTY] == recipe.input_hash()
    result = build_stack_image(client, lxd_ready.spec)
    assert result.built is False
    assert result.fingerprint == current.fingerprint


def _tiny_image(client: pylxd.Client, properties: dict[str, str]) -> str:
    """Import a one-file image without an alias; its fingerprint."""
    metadata = yaml.safe_dump(
        {"architecture": "x86_64", "creation_date": int(time.time()), "properties": properties}
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in (("metadata.yaml", metadata), ("rootfs/marker", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return str(client.images.create(buffer.getvalue(), wait=True).fingerprint)


def test_an_image_build_removes_kubesmith_images_no_alias_names(lxd_ready: LxdHost) -> None:
    """What an interrupted build leaves (an imported image its alias never reached) is
    removed by the next build's check; images kubesmith did not build stay."""
    client = lxd_ready.client()
    orphan = _tiny_image(client, {MANAGED_PROPERTY: "true", "description": "left behind"})
    foreign = _tiny_image(client, {"description": unique_name("not-kubesmith-")})
    try:
        result = build_stack_image(client, lxd_ready.spec)
        assert result.built is False
        fingerprints = {image.fingerprint for image in client.images.all()}
        assert orphan not in fingerprints
        assert foreign in fingerprints
        assert client.images.get_by_alias(lxd_ready.lxd.image).fingerprint == result.fingerprint
    finally:
        for fingerprint in (orphan, foreign):
            with contextlib.suppress(NotFound):
                client.images.get(fingerprint).delete(wait=True)


def _stack_file(project: Path, stack: str, lxd: dict[str, object]) -> None:
    (project / "Pulumi.yaml").write_text("name: kubesmith\nruntime: python\n", encoding="utf-8")
    cluster = {"name": "t-clash", "backend": "lxd", "lxd": lxd}
    (project / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": {"kubesmith:cluster": cluster}}), encoding="utf-8"
    )


def test_init_prepares_a_new_stack_whose_nodes_then_come_up(
    lxd_ready: LxdHost, scratch: Scratch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack LXD has never seen: what `make lxd` does on a fresh machine, then a node."""
    stack = unique_name("kst")  # also the name of its network and pool
    scratch.stacks.append(stack)
    subnet = scratch.free_subnet()
    lxd = {"network": stack, "storagePool": stack, "subnet": str(subnet), "cpu": 1}
    _stack_file(tmp_path, stack, {**lxd, "memory": "512MiB"})
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))

    result = CliRunner().invoke(app, ["lxd", "init", "-s", stack])

    assert result.exit_code == 0, result.output
    created = [line for line in result.stdout.splitlines() if line.startswith("created")]
    assert created == [
        f"created storage pool {stack} ({storage_driver()})",
        f"created network {stack} ({subnet}, NAT)",
        f"created profile kubesmith-{stack}",
    ]
    client = lxd_ready.client()
    network = client.networks.get(stack)
    assert network.config["ipv4.address"] == f"{subnet.network_address + 1}/24"
    assert (network.config["ipv4.nat"], network.config["ipv6.address"]) == ("true", "none")
    for marked in (
        network,
        client.storage_pools.get(stack),
        client.profiles.get(f"kubesmith-{stack}"),
    ):
        assert marked.config["user.kubesmith.managed"] == "true"

    made = create_lab(unique_name(), stack=stack, control_planes=1, workers=0)
    try:
        (node,) = made.nodes
        assert ipaddress.ip_address(node.private_address) in subnet
        instance = client.instances.get(node.name)
        assert instance.config["limits.memory"] == "512MiB"
        assert instance.expanded_devices["root"]["pool"] == stack
    finally:
        destroy_lab(made.name)


def test_subnet_overlapping_another_network_is_refused_naming_both(
    lxd_ready: LxdHost, scratch: Scratch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign, taken = scratch.network()  # somebody else's bridge, not kubesmith's
    wider = taken.supernet(new_prefix=22)
    wanted = unique_name("kst")
    _stack_file(tmp_path, "tclash", {"network": wanted, "subnet": str(wider)})
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))

    result = CliRunner().invoke(app, ["lxd", "init", "-s", "tclash"])

    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: lxd.subnet")
    assert f"lxd.subnet {wider} overlaps LXD network {foreign!r} ({taken})" in line
    client = lxd_ready.client()
    assert not client.networks.exists(wanted)
    assert not client.profiles.exists(profile_name("tclash"))


def test_a_network_kubesmith_did_not_create_is_never_taken_over(
    lxd_ready: LxdHost, scratch: Scratch
) -> None:
    foreign, subnet = scratch.network()
    client = lxd_ready.client()
    before = client.networks.get(foreign).config
    with pytest.raises(UserError, match=f"LXD network {foreign!r} exists and was not created"):
        init_host(client, "tforeign", LxdSpec(network=foreign, subnet=str(subnet)))
    assert client.networks.get(foreign).config == before
    assert not client.profiles.exists(profile_name("tforeign"))


def test_a_node_that_gets_no_address_times_out_naming_it(
    lxd_ready: LxdHost, scratch: Scratch
) -> None:
    client = lxd_ready.client()
    stack_profile = client.profiles.get(profile_name(lxd_ready.stack))
    silent, _ = scratch.network(**{"ipv4.dhcp": "false"})
    profile = scratch.profile(
        {k: v for k, v in stack_profile.config.items() if not k.startswith("user.")},
        {**stack_profile.devices, "eth0": {"type": "nic", "name": "eth0", "network": silent}},
    )
    cluster = unique_name()
    node = NodeSpec(
        name=f"{cluster}-cp-1",
        image=ImageSource(lxd_ready.lxd.image),
        profile=profile,
        cpu=1,
        memory="512MiB",
        labels=labels(stack="local", cluster=cluster, role="control_plane", owner="lab"),
        authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderKeyForTheTest test",
    )
    scratch.instances.append(node.name)
    with pytest.raises(
        KubesmithError, match=rf"^node {node.name}: no IPv4 address on eth0 after 3 s"
    ):
        ensure_node(client, node, timeout=3)
    assert get_instance(client, node.name) is not None  # left for `lab down` / inspection
