"""Small clusters on paper for the cluster tests: an inventory file as `kubesmith lab up`
writes it (same builder), without any machine behind it."""

from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesmith.nodes import Node, node_name
from kubesmith.provision.inventory import (
    Inventory,
    api_endpoint,
    build_inventory,
    dump_inventory,
    load_inventory,
)
from kubesmith.spec import ClusterSpec, parse_cluster
from tests.conftest import REPO


def local_spec(control_planes: int = 1, workers: int = 1, **overrides: object) -> ClusterSpec:
    raw = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]["kubesmith:cluster"]
    raw.update(controlPlanes=control_planes, workers=workers, **overrides)
    return parse_cluster(raw)


def nodes_of(spec: ClusterSpec, first_octet: int = 10) -> list[Node]:
    found = []
    for role, count in (("control_plane", spec.control_planes), ("worker", spec.workers)):
        for i in range(1, count + 1):
            address = f"10.203.0.{first_octet + len(found)}"
            found.append(Node(node_name(spec.name, role, i), role, address, None, "root"))  # type: ignore[arg-type]
    return found


def write_inventory(
    directory: Path, spec: ClusterSpec, nodes: list[Node] | None = None
) -> Inventory:
    nodes = nodes if nodes is not None else nodes_of(spec)
    data = build_inventory(spec, nodes, endpoint=api_endpoint(spec, nodes))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "inventory.yml"
    path.write_text(dump_inventory(data), encoding="utf-8")
    return load_inventory(path)


class LocalFiles:
    """A real HTTP server on ``host`` (127.0.0.1 unless a test node must reach it: the
    project's LXD bridge address) serving ``root`` (a mirror in <host>/<path> layout)."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            (host, 0), partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def put(self, upstream: str, data: bytes) -> None:
        """Serve ``data`` where a mirror of ``upstream`` keeps it."""
        path = self.root / upstream.split("://", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@contextmanager
def serve(root: Path, host: str = "127.0.0.1") -> Iterator[LocalFiles]:
    root.mkdir(parents=True, exist_ok=True)
    files = LocalFiles(root, host)
    files.thread.start()
    try:
        yield files
    finally:
        files.httpd.shutdown()
        files.httpd.server_close()


def server_tarball(binaries: dict[str, bytes], prefix: str = "kubernetes/server/bin/") -> bytes:
    """A kubernetes-server tarball in the official layout holding ``binaries``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in binaries.items():
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def air_project(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, stack: str = "air", **cluster_settings: Any
) -> str:
    """A project at ``root`` whose one stack (`air`) is the local stack without apps, with
    ``cluster_settings`` changed; KUBESMITH_PROJECT points at it. Returns the stack's name.

    Apps render for the environment named like the stack: give them (``apps=[...]``) with a
    stack named like one of theirs (``stack="dev"``)."""
    raw = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]["kubesmith:cluster"]
    raw.update({"apps": [], **cluster_settings})
    root.mkdir(parents=True, exist_ok=True)
    (root / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    document = yaml.safe_dump({"config": {"kubesmith:cluster": raw}})
    (root / f"Pulumi.{stack}.yaml").write_text(document)
    monkeypatch.setenv("KUBESMITH_PROJECT", str(root))
    return stack


def listed_images(output: str) -> dict[str, str]:
    """The container images `kubesmith artifacts list` names: image -> what needs it."""
    lines = output.splitlines()
    rows = lines[lines.index("# container image\tneeded by") + 1 :]
    return dict(row.split("\t") for row in rows)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_inventory(directory: Path) -> Path:
    """A kubesmith inventory whose one node is 127.0.0.1 on a port nothing listens on."""
    spec = parse_cluster({"name": "t1", "backend": "lxd", "lxd": {}})
    node = Node("t1-cp-1", "control_plane", "127.0.0.1", None, "root")
    data = build_inventory(spec, [node], endpoint="https://127.0.0.1:6443")
    data["all"]["hosts"]["t1-cp-1"]["ansible_port"] = closed_port()
    path = directory / "inventory.yml"
    path.write_text(dump_inventory(data), encoding="utf-8")
    return path
