"""Release downloads: fetched once into the cache, verified before anything can use them.

A real HTTP server on 127.0.0.1 serves the artifacts; the checksums are computed here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesmith.downloads import download
from kubesmith.errors import KubesmithError
from kubesmith.versions import Component
from tests.clusterlab import LocalFiles, serve

PAYLOAD = b"#!/bin/sh\necho fake crictl\n" * 100


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalFiles]:
    with serve(tmp_path / "www") as files:
        yield files


def component(url: str, sha256: str) -> Component:
    return Component(
        name="crictl",
        version="9.9.9",
        url_template=url,
        format="tar.gz",
        binaries={"crictl": "crictl"},
        sha256={"amd64": sha256},
        distro_packages=(),
    )


def publish(server: LocalFiles, relative: str, data: bytes = PAYLOAD) -> str:
    path = server.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{relative}"


def test_downloads_once_and_verifies(server: LocalFiles, tmp_path: Path) -> None:
    url = publish(
        server, "crictl-v{version}-linux-{arch}.tar.gz".format(version="9.9.9", arch="amd64")
    )
    template = url.replace("9.9.9", "{version}").replace("amd64", "{arch}")
    planned = download.node_component(
        component(template, hashlib.sha256(PAYLOAD).hexdigest()), "amd64", tmp_path / "cache"
    )
    assert (
        planned.cache_path == tmp_path / "cache/crictl/9.9.9/amd64/crictl-v9.9.9-linux-amd64.tar.gz"
    )
    assert download.fetch(planned) is True
    assert planned.cache_path.read_bytes() == PAYLOAD
    assert download.fetch(planned) is False  # cached and still matching: no second download
    assert len(server.requests) == 1


def test_a_wrong_checksum_leaves_nothing_in_the_cache(server: LocalFiles, tmp_path: Path) -> None:
    url = publish(server, "crictl.tar.gz")
    wrong = hashlib.sha256(b"something else").hexdigest()
    planned = download.node_component(component(url, wrong), "amd64", tmp_path / "cache")
    with pytest.raises(KubesmithError) as caught:
        download.fetch(planned)
    message = str(caught.value)
    assert url in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert f"does not match {wrong}" in message
    assert (
        list(planned.cache_path.parent.iterdir()) == []
    )  # neither the file nor a partial download


def test_a_tampered_cache_entry_is_fetched_again(server: LocalFiles, tmp_path: Path) -> None:
    url = publish(server, "crictl.tar.gz")
    planned = download.node_component(
        component(url, hashlib.sha256(PAYLOAD).hexdigest()), "amd64", tmp_path / "c"
    )
    download.fetch(planned)
    planned.cache_path.write_bytes(b"tampered")
    assert download.fetch(planned) is True
    assert planned.cache_path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_mirror_serves_the_upstream_path(server: LocalFiles, tmp_path: Path) -> None:
    upstream = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v{version}/crictl-{arch}.tgz"
    publish(
        server,
        "mirror/github.com/kubernetes-sigs/cri-tools/releases/download/v9.9.9/crictl-amd64.tgz",
    )
    planned = download.node_component(
        component(upstream, hashlib.sha256(PAYLOAD).hexdigest()),
        "amd64",
        tmp_path / "c",
        f"{server.url}/mirror",
    )
    assert download.fetch(planned) is True
    assert server.requests == [
        "/mirror/github.com/kubernetes-sigs/cri-tools/releases/download/v9.9.9/crictl-amd64.tgz"
    ]


def test_unreachable_source_names_the_url_and_hints_at_a_mirror(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/crictl.tgz"  # discard port: nothing listens
    planned = download.node_component(component(url, "0" * 64), "amd64", tmp_path / "c")
    with pytest.raises(KubesmithError) as caught:
        download.fetch(planned)
    assert url in caught.value.message
    assert caught.value.hint is not None
    assert "mirrorBaseUrl" in caught.value.hint


def test_unknown_architecture_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubesmithError, match=r"no published checksum for architecture 'arm64'"):
        download.node_component(component("http://x/{arch}", "0" * 64), "arm64", tmp_path)
    with pytest.raises(KubesmithError, match=r"unsupported node architecture 'riscv64'"):
        download.release_arch("riscv64")
    assert download.release_arch("x86_64") == "amd64"
    assert download.release_arch("aarch64") == "arm64"


def test_an_unpinned_download_is_never_fetched(server: LocalFiles, tmp_path: Path) -> None:
    url = publish(server, "crictl.tar.gz")
    listed = download.node_component(
        component(url, "0" * 64), "arm64", tmp_path / "c", allow_unpinned=True
    )
    assert listed.checksum == ""
    with pytest.raises(KubesmithError, match=r"crictl 9.9.9 \(arm64\): no published checksum"):
        download.fetch(listed)
    assert server.requests == []
