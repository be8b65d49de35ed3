"""The Kubernetes binaries: one verified server tarball per version and architecture.

The official kubernetes-server-linux-<arch>.tar.gz holds every binary a node or control plane
runs. It is downloaded once into the controller's cache and checked against the sha512 the
release notes publish (versions.yaml); then only the binaries a host needs are unpacked next
to it, and the roles copy those (tens of MB each) instead of the whole tarball to every node.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubesmith import versions
from kubesmith.downloads.artifacts import digest_of, verified_download
from kubesmith.errors import KubesmithError

#: Binaries per inventory group; a host gets the union over its groups.
BINARIES_BY_GROUP: Mapping[str, tuple[str, ...]] = {
    "kube_control_plane": (
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    ),
    "k8s_cluster": ("kubelet", "kube-proxy"),
}
#: Written beside the unpacked binaries: the digest of the tarball they came from.
_UNPACKED_FROM = ".unpacked-from"


@dataclass(frozen=True)
class ServerTarball:
    release: versions.KubernetesRelease
    arch: str
    url: str
    checksum: str
    path: Path

    @property
    def label(self) -> str:
        return f"kubernetes {self.release.version} server tarball ({self.arch})"

    @property
    def bin_dir(self) -> Path:
        return self.path.parent / "bin"


def binaries_for(groups: Iterable[str]) -> list[str]:
    wanted: list[str] = []
    for group in groups:
        for name in BINARIES_BY_GROUP.get(group, ()):
            if name not in wanted:
                wanted.append(name)
    return sorted(wanted)


def plan(
    version: str, arch: str, cache_dir: Path, mirror_base_url: str | None = None
) -> ServerTarball:
    try:
        release = versions.kubernetes_release(version)
        checksum = release.checksum(arch)
    except KeyError as exc:
        raise KubesmithError(
            str(exc.args[0]),
            hint="pick a pinned version with kubesmith:cluster.kubernetesVersion, or run "
            "without the binaries (kubesmith_kubernetes_binaries: false) to only configure",
        ) from None
    return ServerTarball(
        release=release,
        arch=arch,
        url=release.url(arch, mirror_base_url),
        checksum=checksum,
        path=cache_path(release, arch, cache_dir),
    )


def cache_path(release: versions.KubernetesRelease, arch: str, cache_dir: Path) -> Path:
    """Where the verified tarball is kept in the controller's cache."""
    return cache_dir / "kubernetes" / release.version / arch / release.filename(arch)


def fetch(tarball: ServerTarball, *, timeout: float = 120.0) -> bool:
    """Download and verify the tarball unless the cache has it; True when it was downloaded."""
    return verified_download(
        tarball.url,
        tarball.path,
        algorithm=tarball.release.algorithm,
        expected=tarball.checksum,
        label=tarball.label,
        timeout=timeout,
    )


def unpack(tarball: ServerTarball) -> dict[str, Path]:
    """Every binary of the release, unpacked from the verified tarball (once); name -> path."""
    release = tarball.release
    paths = {name: tarball.bin_dir / name for name in release.binaries}
    marker = tarball.bin_dir / _UNPACKED_FROM
    done = marker.is_file() and marker.read_text(encoding="ascii").strip() == tarball.checksum
    if done and all(p.is_file() for p in paths.values()):
        return paths
    # Only a tarball that still matches its pin is unpacked (the cache could have been edited).
    if digest_of(tarball.path, release.algorithm) != tarball.checksum:
        raise KubesmithError(f"{tarball.path}: no longer matches its pinned {release.algorithm}")
    tarball.bin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = {release.member_prefix + name: name for name in release.binaries}
    found: set[str] = set()
    with tarfile.open(tarball.path, mode="r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue
            source = archive.extractfile(member)
            assert source is not None
            partial = paths[name].with_name(f".{name}.part")
            with partial.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            partial.chmod(0o755)
            partial.replace(paths[name])
            found.add(name)
    missing = sorted(set(release.binaries) - found)
    if missing:
        raise KubesmithError(
            f"{tarball.path}: has no {', '.join(release.member_prefix + m for m in missing)}"
        )
    marker.write_text(tarball.checksum + "\n", encoding="ascii")
    return paths
