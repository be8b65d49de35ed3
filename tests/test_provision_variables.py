"""Per-host variables: which host installs what, from where, and which certificates it gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesmith import versions
from kubesmith.downloads import download
from kubesmith.nodes import Node
from kubesmith.provision import kubernetes
from kubesmith.provision.inventory import api_endpoint, build_inventory, dump_inventory
from kubesmith.provision.packages import node_image_packages
from kubesmith.provision.target import ArtifactSettings, Target, for_inventory
from kubesmith.provision.variables import node_base_variables, release_needs
from kubesmith.spec import parse_cluster
from kubesmith.state.pki import Pki


@pytest.fixture
def target(tmp_path: Path) -> Target:
    spec = parse_cluster({"name": "t1", "backend": "lxd", "workers": 1, "lxd": {}})
    nodes = [
        Node("t1-cp-1", "control_plane", "10.203.0.11", None, "root"),
        Node("t1-worker-1", "worker", "10.203.0.21", None, "root"),
    ]
    path = tmp_path / "inventory.yml"
    path.write_text(
        dump_inventory(build_inventory(spec, nodes, endpoint="https://10.203.0.11:6443"))
    )
    return for_inventory(path)


def test_lxd_inventories_default_to_debian_packages(target: Target) -> None:
    assert set(target.artifacts.sources.values()) == {"distro"}
    assert release_needs(target) == {}
    pki = Pki(target.pki_dir, target.inventory.cluster)
    pki.ensure(target.inventory.identities())
    variables = node_base_variables(target, pki, {}, {}).extravars()
    packages = variables["kubesmith_host_packages"]
    assert packages["t1-cp-1"] == [
        "etcd-server",
        "etcd-client",
        "containerd",
        "runc",
        "containernetworking-plugins",
    ]
    # Workers run no etcd; crictl has no Debian package, so nothing is installed for it.
    assert packages["t1-worker-1"] == ["containerd", "runc", "containernetworking-plugins"]
    assert variables["kubesmith_host_releases"] == {}
    assert variables["kubesmith_components"]["etcd"] == {"source": "distro"}


def test_release_sources_hand_each_host_its_verified_archives(
    target: Target, tmp_path: Path
) -> None:
    released = Target(
        target.label, target.inventory, target.state_dir, ArtifactSettings.uniform("release")
    )
    needs = release_needs(released)
    assert needs["t1-worker-1"] == ["containerd", "runc", "cni_plugins", "crictl"]
    assert needs["t1-cp-1"][0] == "etcd"
    arch_of = {"t1-cp-1": "amd64", "t1-worker-1": "arm64"}
    planned = {
        (name, arch_of[host]): download.node_component(
            versions.component(name), arch_of[host], tmp_path / "c"
        )
        for host, names in needs.items()
        for name in names
    }
    pki = Pki(released.pki_dir, released.inventory.cluster)
    pki.ensure(released.inventory.identities())
    variables = node_base_variables(released, pki, planned, arch_of).extravars()
    assert variables["kubesmith_host_packages"] == {}
    worker = {r["name"]: r for r in variables["kubesmith_host_releases"]["t1-worker-1"]}
    assert worker["cni_plugins"]["bin_dir"] == "/opt/cni/bin"
    assert worker["runc"]["bin_dir"] == "/usr/local/bin"
    runc = versions.component("runc")
    assert worker["runc"]["archive"].endswith(f"runc/{runc.version}/arm64/runc.arm64")
    assert worker["runc"]["binaries"] == {"runc.arm64": "runc"}
    assert "etcd" not in worker


def test_pki_bundles_follow_the_groups(target: Target) -> None:
    pki = Pki(target.pki_dir, target.inventory.cluster)
    pki.ensure(target.inventory.identities())
    bundles = node_base_variables(target, pki, {}, {}).extravars()["kubesmith_pki_bundles"]
    worker = set(bundles["t1-worker-1"]["files"])
    assert "ca.crt" in worker
    assert not worker & {"ca.key", "front-proxy-ca.crt", "sa.key"}
    assert not [f for f in worker if f.startswith("etcd/")]
    plane = bundles["t1-cp-1"]["files"]
    assert {"ca.key", "etcd/server.key", "etcd/peer.crt", "apiserver-etcd-client.key"} <= set(plane)
    assert "etcd/ca.key" not in plane
    # The variables name the controller's archive, never key material.
    assert "PRIVATE" not in str(bundles["t1-cp-1"])


def _ha_target(tmp_path: Path, **artifacts: object) -> Target:
    spec = parse_cluster(
        {
            "name": "t1",
            "backend": "lxd",
            "controlPlanes": 3,
            "workers": 1,
            "lxd": {},
            "artifacts": artifacts,
        }
    )
    nodes = [
        *(Node(f"t1-cp-{n}", "control_plane", f"10.203.0.1{n}", None, "root") for n in (1, 2, 3)),
        Node("t1-worker-1", "worker", "10.203.0.21", None, "root"),
    ]
    path = tmp_path / "inventory.yml"
    path.write_text(
        dump_inventory(build_inventory(spec, nodes, endpoint=api_endpoint(spec, nodes)))
    )
    return for_inventory(path)


@pytest.mark.parametrize(
    "artifacts",
    [{}, {"source": "release"}, {"components": {"etcd": "release", "runc": "release"}}],
)
def test_a_node_image_carries_every_package_any_host_would_install(
    tmp_path: Path, artifacts: dict[str, object]
) -> None:
    """node_image_packages is the union of what provisioning hands node_prep, over every
    host of an HA cluster (etcd members, the API proxy on workers): no more, no less."""
    target = _ha_target(tmp_path, **artifacts)
    cluster = target.inventory.cluster
    pki = Pki(target.pki_dir, cluster)
    pki.ensure(target.inventory.identities())
    needs = release_needs(target)
    planned = {
        (name, "amd64"): download.node_component(versions.component(name), "amd64", tmp_path)
        for names in needs.values()
        for name in names
    }
    arch_of = dict.fromkeys(target.inventory.hostvars, "amd64")
    per_host = node_base_variables(
        target, pki, planned, arch_of, kubernetes.packages(target, cluster)
    ).host_packages
    installed = {package for names in per_host.values() for package in names}
    assert node_image_packages(cluster.spec) == tuple(sorted(installed))
    assert "haproxy" in installed
