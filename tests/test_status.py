"""`kubesmith status`: reading a node's probe and judging what needs attention (the probe
itself runs on real nodes in tests/integration/test_cluster.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from kubesmith.cluster import Cluster
from kubesmith.provision.status import (
    NodeStatus,
    expected_units,
    parse_probe,
    probe_command,
    problems_of,
)
from kubesmith.state import records
from kubesmith.state.certs import Expiry
from tests.clusterlab import local_spec

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
HA = Cluster(local_spec(3, 1), "https://127.0.0.1:6443")
PLANE = frozenset({"etcd", "kube_control_plane", "k8s_cluster"})
WORKER = frozenset({"kube_node", "k8s_cluster"})
MEMBERS = {"members": [{"name": f"cp-{i}"} for i in (3, 1, 2)]}


def probe_output(etcd: str = "active", healthy: bool = True) -> str:
    health = [{"endpoint": "https://127.0.0.1:2379", "health": healthy}]
    return "\n".join(
        [
            f"unit etcd {etcd}",
            "unit containerd active",
            "unit kubelet inactive",
            "version containerd 1.6.20~ds1",
            "version etcd 3.4.23",
            "version runc ",
            "link kubelet /opt/kubesmith/kubelet/1.35.1/kubelet",
            "link kube-apiserver ",
            f"etcd-health {json.dumps(health)}",
            f"etcd-members {json.dumps(MEMBERS)}",
        ]
    )


def plane(name: str, output: str) -> NodeStatus:
    return parse_probe(NodeStatus(name, sorted(PLANE), True), output)


def test_the_probe_is_read_into_units_versions_and_the_etcd_member() -> None:
    node = plane("cp-1", probe_output())
    assert node.units == {"etcd": "active", "containerd": "active", "kubelet": "inactive"}
    assert node.versions == {"containerd": "1.6.20~ds1", "etcd": "3.4.23", "kubelet": "1.35.1"}
    assert node.kubernetes == "1.35.1"
    assert node.etcd_healthy is True
    assert node.etcd_members == ["cp-1", "cp-2", "cp-3"]
    assert plane("cp-1", probe_output(healthy=False)).etcd_healthy is False
    assert plane("cp-1", "etcd-health {not json").etcd_healthy is False


def test_expected_services_follow_the_groups_and_the_binaries() -> None:
    assert expected_units(HA, PLANE, kubernetes=False) == ["etcd", "containerd"]
    assert expected_units(HA, WORKER, kubernetes=False) == ["containerd", "haproxy"]
    assert expected_units(HA, PLANE, kubernetes=True)[-5:] == [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ]
    single = Cluster(local_spec(1, 1), "https://10.0.0.1:6443")
    assert "haproxy" not in expected_units(single, WORKER, kubernetes=False)


def test_a_healthy_cluster_needs_nothing_and_each_problem_names_its_node() -> None:
    cert = Expiry(Path("etcd/server.crt"), NOW + dt.timedelta(days=300), False)
    ok_run = {"ok": True}
    nodes = [plane(f"cp-{i}", probe_output()) for i in (1, 2, 3)]
    assert problems_of(HA, nodes, False, cert, ok_run, NOW) == []

    nodes[2] = plane("cp-3", probe_output(etcd="failed", healthy=False))
    gone = NodeStatus("w-1", sorted(WORKER), False, "ssh: connect to host 10.0.0.9: timed out")
    due = Expiry(Path("nodes/w-1/kubelet.crt"), NOW + dt.timedelta(days=20), False)
    found = problems_of(HA, [*nodes, gone], False, due, {"ok": False, "failure": "w-1: x"}, NOW)
    assert found == [
        "cp-3: etcd is failed",
        "cp-3: its etcd member does not answer healthy",
        "w-1: unreachable: ssh: connect to host 10.0.0.9: timed out",
        "certificate nodes/w-1/kubelet.crt expires 2026-12-20 (20 days): "
        "renew with kubesmith certs --renew (docs/runbooks/certificates.md)",
        "the last provisioning run failed: w-1: x",
    ]


def test_members_that_differ_from_the_inventory_and_version_drift_are_named() -> None:
    cert = Expiry(Path("ca.crt"), NOW + dt.timedelta(days=3000), True)
    nodes = [plane(f"cp-{i}", probe_output()) for i in (1, 2)]
    found = problems_of(HA, nodes, True, cert, {"ok": True}, NOW)
    assert "cp-1: etcd members cp-1, cp-2, cp-3 differ from the inventory's cp-1, cp-2" in found
    assert "cp-1: kube-apiserver is unknown" in found
    spec = local_spec(3, 1, kubernetesVersion="1.34.4")
    drift = problems_of(
        Cluster(spec, "https://127.0.0.1:6443"), nodes[:1], True, cert, {"ok": True}, NOW
    )
    assert "cp-1: runs Kubernetes 1.35.1, the stack says 1.34.4" in drift


def test_nothing_recorded_is_itself_a_problem() -> None:
    found = problems_of(HA, [], False, None, None, NOW)
    assert found == [
        "no certificates on the controller: the cluster was never provisioned here",
        "no provisioning run recorded on this controller",
    ]


def test_the_last_run_record_keeps_the_binaries_choice_over_a_node_base_run(
    tmp_path: Path,
) -> None:
    assert records.last_run(tmp_path) is None
    records.record_run(tmp_path, ok=True, changed=3, failure="", kubernetes_binaries=False)
    records.record_run(tmp_path, ok=False, changed=0, failure="cp-1: x", kubernetes_binaries=None)
    found = records.last_run(tmp_path)
    assert found is not None
    assert (found["ok"], found["failure"], found["kubernetes_binaries"]) == (
        False,
        "cp-1: x",
        False,
    )
    (tmp_path / records.LAST_RUN_FILE).write_text("{torn", encoding="utf-8")
    assert records.last_run(tmp_path) is None


def test_the_probe_is_one_posix_shell_command() -> None:
    command = probe_command()
    assert "\n" not in command
    assert command.endswith("; true")
