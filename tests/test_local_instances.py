"""Node requests for LXD: image sources, the create request, first-boot files, parallel runs."""

from __future__ import annotations

import pytest

from kubesmith.errors import KubesmithError, UserError
from kubesmith.local.connection import labels
from kubesmith.local.instances import (
    ImageSource,
    NodeSpec,
    image_source,
    in_parallel,
    instance_config,
    node_files,
    stack_node,
)
from kubesmith.nodes import node_plan
from kubesmith.spec import LxdSpec, parse_cluster

REMOTES = {
    "images": {"addr": "https://images.example", "protocol": "simplestreams"},
    "local": {"addr": "unix://", "protocol": ""},
}


def test_built_image_is_a_local_alias() -> None:
    assert image_source(LxdSpec(image="my-node")) == ImageSource("my-node")


def test_remote_image_resolves_through_the_lxc_clients_remotes() -> None:
    source = image_source(LxdSpec(remote_image="images:debian/12/cloud"), lambda: REMOTES)
    assert source.to_lxd() == {
        "type": "image",
        "alias": "debian/12/cloud",
        "mode": "pull",
        "server": "https://images.example",
        "protocol": "simplestreams",
    }


@pytest.mark.parametrize("value", ["debian/12", "nowhere:debian/12", "local:debian/12"])
def test_unusable_remote_image_names_the_setting(value: str) -> None:
    with pytest.raises(UserError, match=r"kubesmith:cluster\.lxd\.remoteImage"):
        image_source(LxdSpec(remote_image=value), lambda: REMOTES)


def node(image: ImageSource = ImageSource("kubesmith-node")) -> NodeSpec:
    return stack_node(
        "local",
        LxdSpec(subnet="10.203.0.0/24", cpu=1, memory="1GiB"),
        "lab-cp-1",
        image=image,
        labels=labels(stack="local", lab="lab"),
        public_key="ssh-ed25519 AAAAkey lab",
    )


def test_create_request_pins_limits_and_labels_on_the_instance() -> None:
    request = instance_config(node())
    assert request["name"] == "lab-cp-1"
    assert request["profiles"] == ["kubesmith-local"]
    assert request["source"] == {"type": "image", "alias": "kubesmith-node"}
    assert request["config"] == {
        "user.kubesmith.managed": "true",
        "user.kubesmith.stack": "local",
        "user.kubesmith.lab": "lab",
        "limits.cpu": "1",
        "limits.memory": "1GiB",
    }


def test_first_boot_files_carry_the_key_and_the_bridge_resolver() -> None:
    files = node_files(node())
    assert files["/root/.ssh/authorized_keys"] == ("ssh-ed25519 AAAAkey lab\n", 0o600)
    assert files["/etc/resolv.conf"] == ("nameserver 10.203.0.1\n", 0o644)
    assert "127.0.1.1\tlab-cp-1" in files["/etc/hosts"][0]


def test_remote_images_keep_their_own_resolver() -> None:
    remote = ImageSource("debian/12/cloud", "https://images.example", "simplestreams")
    assert list(node_files(node(remote))) == ["/root/.ssh/authorized_keys"]


def test_node_plan_names_control_planes_first() -> None:
    spec = parse_cluster(
        {"name": "lab", "backend": "lxd", "controlPlanes": 3, "workers": 2, "lxd": {}}
    )
    assert node_plan(spec) == [
        ("lab-cp-1", "control_plane"),
        ("lab-cp-2", "control_plane"),
        ("lab-cp-3", "control_plane"),
        ("lab-worker-1", "worker"),
        ("lab-worker-2", "worker"),
    ]


def test_parallel_work_reports_every_failure_not_just_the_first() -> None:
    def work(item: str) -> str:
        if item.startswith("bad"):
            raise KubesmithError(f"node {item}: no IPv4 address")
        return item.upper()

    assert in_parallel(["a", "b"], work) == ["A", "B"]
    with pytest.raises(KubesmithError) as caught:
        in_parallel(["a", "bad-1", "bad-2"], work)
    assert caught.value.message == "node bad-1: no IPv4 address; node bad-2: no IPv4 address"
