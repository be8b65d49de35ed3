"""The Kubernetes binaries reach a real LXD node without an SSH copy (mount), or the node
downloads and checks them itself (fetch, as on AWS).

One 1-node lab (a control plane: all six binaries) and a test-made stand-in server tarball
(tests/binarylab.py: random bytes in the official layout, pinned to its computed sha512;
never Kubernetes). In order:

- mount: the verified directory is an LXD disk device, read-only, and nothing else of the
  controller's; the node installs from it, byte for byte the controller's verified files,
  and the controller copies nothing; a re-run changes nothing;
- fetch: the node downloads the tarball from a server on the bridge's host address (a test
  host the project created), checks the pinned sha512, unpacks what it needs; a tampered
  tarball is refused on the node and installs nothing;
- image: a node image built with the binaries (``lxd.imageKubernetesBinaries``; its own alias,
  minbase without the node base to keep the build short) gives a node that has them in
  place: the release role finds them and installs nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubesmith.downloads import download, kube_binaries
from kubesmith.local import lab as lab_module
from kubesmith.local.host import gateway_interface
from kubesmith.local.image import (
    KUBERNETES_PROPERTY,
    KubernetesBinaries,
    build_image,
    find_image,
    stack_kubernetes_binaries,
)
from kubesmith.local.lab import Lab
from kubesmith.local.shares import device
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.provision.target import artifact_cache_dir
from tests.binarylab import (
    ARCH,
    VERSION,
    deliver,
    pinned_tarball,
    served_path,
    write_standin_tarball,
)
from tests.clusterlab import serve
from tests.integration.conftest import LxdHost, unique_name

pytestmark = pytest.mark.integration

#: Small stand-ins: what is checked is where the bytes come from, not how many there are.
SIZES_MB = dict.fromkeys(("kube-apiserver", "kube-controller-manager", "kube-scheduler"), 2.0)
SIZES_MB |= {"kube-proxy": 1.5, "kubelet": 1.5, "kubectl": 1.0}
FROM_MOUNT = "Release | install the release binary from the mount"
FROM_CONTROLLER = "Release | install the release binary"
NODE_FETCH = "Release | download the release archive on the node"


class Tasks:
    """How each task ended, over every host and loop item (runner events)."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event"))
        data = event.get("event_data") or {}
        if kind not in ("runner_on_ok", "runner_on_failed", "runner_on_skipped"):
            return
        status = kind.removeprefix("runner_on_")
        if status == "ok" and (data.get("res") or {}).get("changed"):
            status = "changed"
        self.seen.setdefault(str(data.get("task")), set()).add(status)

    def statuses(self, task: str) -> set[str]:
        return self.seen.get(task, set())


def node_sh(made: Lab, command: str) -> tuple[int, str]:
    """``command`` as root on the lab's node (`lxc exec`: pylxd's execute leaks sockets)."""
    result = subprocess.run(
        ["lxc", "exec", made.nodes[0].name, "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_binaries_by_mount_then_by_node_fetch(
    lab: Callable[..., Lab], lxd_ready: LxdHost, tmp_path: Path
) -> None:
    made = lab(control_planes=1, workers=0, name=unique_name("bin-"))
    node = made.nodes[0].name
    mirror = tmp_path / "mirror"
    sha512 = write_standin_tarball(served_path(mirror), SIZES_MB)
    names = sorted(SIZES_MB)
    # What an earlier release's delivery left (an upgrade), beside a device that is not ours.
    old_release = tmp_path / "old-release"
    old_release.mkdir()
    instance = lxd_ready.client().instances.get(node)
    instance.devices["kubesmith-kubernetes-1-34-4"] = {
        "type": "disk",
        "source": str(old_release),
        "path": "/mnt/old",
        "readonly": "true",
    }
    instance.devices["user-share"] = {
        "type": "disk",
        "source": str(old_release),
        "path": "/mnt/user",
        "readonly": "true",
    }
    instance.save(wait=True)
    with pinned_tarball(sha512), serve(mirror) as files:
        tasks = Tasks()
        prepared, run = deliver(made.inventory_path, "mount", files.url, tasks)
        run.raise_for_failure("mount delivery")
        tarball = download.server_tarball(VERSION, ARCH, artifact_cache_dir())
        verified = kube_binaries.sha256_of_unpacked(tarball)

        # The one device: the verified binaries only, read-only; the old release's is gone,
        # the user's kept.
        devices = lxd_ready.client().instances.get(node).devices
        assert "user-share" in devices
        ours = {k: v for k, v in devices.items() if k.startswith("kubesmith-")}
        assert ours == {"kubesmith-kubernetes-1-35-1": device(prepared.mounts[0])}
        assert ours["kubesmith-kubernetes-1-35-1"]["readonly"] == "true"
        assert ours["kubesmith-kubernetes-1-35-1"]["source"] == str(kube_binaries.bin_dir(tarball))
        status, output = node_sh(made, f"touch /var/lib/kubesmith/releases/kubernetes/{VERSION}/x")
        assert status != 0, "the node could write into the controller's verified binaries"
        assert "Read-only file system" in output

        # Installed from the mount, byte for byte what the controller verified; no SSH copy.
        assert tasks.statuses(FROM_MOUNT) == {"changed"}
        assert tasks.statuses(FROM_CONTROLLER) <= {"skipped"}
        paths = " ".join(f"/usr/local/bin/{n}" for n in names)
        status, output = node_sh(
            made, f"sha256sum $(readlink -f {paths}) && stat -L -c '%U %a' {paths}"
        )
        assert status == 0, output
        lines = output.splitlines()
        assert {
            line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in lines[:6]
        } == verified
        assert set(lines[6:]) == {"root 755"}

        again = Tasks()
        _, rerun = deliver(made.inventory_path, "mount", files.url, again)
        rerun.raise_for_failure("mount delivery re-run")
        assert sum(s.changed for s in rerun.stats.values()) == 0
        assert again.statuses(FROM_MOUNT) <= {"skipped"}
        assert lxd_ready.client().instances.get(node).devices == devices

    # Fetch: the node downloads from a server on the bridge's host address (project-made).
    node_sh(made, f"rm -rf /opt/kubesmith/kube*/{VERSION} /usr/local/bin/kube*")
    bridge = gateway_interface(lxd_ready.lxd.subnet_network).split("/")[0]
    with pinned_tarball(sha512), serve(mirror, bridge) as files:
        fetched = Tasks()
        _, run = deliver(made.inventory_path, "fetch", files.url, fetched)
        run.raise_for_failure("fetch delivery")
        # Downloaded once (the first binary), found verified for the others.
        assert fetched.statuses(NODE_FETCH) == {"changed", "ok"}
        assert files.requests == [f"/dl.k8s.io/v{VERSION}/kubernetes-server-linux-{ARCH}.tar.gz"]
        status, output = node_sh(made, f"sha256sum $(readlink -f {paths})")
        assert status == 0, output
        assert {
            line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in output.splitlines()
        } == verified
        _, rerun = deliver(made.inventory_path, "fetch", files.url)
        assert sum(s.changed for s in rerun.stats.values()) == 0
        assert len(files.requests) == 1, "a node downloaded again"

    # A tampered mirror: the node refuses the archive and installs nothing.
    node_sh(
        made,
        f"rm -rf /opt/kubesmith/kube*/{VERSION} /var/cache/kubesmith /usr/local/bin/kube*",
    )
    served_path(mirror).write_bytes(hashlib.sha512(b"tampered").digest() * 1024)
    with pinned_tarball(sha512), serve(mirror, bridge) as files:
        _, run = deliver(made.inventory_path, "fetch", files.url)
    assert not run.ok
    assert "checksum" in run.failures[0].describe().lower()
    status, _ = node_sh(made, f"ls /opt/kubesmith/kubelet/{VERSION}/kubelet")
    assert status != 0, "a binary was installed from a tampered archive"


def test_binaries_baked_into_the_image_are_found_in_place(
    lab: Callable[..., Lab], lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    sha512 = write_standin_tarball(served_path(mirror), SIZES_MB)
    alias = unique_name("kst-img-")
    client = lxd_ready.client()
    base, lxd = load_lxd_spec(lxd_ready.stack)
    asking = base.model_copy(
        update={
            "kubernetes_version": VERSION,
            "lxd": lxd.model_copy(update={"image": alias, "image_kubernetes_binaries": True}),
            "artifacts": base.artifacts.model_copy(
                update={"mirror_base_url": f"file://{mirror}", "kubernetes_binaries": True}
            ),
        }
    )
    try:
        with pinned_tarball(sha512):
            binaries = stack_kubernetes_binaries(asking, ARCH)
            assert isinstance(binaries, KubernetesBinaries)
            built = build_image(client, alias, kubernetes=binaries)
            assert built.built
            image = find_image(client, alias)
            assert image is not None
            assert image.properties[KUBERNETES_PROPERTY] == VERSION
            # Nodes of this lab launch from the image with the binaries.
            monkeypatch.setattr(
                lab_module,
                "load_lxd_spec",
                lambda *_args, **_kwargs: (asking, asking.lxd),
            )
            made = lab(control_planes=1, workers=0, name=unique_name("bin-"))
            tasks = Tasks()
            _, run = deliver(made.inventory_path, "mount", f"file://{mirror}", tasks)
            run.raise_for_failure("mount delivery onto an image with the binaries")
        assert sum(s.changed for s in run.stats.values()) == 0
        assert tasks.statuses(FROM_MOUNT) <= {"skipped"}
        assert tasks.statuses(FROM_CONTROLLER) <= {"skipped"}
        tarball = download.server_tarball(VERSION, ARCH, artifact_cache_dir())
        verified = kube_binaries.sha256_of_unpacked(tarball)
        paths = " ".join(f"/usr/local/bin/{n}" for n in sorted(verified))
        status, output = node_sh(made, f"sha256sum $(readlink -f {paths})")
        assert status == 0, output
        assert {
            line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in output.splitlines()
        } == verified
    finally:
        leftover = find_image(client, alias)
        if leftover is not None:
            leftover.delete(wait=True)
