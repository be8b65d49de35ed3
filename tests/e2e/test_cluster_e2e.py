"""A whole cluster on an LXD lab: provision with the binaries, the smoke test, the admin
kubeconfig from the controller, and an idempotent re-run. `make e2e` runs this file.

Three shapes: the `local` stack's (one control plane and its workers, bridge CNI), local HA
(three control planes behind each worker's API proxy, one worker) and flannel (one control
plane, one worker, the flannel add-on instead of the bridge CNI). Release files come from
KUBESMITH_ARTIFACTS_DIR (served on 127.0.0.1 as the mirror) or, with KUBESMITH_E2E_ONLINE=1,
from upstream; see conftest.py for when this is skipped. The flannel shape needs
KUBESMITH_E2E_ONLINE=1: its images come from a registry, which an artifacts directory does
not serve.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubesmith.downloads import download, kube_binaries
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.target import artifact_cache_dir
from tests.clusterlab import serve
from tests.e2e.conftest import binaries_source
from tests.integration.conftest import LxdHost, unique_name

REPO = Path(__file__).resolve().parents[2]
KUBESMITH = str(Path(sys.executable).with_name("kubesmith"))
#: name -> (control planes, workers) or None for the local stack's, and the pod network.
SHAPES: dict[str, tuple[tuple[int, int] | None, str]] = {
    "local": (None, "bridge"),
    "ha": ((3, 1), "bridge"),
    "flannel": ((1, 1), "flannel"),
}


def choose_pod_network(inventory: Path, plugin: str) -> None:
    data = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    data["all"]["vars"]["kubesmith_cluster"]["cni"] = {"plugin": plugin}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def kubesmith(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [KUBESMITH, *args], capture_output=True, text=True, check=False, timeout=3600
    )
    assert result.returncode == 0, f"kubesmith {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(params=sorted(SHAPES))
def provisioned(
    request: pytest.FixtureRequest,
    lxd_ready: LxdHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, list[str]]]:
    """A lab of the shape, provisioned with every component from its upstream release."""
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    shape, plugin = SHAPES[request.param]
    source = binaries_source()
    if plugin == "flannel" and source != "online":
        pytest.skip("flannel's images come from a registry: needs KUBESMITH_E2E_ONLINE=1")
    counts = {} if shape is None else {"control_planes": shape[0], "workers": shape[1]}
    name = unique_name()
    lab = create_lab(name, stack=lxd_ready.stack, socket=lxd_ready.socket, **counts)
    choose_pod_network(lab.inventory_path, plugin)
    args = ["provision", "--inventory", str(lab.inventory_path), "--source", "release"]
    try:
        if source == "online":
            yield lab.inventory_path, args
        else:
            assert source is not None
            with serve(Path(source)) as mirror:
                yield lab.inventory_path, [*args, "--mirror", mirror.url]
    finally:
        destroy_lab(name, socket=lxd_ready.socket)


def test_cluster_passes_the_smoke_test_and_reruns_clean(
    provisioned: tuple[Path, list[str]], tmp_path: Path
) -> None:
    inventory, provision = provisioned
    first = kubesmith(*provision)
    assert "hosts provisioned" in first.stdout

    smoke = kubesmith("smoke", "--inventory", str(inventory))
    assert "the cluster passed the smoke test" in smoke.stdout

    # The admin kubeconfig works from the controller, with the kubectl of the same release.
    config = tmp_path / "admin.conf"
    kubesmith("kubeconfig", "--inventory", str(inventory), "-o", str(config))
    spec = yaml.safe_load(inventory.read_text())["all"]["vars"]["kubesmith_cluster"]
    version = spec["kubernetesVersion"]
    tarball = download.server_tarball(version, "amd64", artifact_cache_dir())
    kubectl = kube_binaries.bin_dir(tarball) / "kubectl"
    nodes = subprocess.run(
        [str(kubectl), "--kubeconfig", str(config), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    hosts = yaml.safe_load(inventory.read_text())["all"]["hosts"]
    assert sorted(nodes.stdout.split()) == sorted(f"node/{h}" for h in hosts)
    check_pod_security_defaults(kubectl, config)

    again = kubesmith(*provision)
    assert f"{len(hosts)} hosts provisioned, 0 changes" in again.stdout


def pod(name: str, security_context: dict[str, object]) -> str:
    container = {
        "name": "c",
        "image": "example.invalid/never-pulled",
        "securityContext": security_context,
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [container]},
        }
    )


def check_pod_security_defaults(kubectl: Path, config: Path) -> None:
    """The cluster-wide Pod Security levels (the stack's defaults: enforce baseline, warn
    restricted) as the apiserver applies them: server-side dry runs in `default`, which run
    admission but create nothing and pull no image."""

    def dry_run(manifest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), "--kubeconfig", str(config), "create", "--dry-run=server", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    refused = dry_run(pod("privileged", {"privileged": True}))
    assert refused.returncode != 0, refused.stdout
    assert 'violates PodSecurity "baseline:latest"' in refused.stderr, refused.stderr
    warned = dry_run(pod("baseline-only", {}))
    assert warned.returncode == 0, warned.stderr
    assert 'would violate PodSecurity "restricted:latest"' in warned.stderr, warned.stderr
