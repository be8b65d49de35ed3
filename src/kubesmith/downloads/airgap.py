"""Every file a stack downloads, for `kubesmith artifacts list|fetch` (air-gapped sites).

A stack downloads the components it installs from upstream releases (versions.yaml, with
source ``release``) and the Kubernetes server tarball of its version; the controller
downloads the Pulumi CLI and provider plugins (kubesmith.downloads.pulumi). `fetch` stores them in
the mirror layout (<dest>/<host>/<path>), the layout ``kubesmith:cluster.artifacts
.mirrorBaseUrl`` expects: serve <dest> over HTTP inside the site and point the stack at it.
Debian packages (source ``distro``) and container images come from the site's own apt mirror
and registry; `list` names them so nothing is forgotten.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubesmith import versions
from kubesmith.downloads import pulumi
from kubesmith.downloads.download import (
    ByteProgress,
    Download,
    fetch,
    is_verified,
    node_component,
    server_tarball,
)
from kubesmith.spec import ClusterSpec

ARCHES = versions.ARCHITECTURES
#: Images the cluster pulls: the pod sandbox, CoreDNS (and the smoke test's).
IMAGES = ("sandbox", "coredns", "smoke")
#: Images of the flannel add-on, pulled only when kubesmith:cluster.cni.plugin is flannel.
FLANNEL_IMAGES = ("flannel", "flannel_cni_plugin")
#: The NetworkPolicy agent's image, pulled only when kubesmith:cluster.cni.networkPolicy is
#: kube-router.
NETWORK_POLICY_IMAGES = {"none": (), "kube-router": ("kube_router",)}


def stack_downloads(
    spec: ClusterSpec, cache_dir: Path, arches: Sequence[str] = ("amd64",)
) -> list[Download]:
    """The release files ``spec``'s nodes of ``arches`` need, with their pinned checksums."""
    mirror = spec.artifacts.mirror_base_url
    downloads = []
    for arch in arches:
        for name, component in versions.components().items():
            if spec.artifact_source(name) == "release":
                downloads.append(
                    node_component(component, arch, cache_dir, mirror, allow_unpinned=True)
                )
        downloads.append(
            server_tarball(spec.kubernetes_version, arch, cache_dir, mirror, allow_unpinned=True)
        )
    return downloads


def controller_downloads(
    spec: ClusterSpec, cache_dir: Path, arches: Sequence[str] = ("amd64",)
) -> list[Download]:
    """The Pulumi CLI and plugins, for a controller of each of ``arches``."""
    mirror = spec.artifacts.mirror_base_url
    return [
        d for arch in arches for d in pulumi.downloads(arch, cache_dir, mirror, allow_unpinned=True)
    ]


def distro_packages(spec: ClusterSpec) -> dict[str, tuple[str, ...]]:
    """Component -> the Debian packages the nodes install for it (source distro)."""
    return {
        name: component.distro_packages
        for name, component in versions.components().items()
        if spec.artifact_source(name) == "distro"
    }


def images(spec: ClusterSpec) -> dict[str, str]:
    names = IMAGES + (FLANNEL_IMAGES if spec.cni.plugin == "flannel" else ())
    names += NETWORK_POLICY_IMAGES[spec.cni.network_policy]
    return {name: versions.image(name) for name in names}


def needed_images(
    spec: ClusterSpec, app_images: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Every image the stack's nodes pull -> what needs it: the cluster's images by their
    versions.yaml name, then each app's (``app_images``: app -> its images as rendered for
    the stack) as ``app <name>``."""
    needs: dict[str, list[str]] = {}
    for name, image in images(spec).items():
        needs.setdefault(image, []).append(name)
    for app, app_list in app_images.items():
        for image in app_list:
            needs.setdefault(image, []).append(f"app {app}")
    return needs


def verified_size(download: Download) -> int | None:
    """The size of the controller's verified copy, when it has one."""
    if is_verified(download, download.cache_path):
        return download.cache_path.stat().st_size
    return None


def fetch_to(
    download: Download,
    dest: Path,
    *,
    timeout: float = 120.0,
    progress: ByteProgress | None = None,
) -> tuple[Path, str]:
    """Put a verified copy of ``download`` under ``dest`` in the mirror layout.

    Returns the path and where it came from: "present" (already there and verified),
    "cache" (copied from the controller's verified copy) or the URL it was downloaded from.
    """
    path = dest / download.mirror_path
    if is_verified(download, path):
        return path, "present"
    if verified_size(download) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(download.cache_path, path)
        return path, "cache"
    fetch(download, path, timeout=timeout, progress=progress)
    return path, download.url
