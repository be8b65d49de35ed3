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
from kubesmith.local.host import gateway_interface
from kubesmith.local.stackspec import load_lxd_spec

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
        shutil.rmtree(mirror, ignore_errors=True)
    rows.append({"case": "stand-in tarball written (not timed above)", "seconds": made})
    return rows
