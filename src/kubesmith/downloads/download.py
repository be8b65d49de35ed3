"""Every release file kubesmith downloads: one record type and one verified fetch.

A node component (etcd, containerd, runc, cni_plugins, crictl; sha256) and the Kubernetes
server tarball (sha512) are both a ``Download``, built here from versions.yaml, so each
one's URLs, pinned checksum and cache path are computed in one place, for provisioning and
for `kubesmith artifacts list|fetch` alike.

A download goes to a temporary file beside its destination, its checksum is computed while
it streams, and only a download that matches the checksum pinned in versions.yaml is moved
into place. Nothing reaches a node before every download of the run has been verified, so a
wrong checksum (a tampered mirror, a truncated file, a mistyped pin) changes no node.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kubesmith import versions
from kubesmith.errors import DownloadError, KubesmithError

# Small enough that progress moves often on a slow link.
_CHUNK = 1 << 18
#: `uname -m` / ansible_architecture -> the architecture names releases use.
MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: The name `kubesmith artifacts list` gives the Kubernetes server tarball.
SERVER_TARBALL = "kubernetes-server"


@dataclass(frozen=True)
class Download:
    name: str
    version: str
    arch: str
    upstream: str
    #: What is fetched: ``upstream``, or its copy under the stack's mirror.
    url: str
    algorithm: str
    #: The published checksum, or "" when none is pinned (nothing can be fetched then).
    checksum: str
    #: Where provisioning keeps its verified copy on this controller.
    cache_path: Path
    #: How messages name it.
    label: str

    @property
    def mirror_path(self) -> str:
        """Where the file goes under a mirror: <host>/<path> of the upstream URL."""
        parts = urlsplit(self.upstream)
        return f"{parts.netloc}{parts.path}"


#: Told (download, bytes so far, total bytes or None) as a download streams.
ByteProgress = Callable[[Download, int, int | None], None]


def release_arch(machine: str) -> str:
    try:
        return MACHINE_ARCH[machine]
    except KeyError:
        raise KubesmithError(
            f"unsupported node architecture {machine!r} (supported: amd64, arm64)"
        ) from None


def node_component(
    component: versions.Component,
    arch: str,
    cache_dir: Path,
    mirror_base_url: str | None = None,
    *,
    allow_unpinned: bool = False,
) -> Download:
    """``component`` for ``arch``; unless ``allow_unpinned``, refused when no sha256 is pinned."""
    if allow_unpinned:
        checksum = component.sha256.get(arch, "")
    else:
        try:
            checksum = component.checksum(arch)
        except KeyError as exc:
            raise KubesmithError(str(exc.args[0])) from None
    return Download(
        name=component.name,
        version=component.version,
        arch=arch,
        upstream=component.url(arch),
        url=component.url(arch, mirror_base_url),
        algorithm="sha256",
        checksum=checksum,
        cache_path=cache_dir / component.name / component.version / arch / component.filename(arch),
        label=f"{component.name} {component.version} ({arch})",
    )


def server_tarball(
    version: str,
    arch: str,
    cache_dir: Path,
    mirror_base_url: str | None = None,
    *,
    allow_unpinned: bool = False,
) -> Download:
    """The Kubernetes ``version`` server tarball for ``arch``; unless ``allow_unpinned``,
    refused when no checksum is pinned."""
    try:
        release = versions.kubernetes_release(version)
        checksum = release.checksums.get(arch, "") if allow_unpinned else release.checksum(arch)
    except KeyError as exc:
        raise KubesmithError(
            str(exc.args[0]),
            hint="pick a pinned version with kubesmith:cluster.kubernetesVersion, or run "
            "without the binaries (artifacts.kubernetesBinaries: false) to only configure",
        ) from None
    filename = release.filename(arch)
    return Download(
        name=SERVER_TARBALL,
        version=version,
        arch=arch,
        upstream=release.url(arch),
        url=release.url(arch, mirror_base_url),
        algorithm=release.algorithm,
        checksum=checksum,
        cache_path=cache_dir / "kubernetes" / version / arch / filename,
        label=f"kubernetes {version} server tarball ({arch})",
    )


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(download: Download, path: Path) -> bool:
    """Whether ``path`` holds ``download`` as pinned (never true for an unpinned one)."""
    return bool(download.checksum) and (
        path.is_file() and digest_of(path, download.algorithm) == download.checksum
    )


#: How a site without internet supplies what kubesmith downloads, for error messages.
SUPPLY_OFFLINE = (
    "set kubesmith:cluster.artifacts.mirrorBaseUrl to a mirror (https://...) or a directory "
    "(file:///...) that `kubesmith artifacts fetch --dest DIR` filled on a machine with internet"
)


def fetch(
    download: Download,
    path: Path | None = None,
    *,
    timeout: float = 120.0,
    progress: ByteProgress | None = None,
) -> bool:
    """Put ``download`` at ``path`` (default: its cache path) only if its digest is the pinned
    one; a file already there that matches is kept. True when it was downloaded.

    ``progress`` hears (download, bytes so far, total or None) when the transfer starts and
    after every chunk."""
    if not download.checksum:
        raise KubesmithError(
            f"{download.label}: no published checksum is pinned in versions.yaml, so it is "
            "never downloaded",
            hint="add the published value to src/kubesmith/versions.yaml, or pick a pinned "
            "kubesmith:cluster.kubernetesVersion",
        )
    path = path or download.cache_path
    if path.is_file():
        if digest_of(path, download.algorithm) == download.checksum:
            return False
        # A file that no longer matches its pin is useless: fetch it again.
        path.unlink()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        got = _stream(download, partial, timeout, progress or _silent)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = str(getattr(exc, "reason", None) or exc)
        raise DownloadError(
            f"{download.url}: download of {download.label} failed: {reason}",
            url=download.url,
            reason=reason,
            hint=f"offline? {SUPPLY_OFFLINE}, or artifacts.source: distro",
        ) from None
    if got != download.checksum:
        partial.unlink(missing_ok=True)
        raise KubesmithError(
            f"{download.url}: {download.algorithm} {got} does not match {download.checksum} "
            f"pinned for {download.label} in versions.yaml; nothing was installed"
        )
    partial.replace(path)
    return True


def _silent(_download: Download, _done: int, _total: int | None) -> None:
    pass


def _stream(download: Download, out_path: Path, timeout: float, progress: ByteProgress) -> str:
    """Copy the response to ``out_path``; its hex digest."""
    digest = hashlib.new(download.algorithm)
    with (
        urllib.request.urlopen(download.url, timeout=timeout) as response,
        out_path.open("wb") as out,
    ):
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        progress(download, done, total)
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            progress(download, done, total)
    return digest.hexdigest()


def fetch_all(downloads: Iterable[Download]) -> list[Download]:
    """Fetch and verify every download into the cache; return those that were downloaded."""
    return [d for d in downloads if fetch(d)]
