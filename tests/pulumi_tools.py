"""Pulumi CLI and plugin tarballs made by the tests, and versions.yaml pinned to them.

The tarballs have the published layout (the CLI: pulumi/pulumi and the language hosts beside
it; a plugin: pulumi-resource-<name> at the top) but hold small shell scripts, not Pulumi:
the real files cannot be obtained on the development machines.
"""

from __future__ import annotations

import copy
import hashlib
import io
import tarfile
from typing import Any

import pytest

from kubesmith import versions
from tests.clusterlab import LocalFiles, closed_port


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cli_files(version: str = "3.267.0") -> dict[str, bytes]:
    """A CLI tarball's files: `pulumi version` prints ``version`` as the real one does."""
    return {
        "pulumi/pulumi": f"#!/bin/sh\necho v{version}\n".encode(),
        "pulumi/pulumi-language-python": b"#!/bin/sh\nexit 0\n",
    }


def plugin_files(name: str) -> dict[str, bytes]:
    return {f"pulumi-resource-{name}": f"#!/bin/sh\necho {name}\n".encode(), "LICENSE": b"x"}


def offline_pulumi_urls(monkeypatch: pytest.MonkeyPatch) -> str:
    """versions.yaml whose Pulumi URLs lead to a closed port on 127.0.0.1 (offline, no mirror).
    Returns that base URL."""
    base = f"http://127.0.0.1:{closed_port()}"
    data = copy.deepcopy(versions.load())
    for entry in (data["pulumi"]["cli"], *data["pulumi"]["plugins"].values()):
        entry["url"] = base + "/" + entry["url"].split("://", 1)[1].split("/", 1)[1]
    monkeypatch.setattr(versions, "load", lambda: data)
    return base


def serve_pulumi(
    files: LocalFiles,
    monkeypatch: pytest.MonkeyPatch,
    cli: bytes | None = None,
    plugins: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Serve a CLI and plugin tarballs for amd64 at their upstream paths (mirror layout) and
    pin their sha256 in a copy of versions.yaml. Returns that copy."""
    data = copy.deepcopy(versions.load())
    cli = tarball(cli_files()) if cli is None else cli
    plugins = plugins or {n: tarball(plugin_files(n)) for n in data["pulumi"]["plugins"]}
    for name, entry in (("pulumi", data["pulumi"]["cli"]), *data["pulumi"]["plugins"].items()):
        payload = cli if name == "pulumi" else plugins[name]
        entry["sha256"]["amd64"] = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(versions, "load", lambda: data)
    files.put(versions.pulumi_cli().url("amd64"), cli)
    for name, plugin in versions.pulumi_plugins().items():
        files.put(plugin.url("amd64"), plugins[name])
    return data
