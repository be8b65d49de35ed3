"""versions.yaml: every node component pinned once, with published checksums and URLs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from kubesmith import versions
from kubesmith.errors import ConfigError
from kubesmith.spec import parse_cluster

REPO = Path(__file__).resolve().parents[1]
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SHA512 = re.compile(r"^[0-9a-f]{128}$")


def test_every_component_has_a_version_checksums_and_a_templated_url() -> None:
    components = versions.components()
    assert set(components) == {"etcd", "containerd", "runc", "cni_plugins", "crictl"}
    for component in components.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", component.version), component
        assert set(component.sha256) == {"amd64", "arm64"}
        assert all(SHA256.fullmatch(s) for s in component.sha256.values()), component.name
        # Distinct per architecture: a copy-paste slip would pin one file for both.
        assert len(set(component.sha256.values())) == 2
        assert "{arch}" in component.url_template
        assert component.url("amd64") != component.url("arm64")
        assert component.url("amd64").startswith("https://")
        assert component.binaries


def test_urls_follow_the_upstream_release_layout() -> None:
    etcd = versions.component("etcd")
    assert etcd.url("arm64") == (
        f"https://github.com/etcd-io/etcd/releases/download/v{etcd.version}/"
        f"etcd-v{etcd.version}-linux-arm64.tar.gz"
    )
    assert etcd.installed_binaries("arm64") == {
        f"etcd-v{etcd.version}-linux-arm64/etcd": "etcd",
        f"etcd-v{etcd.version}-linux-arm64/etcdctl": "etcdctl",
        f"etcd-v{etcd.version}-linux-arm64/etcdutl": "etcdutl",
    }
    runc = versions.component("runc")
    assert runc.format == "binary"
    assert runc.filename("amd64") == "runc.amd64"


def test_mirror_keeps_host_and_path_under_the_base_url() -> None:
    runc = versions.component("runc")
    mirrored = runc.url("amd64", "http://127.0.0.1:8080/files/")
    assert mirrored == (
        f"http://127.0.0.1:8080/files/github.com/opencontainers/runc/releases/download/"
        f"v{runc.version}/runc.amd64"
    )


def test_unknown_architecture_names_the_component() -> None:
    with pytest.raises(KeyError, match=r"crictl .*'s390x'.*amd64, arm64"):
        versions.component("crictl").checksum("s390x")


def test_debian_packages_are_named_where_debian_has_them() -> None:
    assert versions.component("etcd").distro_packages == ("etcd-server", "etcd-client")
    assert versions.component("cni_plugins").distro_packages == ("containernetworking-plugins",)
    assert versions.component("crictl").distro_packages == ()


def test_every_listed_kubernetes_version_has_all_its_published_checksums() -> None:
    """Server tarball (sha512) and kubelet/kubectl (sha256), for each architecture."""
    listed = versions.load()["kubernetes"]["versions"]
    seen: list[str] = []
    for version, pins in listed.items():
        assert set(pins) == {"server", "kubelet", "kubectl"}, version
        for name, pattern in (("server", SHA512), ("kubelet", SHA256), ("kubectl", SHA256)):
            sums = pins[name]
            assert set(sums) == set(versions.ARCHITECTURES), f"{name} {version}"
            assert all(pattern.fullmatch(s) for s in sums.values()), f"{name} {version}"
            seen += sums.values()
    # Every file differs, so every checksum does: a repeat is a value pasted in the wrong place.
    assert len(seen) == len(set(seen))
    # Nothing listed is left out of what `config check` accepts.
    assert sorted(versions.kubernetes_versions()) == sorted(listed)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_newest_three_minors_are_installable_and_the_default_is_the_newest() -> None:
    pinned = versions.kubernetes_versions()
    minors = [_minor(v) for v in pinned]
    newest = minors[0]
    # One patch per minor, three consecutive minors: losing a checksum drops a minor here.
    assert minors == [(newest[0], newest[1] - step) for step in range(3)], pinned
    assert versions.default_kubernetes_version() == pinned[0]


def test_a_version_without_its_server_checksum_is_not_offered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = copy.deepcopy(versions.load())
    oldest = versions.kubernetes_versions()[-1]
    del data["kubernetes"]["versions"][oldest]["server"]["arm64"]
    monkeypatch.setattr(versions, "load", lambda: data)
    assert oldest not in versions.kubernetes_versions()
    with pytest.raises(ConfigError) as caught:
        parse_cluster({**_cluster(), "kubernetesVersion": oldest})
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"kubesmith:cluster.kubernetesVersion: {oldest} has no published server tarball checksum"
    )


def test_no_other_project_file_repeats_a_component_version() -> None:
    """The versions file is the one place a component version is written."""
    pinned = {c.version for c in versions.components().values()}
    owned = [REPO / "playbooks", REPO / "src" / "kubesmith" / "provision"]
    offenders = []
    for root in owned:
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in {".py", ".yml", ".yaml", ".j2", ".cfg"}:
                text = path.read_text(encoding="utf-8")
                offenders += [
                    f"{path}: {v}" for v in pinned if re.search(rf"\b{re.escape(v)}\b", text)
                ]
    assert offenders == []


def _cluster(**artifacts: object) -> dict[str, object]:
    raw: dict[str, object] = {"name": "c1", "backend": "lxd", "lxd": {}}
    if artifacts:
        raw["artifacts"] = artifacts
    return raw


def test_artifact_source_defaults_follow_the_backend() -> None:
    lxd = parse_cluster(_cluster())
    assert lxd.artifact_source("etcd") == "distro"
    aws = parse_cluster(
        {
            "name": "c2",
            "backend": "aws",
            "aws": {
                "region": "eu-west-1",
                "availabilityZones": ["eu-west-1a"],
                "adminCidrs": ["198.51.100.0/24"],
            },
        }
    )
    assert aws.artifact_source("containerd") == "release"


def test_per_component_source_overrides_the_cluster_source() -> None:
    spec = parse_cluster(
        _cluster(
            source="release", mirrorBaseUrl="http://10.0.0.5/files", components={"etcd": "distro"}
        )
    )
    assert spec.artifact_source("etcd") == "distro"
    assert spec.artifact_source("runc") == "release"
    assert spec.artifacts.mirror_base_url == "http://10.0.0.5/files"


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ({"source": "tarball"}, "kubesmith:cluster.artifacts.source: must be one of"),
        (
            {"mirrorBaseUrl": "ftp://x"},
            "kubesmith:cluster.artifacts.mirrorBaseUrl: must be an http(s) URL",
        ),
        ({"components": {"etc": "release"}}, "unknown component 'etc'"),
        ({"components": {"crictl": "distro"}}, "crictl is not packaged by Debian"),
        ({"mirrorBaseUrl": "http://x", "sources": {}}, "artifacts.sources: unknown key"),
    ],
)
def test_bad_artifact_settings_name_the_key(artifacts: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cluster(_cluster(**artifacts))
    assert message in str(caught.value)


def test_app_images_are_pinned_by_tag_and_digest_apart_from_the_cluster_images() -> None:
    hello = versions.app_image("hello")
    assert hello is not None
    assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", hello)
    assert versions.app_image("no-such-app") is None
    # `apps` holds images by app, not one image the cluster pulls.
    with pytest.raises(KeyError, match="pins no image 'apps'"):
        versions.image("apps")
