"""The CIS Kubernetes Benchmark 1.12 (sections 1-4) on a real provisioned lab.

One lab (1 control plane + 1 worker) is provisioned with the real CLI, `kubesmith provision
--inventory ... --no-kubernetes-binaries`: every unit and configuration file is written, no
Kubernetes binary runs (none can be obtained here). Each node is probed in one SSH round trip
(kubesmith.cis.probe) and every item of src/kubesmith/cis/benchmark.yaml that applies to it
is judged (kubesmith.cis.evaluate); a failure lists each failing item with its evidence.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kubesmith.cis import benchmark as cis
from kubesmith.cis.evaluate import Result, evaluate
from kubesmith.cis.probe import NodeFile, parse_output, request_for
from tests.integration.conftest import KUBESMITH, InventoryLab, LxdHost, provisioned_lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Lab(InventoryLab):
    def role(self, host: str) -> cis.Role:
        return "control_plane" if host in self.control_planes else "worker"

    def probe(self, host: str) -> dict[str, NodeFile]:
        return parse_output(self.run(host, request_for(cis.load(), self.role(host)).command()))

    def judge(self, host: str) -> list[Result]:
        return evaluate(cis.load(), self.role(host), self.probe(host))


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("cis-home")
    with provisioned_lab(lxd_ready, home, control_planes=1, workers=1) as made:
        yield Lab(made.inventory_path)


@pytest.fixture(scope="module")
def judged(lab: Lab) -> dict[str, list[Result]]:
    return {host: lab.judge(host) for host in lab.hosts}


def listing(failed: list[tuple[str, Result]]) -> str:
    return "\n".join(f"{host} {r.id} ({r.title}): {'; '.join(r.evidence)}" for host, r in failed)


def test_every_checked_item_passes_on_every_node(judged: dict[str, list[Result]]) -> None:
    failed = [(host, r) for host, results in judged.items() for r in results if r.status == "fail"]
    assert failed == [], "CIS items failing:\n" + listing(failed)


def test_each_node_is_judged_on_every_item_of_its_role(
    lab: Lab, judged: dict[str, list[Result]]
) -> None:
    data = cis.load()
    for host, results in judged.items():
        assert [r.id for r in results] == [i.id for i in data.for_role(lab.role(host))], host
        checked = [r for r in results if r.status in ("pass", "fail")]
        # Every item with checks was judged from what the node has (none skipped).
        assert len(checked) == sum(bool(i.checks) for i in data.for_role(lab.role(host)))
    worker = {r.id: r for r in judged[next(h for h in lab.hosts if lab.role(h) == "worker")]}
    assert worker["4.2.1"].evidence == (
        "kubelet authentication.anonymous.enabled (/var/lib/kubelet/config.yaml)=false",
    )
    # The values kubelet gets are of the types it accepts (int, bool), not strings.
    kubelet = yaml.safe_load(lab.run(lab.hosts[-1], "cat /var/lib/kubelet/config.yaml"))
    assert kubelet["podPidsLimit"] == 4096
    assert kubelet["seccompDefault"] is True


def test_a_loosened_file_and_a_weakened_flag_on_a_real_node_are_caught(lab: Lab) -> None:
    host = lab.control_planes[0]
    config, unit = "/var/lib/kubelet/config.yaml", "/etc/systemd/system/kube-apiserver.service"
    backup = "/root/kst-cis-apiserver.service"
    lab.run(host, f"cp -p {unit} {backup} && chmod 0644 {config} && "
                  f"sed -i 's/--profiling=false/--profiling=true/' {unit}")  # fmt: skip
    try:
        failed = {r.id: r for r in lab.judge(host) if r.status == "fail"}
    finally:
        lab.run(host, f"chmod 0600 {config} && mv {backup} {shlex.quote(unit)}")
    assert failed.keys() == {"4.1.9", "1.2.15"}
    assert failed["4.1.9"].evidence == (f"{config}: mode 644, wanted 600 or more restrictive",)
    assert failed["1.2.15"].evidence == ("kube-apiserver --profiling=true: wanted false",)


def test_the_command_judges_every_node_through_ansible(lab: Lab) -> None:
    """`kubesmith cis check --inventory ... --json`: the same results; exit 0 when every item
    passes, 1 (naming the node) once one fails."""
    result = subprocess.run(
        [KUBESMITH, "cis", "check", "--inventory", str(lab.inventory), "--json"],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "KUBESMITH_PROJECT": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["benchmark"] == "1.12"
    assert [n["host"] for n in document["nodes"]] == lab.hosts
    failing = {r["id"] for n in document["nodes"] for r in n["results"] if r["status"] == "fail"}
    assert failing == set()
    host = lab.control_planes[0]
    lab.run(host, "chmod 0644 /etc/systemd/system/etcd.service")
    try:
        result = subprocess.run(
            [KUBESMITH, "cis", "check", "--inventory", str(lab.inventory)],
            capture_output=True, text=True, check=False, timeout=300,
            env={**os.environ, "KUBESMITH_PROJECT": str(REPO)},
        )  # fmt: skip
    finally:
        lab.run(host, "chmod 0600 /etc/systemd/system/etcd.service")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"CIS item(s) fail, on {host}" in result.stderr
    assert "1.1.7" in result.stdout + result.stderr
