"""A real container registry on loopback for the image tests: Debian's `docker-registry` (the
CNCF distribution registry) started directly on a free 127.0.0.1 port with its own config and
storage, and small OCI images made here and pushed to it with skopeo.

Nothing is faked: the registry stores what skopeo pushes and serves it over the distribution
API, exactly as a site's registry or mirror would.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Debian package -> the command it provides.
PACKAGES = {"docker-registry": "docker-registry", "skopeo": "skopeo"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def missing_packages() -> list[str]:
    return [package for package, command in PACKAGES.items() if shutil.which(command) is None]


def ensure_packages() -> str | None:
    """Install what is missing of PACKAGES with apt-get (idempotent: nothing when both are
    there); the reason they cannot be installed, or None."""
    missing = missing_packages()
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"needs {' '.join(missing)} (apt-get install -y {' '.join(missing)}, as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            return f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1:]}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Registry:
    """`docker-registry serve` on 127.0.0.1:<port>, storage and config under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = directory / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        path = self.directory / "config.yml"
        path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        return path

    def start(self, timeout: float = 30.0) -> None:
        config = self._config()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError(f"docker-registry did not answer on {self.url} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The Docker-Content-Digest the registry answers for repository:tag (HEAD)."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(answer.headers["Docker-Content-Digest"])

    def push(self, layout: Path, tag: str, repository: str) -> None:
        """Copy the OCI layout's image ``tag`` (every platform) to repository:tag here."""
        run_skopeo(
            "copy",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{layout}:{tag}",
            f"docker://{self.host}/{repository}:{tag}",
        )


@contextmanager
def running_registry(directory: Path) -> Iterator[Registry]:
    registry = Registry(directory)
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()


def run_skopeo(*args: str) -> str:
    result = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr}"
    return result.stdout


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(content: bytes) -> tuple[bytes, bytes]:
    """(a tar holding one file /hello, its gzip), byte for byte reproducible."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    raw = tar_bytes.getvalue()
    return raw, gzip.compress(raw, mtime=0)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def oci_image(
    layout: Path, tag: str, content: bytes, architectures: Sequence[str] = ("amd64", "arm64")
) -> str:
    """Add to the OCI layout ``layout`` a multi-platform image ``tag`` (an image index with one
    tiny image per architecture, each holding ``content``); returns the index's digest."""
    (layout / "oci-layout").parent.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifests = []
    for arch in architectures:
        raw, gz = _layer(content + arch.encode())
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **_blob(layout, _json(config))},
            "layers": [{"mediaType": OCI_LAYER, **_blob(layout, gz)}],
        }
        entry = {"mediaType": OCI_MANIFEST, **_blob(layout, _json(manifest))}
        manifests.append({**entry, "platform": {"architecture": arch, "os": "linux"}})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    described = {"mediaType": OCI_INDEX, **_blob(layout, _json(index))}
    top_path = layout / "index.json"
    top = json.loads(top_path.read_text()) if top_path.exists() else {"schemaVersion": 2}
    name = "org.opencontainers.image.ref.name"
    kept = [m for m in top.get("manifests", []) if m.get("annotations", {}).get(name) != tag]
    top["manifests"] = [*kept, {**described, "annotations": {name: tag}}]
    top_path.write_text(json.dumps(top))
    return str(described["digest"])
