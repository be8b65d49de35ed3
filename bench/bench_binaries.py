"""Seconds until every node of a 1+2 lab has its Kubernetes binaries (`make bench`).

The binaries are a test-made stand-in server tarball of realistic size and layout
(tests/binarylab.py: `kubernetes/server/bin/<name>` with random bytes, kube-apiserver 90 MB,
kube-controller-manager 85, kube-scheduler 65, kube-proxy 60, kubelet 75, kubectl 55; never
Kubernetes), pinned to its computed sha512 and served as a mirror by a local HTTP server.
Only the binaries are delivered (tests/playbooks/binaries.yml: the release role as the
Kubernetes roles call it, no service), each case on nodes without them:
  copy 1+2, cold     the first run: the controller downloads from the mirror, checks the
                     sha512 and unpacks (once per version), then copies as below
  copy 1+2           before: the controller sends each node its binaries over SSH
  mount 1+2          after (LXD): each node installs from its read-only mount
  mount re-run       nothing to do (must report no change)
  fetch 1+2          AWS's way, here on LXD: each node downloads the tarball itself from a
                     server on the bridge's host address and checks the sha512
  image build        the node image with the node base and the binaries baked in
                     (lxd.imageKubernetesBinaries; its own alias, deleted afterwards): build
                     seconds and the image's size, beside the same build without them
  image 1+2          nodes launched from that image: the release role finds the binaries in
                     place (must report no change)
The control plane gets all six binaries (430 MB), the workers kubelet and kube-proxy (135 MB).
Each row has the CPU the nodes and this machine (Ansible and the bench's own process: the
controller's checksums and unpacking) spent (bench/labrun.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

from tests.binarylab import (
    REALISTIC_MB,
    VERSION,
    deliver,
    pinned_tarball,
    served_path,
    write_standin_tarball,
)
from tests.clusterlab import serve

from bench.labrun import Run, bench_home, lab, measured, row
from kubesmith.local import lab as lab_module
from kubesmith.local.connection import connect
from kubesmith.local.host import gateway_interface
from kubesmith.local.image import build_stack_image, find_image
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.spec import ClusterSpec

REPO = Path(__file__).resolve().parents[1]
_NO_BINARIES = (
    f"rm -rf /opt/kubesmith/kube*/{VERSION} /usr/local/bin/kube* /var/cache/kubesmith/releases"
)


def _forget_binaries(names: list[str]) -> None:
    """Every node back to no binaries (the lab's other state stays)."""
    for name in names:
        subprocess.run(["lxc", "exec", name, "--", "sh", "-c", _NO_BINARIES], check=True)


def _deliver(inventory: Path, names: list[str], delivery: str, mirror: str) -> Run:
    return measured(names, lambda: deliver(inventory, delivery, mirror)[1], with_self=True)


def _image_rows(spec: ClusterSpec, mirror: str) -> list[dict[str, object]]:
    """Build the image with and without the binaries under a bench alias (forced, timed),
    then deliver onto a 1+2 lab launched from the one with them."""
    assert spec.lxd is not None
    client = connect()
    alias = "kubesmith-bench-bin"
    rows: list[dict[str, object]] = []
    try:
        for carried in (False, True):
            stack = spec.model_copy(
                update={
                    "kubernetes_version": VERSION,
                    "lxd": spec.lxd.model_copy(
                        update={"image": alias, "image_kubernetes_binaries": carried}
                    ),
                    "artifacts": spec.artifacts.model_copy(
                        update={"mirror_base_url": mirror, "kubernetes_binaries": True}
                    ),
                }
            )
            built = build_stack_image(client, stack, force=True)
            image = find_image(client, alias)
            assert image is not None
            rows.append(
                {
                    "case": f"image build, node base{' + binaries' if carried else ''}",
                    "seconds": round(built.seconds, 1),
                    "image_mb": round(int(image.size) / 1e6),
                }
            )
        with (
            mock.patch.object(lab_module, "load_lxd_spec", return_value=(stack, stack.lxd)),
            lab("bin-img", 1, 2) as (inventory, names),
        ):
            rows.append(row("image 1+2", _deliver(inventory, names, "mount", mirror), {}))
    finally:
        leftover = find_image(client, alias)
        if leftover is not None:
            leftover.delete(wait=True)
    return rows


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    _, lxd = load_lxd_spec("local", REPO)
    bridge = gateway_interface(lxd.subnet_network).split("/")[0]
    with bench_home("bench-binaries-"), tempfile.TemporaryDirectory(prefix="bin-mirror-") as www:
        mirror = Path(www)
        started = time.monotonic()
        sha512 = write_standin_tarball(served_path(mirror), REALISTIC_MB)
        made = round(time.monotonic() - started, 1)
        with (
            pinned_tarball(sha512),
            lab("bin", 1, 2) as (inventory, names),
            serve(mirror, bridge) as files,
        ):
            # The controller's cache is warmed first, so before and after start alike.
            cold = _deliver(inventory, names, "copy", files.url)
            rows.append(row("copy 1+2, cold", cold, {}))
            _forget_binaries(names)
            rows.append(row("copy 1+2", _deliver(inventory, names, "copy", files.url), {}))
            _forget_binaries(names)
            rows.append(row("mount 1+2", _deliver(inventory, names, "mount", files.url), {}))
            rows.append(row("mount re-run", _deliver(inventory, names, "mount", files.url), {}))
            _forget_binaries(names)
            rows.append(row("fetch 1+2", _deliver(inventory, names, "fetch", files.url), {}))
        with pinned_tarball(sha512):
            spec, _ = load_lxd_spec("local", REPO)
            rows += _image_rows(spec, f"file://{mirror}")
        shutil.rmtree(mirror, ignore_errors=True)
    rows.append({"case": "stand-in tarball written (not timed above)", "seconds": made})
    return rows
