"""Every file a stack downloads, for `kubesmith artifacts list|fetch` (air-gapped sites).

A stack downloads the components it installs from upstream releases (versions.yaml, with
source ``release``) and the Kubernetes server tarball of its version. `fetch` stores them in
the mirror layout (<dest>/<host>/<path>), the layout ``kubesmith:cluster.artifacts
.mirrorBaseUrl`` expects: serve <dest> over HTTP inside the site and point the stack at it.
Debian packages (source ``distro``) and container images come from the site's own apt mirror
and registry; `list` names them so nothing is forgotten.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kubesmith import versions
from kubesmith.downloads import artifacts, kube_binaries
from kubesmith.downloads.artifacts import digest_of, verified_download
from kubesmith.errors import KubesmithError
from kubesmith.spec import ClusterSpec

ARCHES = versions.ARCHITECTURES
#: Images the cluster pulls: the pod sandbox, CoreDNS (and the smoke test's).
IMAGES = ("sandbox", "coredns", "smoke")
#: Images of the flannel add-on, pulled only when kubesmith:cluster.cni.plugin is flannel.
FLANNEL_IMAGES = ("flannel", "flannel_cni_plugin")


@dataclass(frozen=True)
class Download:
    name: str
    version: str
    arch: str
    upstream: str
    url: str
    algorithm: str
    #: The published checksum, or "" when none is pinned (nothing can be fetched then).
    checksum: str
    #: Where provisioning keeps its verified copy on this controller.
    cache_path: Path

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.arch})"

    @property
    def mirror_path(self) -> str:
        """Where the file goes under a mirror: <host>/<path> of the upstream URL."""
        parts = urlsplit(self.upstream)
        return f"{parts.netloc}{parts.path}"


def stack_downloads(
    spec: ClusterSpec, cache_dir: Path, arches: Sequence[str] = ("amd64",)
) -> list[Download]:
    """The release files ``spec``'s nodes of ``arches`` need, with their pinned checksums."""
    mirror = spec.artifacts.mirror_base_url
    downloads = []
    for arch in arches:
        for name, component in versions.components().items():
            if spec.artifact_source(name) != "release":
                continue
            downloads.append(
                Download(
                    name=name,
                    version=component.version,
                    arch=arch,
                    upstream=component.url(arch),
                    url=component.url(arch, mirror),
                    algorithm="sha256",
                    checksum=component.sha256.get(arch, ""),
                    cache_path=artifacts.plan_path(component, arch, cache_dir),
                )
            )
        release = versions.kubernetes_release(spec.kubernetes_version)
        downloads.append(
            Download(
                name="kubernetes-server",
                version=release.version,
                arch=arch,
                upstream=release.url(arch),
                url=release.url(arch, mirror),
                algorithm=release.algorithm,
                checksum=release.checksums.get(arch, ""),
                cache_path=kube_binaries.cache_path(release, arch, cache_dir),
            )
        )
    return downloads


def distro_packages(spec: ClusterSpec) -> dict[str, tuple[str, ...]]:
    """Component -> the Debian packages the nodes install for it (source distro)."""
    return {
        name: component.distro_packages
        for name, component in versions.components().items()
        if spec.artifact_source(name) == "distro"
    }


def images(spec: ClusterSpec) -> dict[str, str]:
    names = IMAGES + (FLANNEL_IMAGES if spec.cni.plugin == "flannel" else ())
    return {name: versions.image(name) for name in names}


def verified_size(download: Download) -> int | None:
    """The size of the controller's verified copy, when it has one."""
    path = download.cache_path
    verified = download.checksum and path.is_file()
    if verified and digest_of(path, download.algorithm) == download.checksum:
        return path.stat().st_size
    return None


def fetch_to(download: Download, dest: Path, *, timeout: float = 120.0) -> tuple[Path, str]:
    """Put a verified copy of ``download`` under ``dest`` in the mirror layout.

    Returns the path and where it came from: "present" (already there and verified),
    "cache" (copied from the controller's verified copy) or the URL it was downloaded from.
    """
    if not download.checksum:
        raise KubesmithError(
            f"{download.label}: no published checksum is pinned in versions.yaml, so it is "
            "never downloaded",
            hint="add the published value to src/kubesmith/versions.yaml, or pick a pinned "
            "kubesmith:cluster.kubernetesVersion",
        )
    path = dest / download.mirror_path
    if path.is_file() and digest_of(path, download.algorithm) == download.checksum:
        return path, "present"
    if verified_size(download) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(download.cache_path, path)
        return path, "cache"
    verified_download(
        download.url,
        path,
        algorithm=download.algorithm,
        expected=download.checksum,
        label=download.label,
        timeout=timeout,
    )
    return path, download.url
