"""The Kubernetes binaries: one verified server tarball per version and architecture.

The official kubernetes-server-linux-<arch>.tar.gz holds every binary a node or control plane
runs. It is downloaded once into the controller's cache and checked against the sha512 the
release notes publish (versions.yaml); then the binaries are unpacked next to it, with the
sha256 of each as unpacked from the verified tarball, so a node can check the copy it installs
(kubesmith.provision.kubernetes decides how the binaries reach the nodes).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from kubesmith import versions
from kubesmith.downloads.download import Download, digest_of
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
#: Written beside the unpacked binaries: `sha256sum` lines of each, computed as it was unpacked.
_SHA256SUMS = ".sha256sums"


def bin_dir(tarball: Download) -> Path:
    """Where the binaries of ``tarball`` are unpacked: beside it in the cache."""
    return tarball.cache_path.parent / "bin"


def binaries_for(groups: Iterable[str]) -> list[str]:
    wanted: list[str] = []
    for group in groups:
        for name in BINARIES_BY_GROUP.get(group, ()):
            if name not in wanted:
                wanted.append(name)
    return sorted(wanted)


def unpack(tarball: Download) -> dict[str, Path]:
    """Every binary of the release, unpacked from the verified tarball (once); name -> path."""
    release = versions.kubernetes_release(tarball.version)
    binaries = bin_dir(tarball)
    paths = {name: binaries / name for name in release.binaries}
    marker = binaries / _UNPACKED_FROM
    done = marker.is_file() and marker.read_text(encoding="ascii").strip() == tarball.checksum
    if done and (binaries / _SHA256SUMS).is_file() and all(p.is_file() for p in paths.values()):
        return paths
    # Only a tarball that still matches its pin is unpacked (the cache could have been edited).
    if digest_of(tarball.cache_path, tarball.algorithm) != tarball.checksum:
        raise KubesmithError(
            f"{tarball.cache_path}: no longer matches its pinned {tarball.algorithm}"
        )
    binaries.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = {release.member_prefix + name: name for name in release.binaries}
    found: dict[str, str] = {}
    with tarfile.open(tarball.cache_path, mode="r:gz") as archive:
        for member in archive:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue
            source = archive.extractfile(member)
            assert source is not None
            partial = paths[name].with_name(f".{name}.part")
            digest = hashlib.sha256()
            with partial.open("wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            partial.chmod(0o755)
            partial.replace(paths[name])
            found[name] = digest.hexdigest()
    missing = sorted(set(release.binaries) - set(found))
    if missing:
        raise KubesmithError(
            f"{tarball.cache_path}: has no {', '.join(release.member_prefix + m for m in missing)}"
        )
    sums = "".join(f"{found[name]}  {name}\n" for name in sorted(found))
    (binaries / _SHA256SUMS).write_text(sums, encoding="ascii")
    marker.write_text(tarball.checksum + "\n", encoding="ascii")
    return paths


def sha256_of_unpacked(tarball: Download) -> dict[str, str]:
    """Binary -> sha256 of its copy as ``unpack`` took it from the verified tarball."""
    lines = (bin_dir(tarball) / _SHA256SUMS).read_text(encoding="ascii").splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
