"""A rolling upgrade of a running cluster: what the integration tier cannot see without an API
(tests/integration/test_upgrade.py checks the order and the files at configuration level).

One lab (one control plane, two workers, bridge CNI, `upgrade.maxUnavailable` 1) provisioned
with the previous pinned minor and its binaries, then `kubesmith upgrade --to NEW`:

- the upgrade drains, waits and uncordons (no "skipped" note);
- every node runs the new kubelet, is Ready and schedulable afterwards;
- each worker was cordoned and uncordoned (the kubelet's NodeNotSchedulable and
  NodeSchedulable events), one after the other: the first worker schedulable again before the
  second was cordoned;
- the smoke test passes afterwards, and a second upgrade has nothing to do.

Never run here (no Kubernetes binaries); `make e2e` runs it where they can be had (see
conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubesmith import versions
from kubesmith.downloads import download, kube_binaries
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.target import artifact_cache_dir
from tests.clusterlab import serve
from tests.e2e.conftest import binaries_source
from tests.integration.conftest import LxdHost, unique_name

REPO = Path(__file__).resolve().parents[2]
KUBESMITH = str(Path(sys.executable).with_name("kubesmith"))

_BY_MINOR = {versions.minor_of(v): v for v in versions.kubernetes_versions()}
NEW = _BY_MINOR[max(_BY_MINOR)]
OLD = _BY_MINOR[(versions.minor_of(NEW)[0], versions.minor_of(NEW)[1] - 1)]


def kubesmith(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [KUBESMITH, *args], capture_output=True, text=True, check=False, timeout=3600
    )
    assert result.returncode == 0, f"kubesmith {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def cluster(
    lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, list[str]]]:
    """A 1+2 lab provisioned with OLD; yields the inventory and the release-source options."""
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    source = binaries_source()
    assert source is not None
    name = unique_name()
    lab = create_lab(
        name, stack=lxd_ready.stack, socket=lxd_ready.socket, control_planes=1, workers=2
    )
    data = yaml.safe_load(lab.inventory_path.read_text(encoding="utf-8"))
    cluster = data["all"]["vars"]["kubesmith_cluster"]
    cluster.update(kubernetesVersion=OLD, cni={"plugin": "bridge"}, upgrade={"maxUnavailable": 1})
    lab.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        if source == "online":
            yield lab.inventory_path, []
        else:
            with serve(Path(source)) as mirror:
                yield lab.inventory_path, ["--mirror", mirror.url]
    finally:
        destroy_lab(name, socket=lxd_ready.socket)


def test_upgrade_drains_waits_and_uncordons_node_by_node(
    cluster: tuple[Path, list[str]], tmp_path: Path
) -> None:
    inventory, mirror = cluster
    release = ["--source", "release", *mirror]
    kubesmith("provision", "--inventory", str(inventory), *release)

    upgraded = kubesmith("upgrade", "--inventory", str(inventory), "--to", NEW, *release)
    assert "are skipped" not in upgraded.stderr
    assert f"upgraded to Kubernetes {NEW}" in upgraded.stdout

    config = tmp_path / "admin.conf"
    kubesmith("kubeconfig", "--inventory", str(inventory), "-o", str(config))
    kubectl = kube_binaries.bin_dir(download.server_tarball(NEW, "amd64", artifact_cache_dir()))

    def get(*args: str) -> dict[str, object]:
        shown = subprocess.run(
            [str(kubectl / "kubectl"), "--kubeconfig", str(config), "get", *args, "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        found: dict[str, object] = json.loads(shown.stdout)
        return found

    nodes = get("nodes")["items"]
    assert isinstance(nodes, list)
    for node in nodes:
        name = node["metadata"]["name"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{NEW}", name
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", name
        assert not node["spec"].get("unschedulable"), f"{name} is still cordoned"

    workers = list(yaml.safe_load(inventory.read_text())["all"]["children"]["kube_node"]["hosts"])
    events = get("events", "-A", "--field-selector", "involvedObject.kind=Node")["items"]
    assert isinstance(events, list)

    def when(node: str, reason: str) -> str:
        times = [
            e.get("lastTimestamp") or e.get("eventTime")
            for e in events
            if e["involvedObject"]["name"] == node and e["reason"] == reason
        ]
        assert times, f"{node}: no {reason} event"
        return str(max(times))

    first, second = workers[:2]
    assert when(first, "NodeNotSchedulable") <= when(first, "NodeSchedulable")
    assert when(first, "NodeSchedulable") <= when(second, "NodeNotSchedulable")

    smoke = kubesmith("smoke", "--inventory", str(inventory))
    assert "the cluster passed the smoke test" in smoke.stdout
    again = kubesmith("upgrade", "--inventory", str(inventory))
    assert f"nothing to upgrade: {inventory} runs Kubernetes {NEW}" in " ".join(
        again.stdout.split()
    )
