"""How the Kubernetes binaries reach the nodes: the delivery each backend gets, what the
controller plans for it (mounts, node downloads) and the release role items it becomes.

Real files over real HTTP on 127.0.0.1, with versions.yaml pinned to this test's tarball
(the `pinned` fixture of test_cluster_artifacts); nothing here is a Kubernetes binary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesmith.downloads import download, kube_binaries
from kubesmith.errors import UserError
from kubesmith.local import shares
from kubesmith.local.shares import attach_for, device
from kubesmith.program.backends import binaries_attach
from kubesmith.provision import kubernetes
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.runner import RunResult
from kubesmith.provision.target import Target, for_inventory
from kubesmith.provision.variables import DELIVERY_VAR, binaries_delivery
from kubesmith.spec import ClusterSpec, parse_cluster
from tests.clusterlab import local_spec, serve, write_inventory
from tests.conftest import REPO, load_plugin

# pinned: the fixture that pins 1.35.1's server tarball to TARBALL.
from tests.test_cluster_artifacts import (  # noqa: F401
    BINARIES,
    SERVER_URL,
    TARBALL,
    fixed_probe,
    pinned,
)

pytestmark = pytest.mark.usefixtures("pinned")

CONTROL_PLANE = "local-cp-1"
WORKER = "local-worker-1"


def aws_spec(**overrides: object) -> ClusterSpec:
    raw = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]["kubesmith:cluster"]
    raw.update(name="local", controlPlanes=1, workers=1, apps=[], **overrides)
    return parse_cluster(raw)


def target_of(directory: Path, spec: ClusterSpec, mirror: str | None = None) -> Target:
    inventory = write_inventory(directory, spec)
    return for_inventory(inventory.path, "distro", mirror)


@pytest.mark.parametrize(
    ("spec", "given", "expected"),
    [
        (local_spec(1, 1), None, "mount"),
        (aws_spec(), None, "fetch"),
        (local_spec(1, 1), "copy", "copy"),
        (aws_spec(), "mount", "mount"),
    ],
)
def test_each_backend_has_its_delivery_and_a_run_may_choose(
    tmp_path: Path, spec: ClusterSpec, given: str | None, expected: str
) -> None:
    inventory = write_inventory(tmp_path, spec)
    extravars = {} if given is None else {DELIVERY_VAR: given}
    assert binaries_delivery(inventory, extravars) == expected


def test_an_unknown_delivery_is_refused_naming_the_variable(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, local_spec(1, 1))
    with pytest.raises(UserError, match=rf"{DELIVERY_VAR} must be one of mount, fetch, copy"):
        binaries_delivery(inventory, {DELIVERY_VAR: "rsync"})


def test_only_lxd_nodes_get_mounts_attached() -> None:
    # The CLI's way, and the Pulumi program's (through the backend's package).
    assert attach_for(local_spec(1, 1)) is shares.attach
    assert attach_for(aws_spec()) is None
    assert binaries_attach(local_spec(1, 1)) is shares.attach
    assert binaries_attach(aws_spec()) is None


def test_mount_delivery_mounts_only_the_verified_binaries_read_only(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        target = target_of(tmp_path / "lab", local_spec(1, 1), files.url)
        prepared = kubernetes.prepare(target, {}, {}, fixed_probe("amd64"))
    tarball = download.server_tarball("1.35.1", "amd64", target.cache_dir)
    source = kube_binaries.bin_dir(tarball)
    assert [(m.host, m.source, m.path) for m in prepared.mounts] == [
        (host, source, "/var/lib/kubesmith/releases/kubernetes/1.35.1")
        for host in (CONTROL_PLANE, WORKER)
    ]
    # The unpacked binaries only: neither the cache, nor the state directory, nor the PKI.
    assert sorted(p.name for p in source.iterdir() if not p.name.startswith(".")) == sorted(
        BINARIES
    )
    assert target.state_dir not in source.parents
    assert target.pki_dir not in source.parents
    assert device(prepared.mounts[0]) == {
        "type": "disk",
        "source": str(source),
        "path": "/var/lib/kubesmith/releases/kubernetes/1.35.1",
        "readonly": "true",
        "required": "false",
    }
    assert prepared.mounts[0].name == "kubesmith-kubernetes-1-35-1"
    kubelet = prepared.variables.kubernetes_files[WORKER]["kubelet"]
    assert kubelet == {
        "archive": str(source / "kubelet"),
        "sha256": hashlib.sha256(BINARIES["kubelet"]).hexdigest(),
        "mount": "/var/lib/kubesmith/releases/kubernetes/1.35.1/kubelet",
    }
    assert prepared.variables.binaries_delivery == "mount"


def test_copy_delivery_has_no_mounts_but_the_checksums(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        target = target_of(tmp_path / "lab", local_spec(1, 1), files.url)
        prepared = kubernetes.prepare(target, {}, {DELIVERY_VAR: "copy"}, fixed_probe("amd64"))
    assert prepared.mounts == []
    kubelet = prepared.variables.kubernetes_files[WORKER]["kubelet"]
    assert set(kubelet) == {"archive", "sha256"}


def test_fetch_delivery_plans_node_downloads_and_downloads_nothing(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        target = target_of(tmp_path / "lab", aws_spec(), files.url)
        prepared = kubernetes.prepare(target, {}, {}, fixed_probe("amd64"))
        assert files.requests == [], "the controller downloaded although nodes fetch"
    assert prepared.downloaded == []
    assert prepared.mounts == []
    assert not (target.cache_dir / "kubernetes").exists()
    per_host = prepared.variables.kubernetes_files
    assert sorted(per_host[WORKER]) == ["kube-proxy", "kubelet"]
    assert per_host[CONTROL_PLANE]["kube-apiserver"] == {
        # The mirror applies: an air-gapped site's nodes download from it.
        "url": f"{files.url}/dl.k8s.io/v1.35.1/kubernetes-server-linux-amd64.tar.gz",
        "checksum": "sha512:" + hashlib.sha512(TARBALL).hexdigest(),
        "member": "kubernetes/server/bin/kube-apiserver",
    }


def test_fetch_delivery_without_a_mirror_uses_the_release_url(tmp_path: Path) -> None:
    target = target_of(tmp_path / "lab", aws_spec())
    prepared = kubernetes.prepare(target, {}, {}, fixed_probe("arm64"))
    kubelet = prepared.variables.kubernetes_files[WORKER]["kubelet"]
    assert kubelet["url"] == "https://dl.k8s.io/v1.35.1/kubernetes-server-linux-arm64.tar.gz"
    assert kubelet["checksum"] == "sha512:" + hashlib.sha512(b"not served").hexdigest()


def test_unpacking_records_each_binarys_sha256(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        tarball = download.server_tarball("1.35.1", "amd64", tmp_path / "cache", files.url)
        download.fetch(tarball)
    kube_binaries.unpack(tarball)
    assert kube_binaries.sha256_of_unpacked(tarball) == {
        name: hashlib.sha256(data).hexdigest() for name, data in BINARIES.items()
    }


def test_mounts_are_attached_before_the_run_and_never_in_check_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attached: list[Sequence[kubernetes.Mount]] = []
    monkeypatch.setattr(
        "kubesmith.provision.provisioner.run_playbook",
        lambda _request, _events: RunResult("successful", 0),
    )
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        target = target_of(tmp_path / "lab", local_spec(1, 1), files.url)
        monkeypatch.setattr(
            "kubesmith.provision.provisioner.probe_architectures", fixed_probe("amd64")
        )
        provision(target, Options(check=True), None, attached.append)
        assert attached == []
        provision(target, Options(), None, attached.append)
    assert [m.host for m in attached[0]] == [CONTROL_PLANE, WORKER]


def release_items(files: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    plugin = load_plugin(REPO / "playbooks" / "filter_plugins" / "kubesmith.py", "filters")
    items: list[dict[str, Any]] = plugin.binary_releases(files, names, "1.35.1", "/usr/local/bin")
    return items


def test_release_items_carry_where_each_binary_comes_from() -> None:
    source = {"url": "http://m/k.tar.gz", "checksum": "sha512:ab", "member": "k/s/b/kubelet"}
    assert release_items({"kubelet": source}, ["kubelet"]) == [
        {
            **source,
            "name": "kubelet",
            "version": "1.35.1",
            "format": "binary",
            "binaries": {"kubelet": "kubelet"},
            "bin_dir": "/usr/local/bin",
        }
    ]
