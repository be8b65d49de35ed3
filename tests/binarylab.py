"""Stand-in Kubernetes binaries on real nodes: what the binaries integration test and
bench/bench_binaries.py share.

The project's machines cannot obtain the Kubernetes server tarball, so these are test-made
tarballs in its layout (``kubernetes/server/bin/<name>``) holding random bytes of the sizes
asked for; they are never Kubernetes. versions.yaml is pinned to the tarball's sha512 (as
the unit tests pin theirs) while it is in use, and it is served as a mirror in the
<host>/<path> layout, so the controller (mount, copy) or the nodes (fetch) download it the way
they would download the real one.

`deliver` runs what provisioning does for the binaries and nothing else: the controller's
preparation (kubesmith.provision.kubernetes.prepare, for the delivery asked), the mounts
(kubesmith.local.shares.attach), then tests/playbooks/binaries.yml, which gives each node's
binaries to the release role exactly as the control_plane, kubelet and kube_proxy roles do,
without writing or starting any service (stand-ins cannot run).
"""

from __future__ import annotations

import copy
import hashlib
import os
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from kubesmith import versions
from kubesmith.downloads import download
from kubesmith.local.shares import attach
from kubesmith.provision import kubernetes, provisioner
from kubesmith.provision.runner import EventHandler, RunRequest, RunResult, run_playbook
from kubesmith.provision.target import for_inventory
from kubesmith.provision.variables import DELIVERY_VAR, cluster_variables
from kubesmith.resources import playbooks_dir

VERSION = "1.35.1"
ARCH = "amd64"
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "binaries.yml"
#: Sizes of the binaries of a release of the pinned versions, in MB (rounded).
REALISTIC_MB = {
    "kube-apiserver": 90,
    "kube-controller-manager": 85,
    "kube-scheduler": 65,
    "kube-proxy": 60,
    "kubelet": 75,
    "kubectl": 55,
}
_CHUNK = 1 << 20


def write_standin_tarball(path: Path, sizes_mb: Mapping[str, float]) -> str:
    """A server tarball in the official layout with random binaries; its sha512."""
    release = versions.kubernetes_release(VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Random bytes do not compress: the fastest level costs the least CPU for the same size.
    with tarfile.open(path, mode="w:gz", compresslevel=1) as tar:
        for name in release.binaries:
            size = int(sizes_mb.get(name, 1) * _CHUNK)
            info = tarfile.TarInfo(release.member_prefix + name)
            info.size, info.mode = size, 0o755
            tar.addfile(info, _RandomFile(size))
    return download.digest_of(path, "sha512")


class _RandomFile:
    """``size`` random bytes, read like a file without holding them all."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


@contextmanager
def pinned_tarball(sha512: str) -> Iterator[None]:
    """versions.yaml with VERSION's server tarball pinned to ``sha512`` for ARCH."""
    data = copy.deepcopy(versions.load())
    data["kubernetes"]["versions"][VERSION]["server"] = {ARCH: sha512}
    data["kubernetes"]["versions"][VERSION]["server"]["arm64"] = hashlib.sha512(b"").hexdigest()
    with mock.patch.object(versions, "load", return_value=data):
        yield


def served_path(mirror_root: Path) -> Path:
    """Where a mirror rooted at ``mirror_root`` keeps VERSION's server tarball."""
    release = versions.kubernetes_release(VERSION)
    return mirror_root / release.url(ARCH).split("://", 1)[1]


def deliver(
    inventory: Path,
    delivery: str,
    mirror: str,
    on_event: EventHandler | None = None,
) -> tuple[kubernetes.Prepared, RunResult]:
    """Put every node's binaries in place by ``delivery`` (see the module doc)."""
    target = for_inventory(inventory, "distro", mirror)
    extravars: dict[str, Any] = {DELIVERY_VAR: delivery, "kubesmith_kubernetes_binaries": True}
    prepared = kubernetes.prepare(target, {}, extravars, provisioner.probe_architectures)
    attach(prepared.mounts)
    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=str(PLAYBOOK),
        extravars={
            **cluster_variables(target.inventory.cluster).extravars(),
            **prepared.variables.extravars(),
        },
        env={"ANSIBLE_FILTER_PLUGINS": str(playbooks_dir() / "filter_plugins")},
    )
    return prepared, run_playbook(request, on_event)
