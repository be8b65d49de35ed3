"""The Kubernetes binaries and `kubesmith artifacts list|fetch`.

Real files over real HTTP on 127.0.0.1 (a mirror in the <host>/<path> layout); versions.yaml
is swapped for a copy whose pins are the checksums of those files, computed here. The real
pins are checked for their shape only: their files cannot be downloaded on this machine.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.cli import app
from kubesmith.downloads import airgap, download, kube_binaries
from kubesmith.downloads import pulumi as pulumi_tools
from kubesmith.errors import KubesmithError
from kubesmith.provision import kubernetes
from kubesmith.provision.target import Target, artifact_cache_dir, for_inventory
from kubesmith.stackfile import load_spec
from kubesmith.state import records
from tests.clusterlab import (
    LocalFiles,
    air_project,
    listed_images,
    local_spec,
    serve,
    server_tarball,
    write_inventory,
)
from tests.conftest import REPO
from tests.pulumi_tools import serve_pulumi

runner = CliRunner()
BINARIES = {
    name: f"#!/bin/sh\necho {name}\n".encode()
    for name in versions.kubernetes_release("1.35.1").binaries
}
TARBALL = server_tarball(BINARIES)
SERVER_URL = "https://dl.k8s.io/v1.35.1/kubernetes-server-linux-amd64.tar.gz"
CRICTL_URL = (
    "https://github.com/kubernetes-sigs/cri-tools/releases/download/"
    "v{v}/crictl-v{v}-linux-amd64.tar.gz"
)


def test_published_server_pins_are_sha512_per_architecture() -> None:
    for version in versions.kubernetes_versions():
        release = versions.kubernetes_release(version)
        assert release.algorithm == "sha512"
        assert set(release.checksums) == set(versions.ARCHITECTURES), version
        for arch in versions.ARCHITECTURES:
            assert re.fullmatch(r"[0-9a-f]{128}", release.checksum(arch)), (version, arch)
        assert release.url("arm64") == (
            f"https://dl.k8s.io/v{version}/kubernetes-server-linux-arm64.tar.gz"
        )


@pytest.fixture
def server_unpinned(monkeypatch: pytest.MonkeyPatch) -> str:
    """versions.yaml plus a newer patch of the oldest minor with kubelet/kubectl sums only:
    what a release looks like before its notes' "Downloads" section could be read."""
    oldest = versions.kubernetes_versions()[-1]
    major, minor, patch = oldest.split(".")
    version = f"{major}.{minor}.{int(patch) + 1}"
    data = copy.deepcopy(versions.load())
    entry = data["kubernetes"]["versions"][oldest]
    data["kubernetes"]["versions"][version] = {
        "kubelet": entry["kubelet"],
        "kubectl": entry["kubectl"],
    }
    monkeypatch.setattr(versions, "load", lambda: data)
    return version


def test_a_version_without_a_published_checksum_is_refused(
    tmp_path: Path, server_unpinned: str
) -> None:
    with pytest.raises(KubesmithError, match=rf"kubernetes {server_unpinned}: no published sha512"):
        download.server_tarball(server_unpinned, "amd64", tmp_path)


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """versions.yaml with 1.35.1's server tarball and crictl pinned to this test's files."""
    data = copy.deepcopy(versions.load())
    data["kubernetes"]["versions"]["1.35.1"]["server"] = {
        "amd64": hashlib.sha512(TARBALL).hexdigest(),
        "arm64": hashlib.sha512(b"not served").hexdigest(),
    }
    data["components"]["crictl"]["sha256"]["amd64"] = hashlib.sha256(b"crictl").hexdigest()
    monkeypatch.setattr(versions, "load", lambda: data)
    return data


@pytest.mark.usefixtures("pinned")
def test_binaries_are_unpacked_once_from_the_verified_tarball(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        tarball = download.server_tarball("1.35.1", "amd64", tmp_path / "cache", files.url)
        assert download.fetch(tarball)
        assert not download.fetch(tarball), "a verified cached tarball is not fetched again"
        assert files.requests == ["/dl.k8s.io/v1.35.1/kubernetes-server-linux-amd64.tar.gz"]
    paths = kube_binaries.unpack(tarball)
    assert {name: p.read_bytes() for name, p in paths.items()} == BINARIES
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in paths.values())
    stamp = paths["kubelet"].stat().st_mtime_ns
    assert kube_binaries.unpack(tarball) == paths
    assert paths["kubelet"].stat().st_mtime_ns == stamp, "unpacked again"


@pytest.mark.usefixtures("pinned")
def test_a_tampered_cache_is_not_unpacked(tmp_path: Path) -> None:
    tarball = download.server_tarball("1.35.1", "amd64", tmp_path)
    tarball.cache_path.parent.mkdir(parents=True)
    tarball.cache_path.write_bytes(server_tarball({"kubelet": b"evil"}))
    with pytest.raises(KubesmithError, match=r"no longer matches its pinned sha512"):
        kube_binaries.unpack(tarball)
    assert not kube_binaries.bin_dir(tarball).exists()


@pytest.mark.usefixtures("pinned")
def test_a_wrong_download_fails_before_anything_is_kept(tmp_path: Path) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, server_tarball({"kubelet": b"tampered mirror"}))
        tarball = download.server_tarball("1.35.1", "amd64", tmp_path / "cache", files.url)
        with pytest.raises(KubesmithError, match=r"sha512 [0-9a-f]{128} does not match"):
            download.fetch(tarball)
    assert list(tarball.cache_path.parent.iterdir()) == []


def fixed_probe(arch: str) -> kubernetes.Probe:
    def probe(_target: Target, hosts: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(hosts, arch)

    return probe


@pytest.mark.usefixtures("pinned")
def test_prepare_gives_each_host_the_binaries_of_its_groups(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 1))
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, TARBALL)
        target = for_inventory(inventory.path, "distro", files.url)
        prepared = kubernetes.prepare(target, {}, {}, fixed_probe("amd64"))
    variables = prepared.variables.extravars()
    assert variables["kubesmith_kubernetes_binaries"] is True
    per_host = variables["kubesmith_kubernetes_files"]
    assert sorted(per_host["local-cp-1"]) == [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-proxy",
        "kube-scheduler",
        "kubectl",
        "kubelet",
    ]
    assert sorted(per_host["local-worker-1"]) == ["kube-proxy", "kubelet"]
    assert (
        Path(per_host["local-worker-1"]["kubelet"]["archive"]).read_bytes() == BINARIES["kubelet"]
    )
    assert [t.label for t in prepared.downloaded] == ["kubernetes 1.35.1 server tarball (amd64)"]


def test_prepare_without_binaries_downloads_nothing(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 1))
    target = for_inventory(inventory.path, "distro")

    def no_probe(_target: Target, _hosts: Sequence[str]) -> dict[str, str]:
        raise AssertionError("nodes probed although no binary is needed")

    prepared = kubernetes.prepare(target, {}, {"kubesmith_kubernetes_binaries": False}, no_probe)
    variables = prepared.variables.extravars()
    assert variables["kubesmith_kubernetes_binaries"] is False
    assert variables["kubesmith_kubernetes_files"] == {}
    assert prepared.downloaded == []
    assert set(variables["kubesmith_pod_cidrs"]) == {"local-cp-1", "local-worker-1"}
    assert Path(variables["kubesmith_encryption_config"]).stat().st_mode & 0o777 == 0o600
    kinds = {o["kind"] for o in variables["kubesmith_coredns_manifests"]}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds


def test_binaries_are_on_unless_turned_off(tmp_path: Path) -> None:
    """The configuration-only mode is explicit: on by default, off by the stack setting or a
    run's variable, and the run's variable wins either way."""
    from kubesmith.provision.variables import binaries_enabled

    inventory = write_inventory(tmp_path / "lab", local_spec(1, 0))
    assert binaries_enabled(inventory, {}) is True
    assert binaries_enabled(inventory, {"kubesmith_kubernetes_binaries": False}) is False
    assert binaries_enabled(inventory, {"kubesmith_kubernetes_binaries": "false"}) is False

    spec = local_spec(1, 0)
    off = spec.model_copy(
        update={"artifacts": spec.artifacts.model_copy(update={"kubernetes_binaries": False})}
    )
    configuration_only = write_inventory(tmp_path / "off", off)
    assert binaries_enabled(configuration_only, {}) is False
    assert binaries_enabled(configuration_only, {"kubesmith_kubernetes_binaries": True}) is True


def test_extra_args_are_checked_before_anything_else(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 0))
    data = yaml.safe_load(inventory.path.read_text())
    data["all"]["vars"]["kubesmith_extra_args"] = {"kube-apiserver": {"insecure-port": 8080}}
    inventory.path.write_text(yaml.safe_dump(data))
    target = for_inventory(inventory.path, "distro")
    with pytest.raises(KubesmithError, match=r"inventory.yml: kubesmith_extra_args.kube-apiserver"):
        kubernetes.prepare(
            target, {}, {"kubesmith_kubernetes_binaries": False}, fixed_probe("amd64")
        )
    assert not (target.pki_dir / "encryption-config.yaml").exists()


# --- the CLI ------------------------------------------------------------------------------


def serve_stack_files(files: LocalFiles, data: dict[str, Any]) -> None:
    files.put(SERVER_URL, TARBALL)
    crictl = data["components"]["crictl"]["version"]
    files.put(CRICTL_URL.format(v=crictl), b"crictl")


def test_artifacts_fetch_stores_verified_files_in_the_mirror_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: dict[str, Any]
) -> None:
    with serve(tmp_path / "www") as files:
        serve_stack_files(files, pinned)
        serve_pulumi(files, monkeypatch)
        stack = air_project(
            tmp_path / "p",
            monkeypatch,
            artifacts={"mirrorBaseUrl": files.url, "components": {"crictl": "release"}},
        )
        result = runner.invoke(
            app, ["artifacts", "fetch", "-s", stack, "--dest", str(tmp_path / "out")]
        )
        assert result.exit_code == 0, result.output
        # A second fetch finds everything in place and downloads nothing.
        before = len(files.requests)
        again = runner.invoke(
            app, ["artifacts", "fetch", "-s", stack, "--dest", str(tmp_path / "out")]
        )
        assert again.exit_code == 0, again.output
        assert len(files.requests) == before
        # Each file is named as `artifacts list` names it.
        assert "kubernetes-server 1.35.1 (amd64): present" in again.output
    # Bytes as they come, on stderr (plain lines: CliRunner is no terminal).
    assert re.search(r"downloading pulumi \S+ \(amd64\) from \S+ \(\d+ bytes\)", result.stderr)
    out = tmp_path / "out"
    # The controller's Pulumi CLI and plugins travel with the nodes' files.
    for tool in pulumi_tools.downloads("amd64", tmp_path):
        assert (out / tool.mirror_path).is_file(), tool.name
    assert (out / "dl.k8s.io/v1.35.1/kubernetes-server-linux-amd64.tar.gz").read_bytes() == TARBALL
    crictl = pinned["components"]["crictl"]["version"]
    assert (out / CRICTL_URL.format(v=crictl).split("://")[1]).read_bytes() == b"crictl"
    # The destination can be served as the next site's mirror: same paths as this one.
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        r.lstrip("/") for r in files.requests
    )


@pytest.mark.usefixtures("pinned")
def test_artifacts_fetch_with_a_wrong_checksum_fails_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(tmp_path / "www") as files:
        files.put(SERVER_URL, b"a truncated or tampered tarball")
        stack = air_project(tmp_path / "p", monkeypatch, artifacts={"mirrorBaseUrl": files.url})
        result = runner.invoke(
            app, ["artifacts", "fetch", "-s", stack, "--dest", str(tmp_path / "out")]
        )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert (
        f"{files.url}/dl.k8s.io/v1.35.1/kubernetes-server-linux-amd64.tar.gz: sha512"
        in result.output
    )
    assert hashlib.sha512(TARBALL).hexdigest() in result.output
    assert "Traceback" not in result.output
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_artifacts_list_names_urls_checksums_and_what_comes_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = air_project(
        tmp_path / "p",
        monkeypatch,
        artifacts={
            "mirrorBaseUrl": "http://mirror.invalid/files",
            "components": {"etcd": "release"},
        },
    )
    result = runner.invoke(
        app,
        ["artifacts", "list", "-s", stack, "--arch", "amd64", "--arch", "arm64"],
        terminal_width=400,
    )
    assert result.exit_code == 0, result.output
    release = versions.kubernetes_release("1.35.1")
    for arch in ("amd64", "arm64"):
        assert (
            f"http://mirror.invalid/files/dl.k8s.io/v1.35.1/kubernetes-server-linux-{arch}.tar.gz"
            in result.output
        )
        assert f"sha512:{release.checksums[arch]}" in result.output
        assert f"sha256:{versions.component('etcd').sha256[arch]}" in result.output
    for tool in pulumi_tools.downloads("arm64", tmp_path, "http://mirror.invalid/files"):
        assert f"{tool.url}\tsha256:{tool.checksum}" in result.output
    # Everything else comes from the site's apt mirror and registry: named, not fetched.
    assert "containerd: containerd" in result.output
    assert listed_images(result.output)[versions.image("coredns")] == "coredns"


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_artifacts_list_names_every_image_a_shipped_stack_pulls_with_what_needs_it(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    assert result.exit_code == 0, result.output
    cluster = {versions.image(name): name for name in ("sandbox", "coredns", "smoke")}
    assert listed_images(result.output) == {**cluster, versions.app_image("hello"): "app hello"}


def test_artifacts_list_names_an_apps_images_as_the_stack_renders_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack's apps[].values choose the image: the listed one is what the nodes will pull."""
    own = "registry.example:5000/team/hello:2.0"
    stack = air_project(
        tmp_path / "p", monkeypatch, stack="dev", apps=[{"name": "hello", "values": {"image": own}}]
    )
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    assert result.exit_code == 0, result.output
    images = listed_images(result.output)
    assert images[own] == "app hello"
    assert versions.app_image("hello") not in images
    # An image the cluster pulls anyway is listed once, with everything that needs it.
    stack = air_project(
        tmp_path / "q",
        monkeypatch,
        stack="dev",
        apps=[{"name": "hello", "values": {"image": versions.image("smoke")}}],
    )
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    assert result.exit_code == 0, result.output
    assert listed_images(result.output)[versions.image("smoke")] == "smoke, app hello"


def test_artifacts_list_stops_on_an_app_that_does_not_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = air_project(tmp_path / "p", monkeypatch, apps=[{"name": "hello"}])
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    assert result.exit_code == 2
    assert result.stdout == ""  # nothing listed when the list would be incomplete
    assert result.stderr.strip() == (
        "error: templates/apps/hello: no values-air.yaml (environments of hello: dev, local, prod)"
    )


def test_commands_refuse_a_version_whose_server_tarball_is_not_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_unpinned: str
) -> None:
    """Refused at `config check`, before anything is listed or downloaded."""
    stack = air_project(tmp_path / "p", monkeypatch, kubernetesVersion=server_unpinned)
    expected = (
        f"error: kubesmith:cluster.kubernetesVersion: {server_unpinned} has no published server "
        "tarball checksum pinned in versions.yaml; pick one of "
        + ", ".join(versions.kubernetes_versions())
    )
    for command in (
        ["config", "check", "-s", stack],
        ["artifacts", "list", "-s", stack],
        ["artifacts", "fetch", "-s", stack, "--dest", str(tmp_path / "o")],
    ):
        result = runner.invoke(app, command, terminal_width=400)
        assert result.exit_code == 2, (command, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert errors == [expected], command
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_artifacts_lists_the_records_provisioning_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same URLs, checksums and cache paths: the air-gap copy is what provisioning wants."""
    mirror = "http://mirror.invalid/files"
    stack = air_project(
        tmp_path / "p", monkeypatch, artifacts={"mirrorBaseUrl": mirror, "source": "release"}
    )
    spec = load_spec(stack)
    cache = tmp_path / "cache"
    assert airgap.stack_downloads(spec, cache, ["arm64"]) == [
        *(
            download.node_component(c, "arm64", cache, mirror)
            for c in versions.components().values()
        ),
        download.server_tarball(spec.kubernetes_version, "arm64", cache, mirror),
    ]
    # The controller's Pulumi tools: the same records kubesmith installs them from.
    assert airgap.controller_downloads(spec, cache, ["arm64"]) == pulumi_tools.downloads(
        "arm64", cache, mirror
    )


def test_artifacts_bad_arch_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = air_project(tmp_path / "p", monkeypatch)
    result = runner.invoke(app, ["artifacts", "list", "-s", stack, "--arch", "s390x"])
    assert result.exit_code == 2
    assert "--arch: unknown s390x (known: amd64, arm64)" in result.output


@pytest.mark.usefixtures("pinned")
def test_artifacts_list_gives_the_size_of_a_verified_cached_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = air_project(tmp_path / "p", monkeypatch)
    tarball = download.server_tarball("1.35.1", "amd64", artifact_cache_dir())
    tarball.cache_path.parent.mkdir(parents=True)
    tarball.cache_path.write_bytes(TARBALL)
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    line = next(x for x in result.output.splitlines() if x.startswith("kubernetes-server"))
    assert line.split("\t")[-1] == str(len(TARBALL))
    # A cached file that does not match its pin has no size: it would be fetched again.
    tarball.cache_path.write_bytes(b"changed")
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    line = next(x for x in result.output.splitlines() if x.startswith("kubernetes-server"))
    assert line.split("\t")[-1] == "-"


def test_artifacts_source_override_lists_every_release_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What to carry to a site that installs releases, from a stack that uses Debian's."""
    stack = air_project(tmp_path / "p", monkeypatch)
    plain = runner.invoke(app, ["artifacts", "list", "-s", stack])
    released = runner.invoke(app, ["artifacts", "list", "-s", stack, "--source", "release"])
    # The release files: tab-separated rows between the header and the images' header.
    tables = [r.output.split("# container image\tneeded by")[0] for r in (plain, released)]
    names = [
        [line.split("\t")[0] for line in table.splitlines() if "\t" in line][1:] for table in tables
    ]
    tools = ["pulumi", *(p.name for p in versions.pulumi_plugins().values())]
    assert names[0] == ["kubernetes-server", *tools]
    assert names[1] == [*versions.components(), "kubernetes-server", *tools]
    bad = runner.invoke(app, ["artifacts", "list", "-s", stack, "--source", "apt"])
    assert bad.exit_code == 2
    assert "--source: must be distro or release, got 'apt'" in bad.output


def with_version(inventory_path: Path, version: str) -> Target:
    data = yaml.safe_load(inventory_path.read_text())
    data["all"]["vars"]["kubesmith_cluster"]["kubernetesVersion"] = version
    inventory_path.write_text(yaml.safe_dump(data))
    return for_inventory(inventory_path, "distro")


def test_upgrades_go_one_minor_at_a_time_and_never_back(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 0))
    off = {"kubesmith_kubernetes_binaries": False}

    def prepare(version: str) -> None:
        kubernetes.prepare(with_version(inventory.path, version), {}, off, fixed_probe("amd64"))

    prepare("1.33.7")
    with pytest.raises(KubesmithError, match=r"1.33.7 -> 1.35.1 skips a minor.*pinned 1.34.x"):
        prepare("1.35.1")
    prepare("1.34.4")
    with pytest.raises(KubesmithError, match=r"1.34.4 -> 1.33.7 is a downgrade"):
        prepare("1.33.7")
    prepare("1.35.1")
    assert (tmp_path / "lab" / records.VERSION_FILE).read_text() == "1.35.1\n"


@pytest.mark.usefixtures("pinned")
def test_a_failed_download_does_not_record_the_new_version(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 0))
    kubernetes.prepare(
        with_version(inventory.path, "1.34.4"), {}, {"kubesmith_kubernetes_binaries": False},
        fixed_probe("amd64"),
    )  # fmt: skip
    with serve(tmp_path / "www") as files:
        target = for_inventory(
            with_version(inventory.path, "1.35.1").inventory.path, "distro", files.url
        )
        with pytest.raises(KubesmithError, match=r"download of kubernetes 1.35.1"):
            kubernetes.prepare(target, {}, {}, fixed_probe("amd64"))
    assert (tmp_path / "lab" / records.VERSION_FILE).read_text() == "1.34.4\n"


@pytest.mark.parametrize(("control_planes", "proxied"), [(1, False), (3, True)])
def test_kubernetes_packages_join_the_node_base_transaction(
    tmp_path: Path, control_planes: int, proxied: bool
) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(control_planes, 1))
    target = for_inventory(inventory.path, "distro")
    off = {"kubesmith_kubernetes_binaries": False}
    wanted = kubernetes.prepare(target, {}, off, fixed_probe("amd64")).packages
    assert wanted["local-cp-1"] == ["conntrack", "iptables"]
    # Only a local HA cluster's nodes without an apiserver run the haproxy API proxy.
    worker = ["conntrack", "haproxy", "iptables"] if proxied else ["conntrack", "iptables"]
    assert wanted["local-worker-1"] == worker
