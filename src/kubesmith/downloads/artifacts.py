"""Upstream release artifacts: fetched once into the controller's cache, verified first.

A download goes to a temporary file beside its cache slot, its checksum (sha256; sha512 for
the Kubernetes release tarballs) is computed while it streams, and only a download that
matches the checksum pinned in versions.yaml is moved into place. Nothing reaches a node
before every artifact of the run has been verified, so a wrong checksum (a tampered mirror,
a truncated file, a mistyped pin) changes no node.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubesmith.errors import KubesmithError
from kubesmith.versions import Component

_CHUNK = 1 << 20
#: `uname -m` / ansible_architecture -> the architecture names releases use.
MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Artifact:
    component: Component
    arch: str
    url: str
    sha256: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.component.name} {self.component.version} ({self.arch})"


def release_arch(machine: str) -> str:
    try:
        return MACHINE_ARCH[machine]
    except KeyError:
        raise KubesmithError(
            f"unsupported node architecture {machine!r} (supported: amd64, arm64)"
        ) from None


def plan(
    component: Component, arch: str, cache_dir: Path, mirror_base_url: str | None = None
) -> Artifact:
    """Where ``component`` for ``arch`` comes from and where it is cached."""
    try:
        checksum = component.checksum(arch)
    except KeyError as exc:
        raise KubesmithError(str(exc.args[0])) from None
    return Artifact(
        component=component,
        arch=arch,
        url=component.url(arch, mirror_base_url),
        sha256=checksum,
        path=plan_path(component, arch, cache_dir),
    )


def plan_path(component: Component, arch: str, cache_dir: Path) -> Path:
    """Where the verified download of ``component`` for ``arch`` is kept in the cache."""
    return cache_dir / component.name / component.version / arch / component.filename(arch)


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(artifact: Artifact, *, timeout: float = 60.0) -> bool:
    """Make sure the verified artifact is in the cache; return True when it was downloaded."""
    return verified_download(
        artifact.url,
        artifact.path,
        algorithm="sha256",
        expected=artifact.sha256,
        label=artifact.label,
        timeout=timeout,
    )


def verified_download(
    url: str, path: Path, *, algorithm: str, expected: str, label: str, timeout: float = 60.0
) -> bool:
    """Put the download of ``url`` at ``path`` only if its ``algorithm`` digest is
    ``expected``; a file already there that matches is kept. True when it was downloaded."""
    if path.is_file():
        if digest_of(path, algorithm) == expected:
            return False
        # A cached file that no longer matches its pin is useless: fetch it again.
        path.unlink()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    digest = hashlib.new(algorithm)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            partial.open("wb") as out,
        ):
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise KubesmithError(
            f"{url}: download of {label} failed: {reason}",
            hint="offline? set kubesmith:cluster.artifacts.mirrorBaseUrl to a mirror of the "
            "release files, or artifacts.source: distro",
        ) from None
    got = digest.hexdigest()
    if got != expected:
        partial.unlink(missing_ok=True)
        raise KubesmithError(
            f"{url}: {algorithm} {got} does not match {expected} pinned for "
            f"{label} in versions.yaml; nothing was installed"
        )
    partial.replace(path)
    return True


def fetch_all(artifacts: Iterable[Artifact]) -> list[Artifact]:
    """Fetch and verify every artifact; return those that were downloaded (not cached)."""
    return [a for a in artifacts if fetch(a)]
