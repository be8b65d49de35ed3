"""E2E (`make e2e`, never run on the project's machines): `kubesmith node remove` drains the
node and deletes its Node object when the API answers.

A 1+2 lab (bridge CNI) is provisioned with every binary; a pod is pinned to worker 2; then
`kubesmith node remove` of worker 2: the output says it was drained and its Node deleted,
the API no longer lists it, and the pod is gone with it (the drain evicted it). The
integration tier (tests/integration/test_node_remove.py) covers everything else of the
removal on real nodes, where the API never answers (no Kubernetes binaries here).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kubesmith import versions
from kubesmith.downloads import download, kube_binaries
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.target import artifact_cache_dir
from tests.e2e.conftest import binaries_source
from tests.e2e.test_cluster_e2e import REPO, kubesmith
from tests.integration.conftest import LxdHost, unique_name

#: A pod pinned to the node; the pause image (containerd's sandbox image) does nothing.
POD = """
apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: default}
spec:
  nodeName: NODE
  containers:
    - name: pinned
      image: IMAGE
      securityContext:
        allowPrivilegeEscalation: false
        runAsNonRoot: true
        runAsUser: 65535
        capabilities: {drop: [ALL]}
        seccompProfile: {type: RuntimeDefault}
"""


def test_a_removed_node_is_drained_and_its_node_object_deleted(
    lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if binaries_source() != "online":
        pytest.skip("the pod's image comes from a registry: needs KUBESMITH_E2E_ONLINE=1")
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    name = unique_name()
    lab = create_lab(
        name, stack=lxd_ready.stack, socket=lxd_ready.socket, control_planes=1, workers=2
    )
    try:
        inventory = str(lab.inventory_path)
        kubesmith("provision", "--inventory", inventory, "--source", "release")
        data = yaml.safe_load(lab.inventory_path.read_text(encoding="utf-8"))
        gone = list(data["all"]["children"]["kube_node"]["hosts"])[-1]
        config = tmp_path / "admin.conf"
        kubesmith("kubeconfig", "--inventory", inventory, "-o", str(config))
        version = data["all"]["vars"]["kubesmith_cluster"]["kubernetesVersion"]
        tarball = download.server_tarball(version, "amd64", artifact_cache_dir())
        binary = str(kube_binaries.bin_dir(tarball) / "kubectl")

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [binary, "--kubeconfig", str(config), *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )

        pod = POD.replace("NODE", gone).replace("IMAGE", versions.image("sandbox"))
        assert kubectl("apply", "-f", "-", stdin=pod).returncode == 0
        ready = kubectl("wait", "--for=condition=Ready", "pod/pinned", "--timeout=180s")
        assert ready.returncode == 0, ready.stderr

        said = kubesmith("node", "remove", gone, "-i", inventory, "--yes").stdout
        assert f"{gone}: drained: {gone}" in said, said
        assert f"{gone}: deleted: Node {gone}" in said, said
        nodes = kubectl("get", "nodes", "-o", "name").stdout.split()
        assert f"node/{gone}" not in nodes
        assert kubectl("get", "pod", "pinned").returncode != 0, "the drain evicted the pod"
    finally:
        destroy_lab(name, socket=lxd_ready.socket)
