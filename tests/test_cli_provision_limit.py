"""`kubesmith provision --limit`: the limited hosts, then the plays of the others that read them.

The runs are recorded instead of started (the playbook itself runs on real LXD in
tests/integration/test_pulumi_up.py, where the Pulumi update makes the same two runs); the
inventory, Ansible's own pattern matching and the rules of kubesmith.provision.scope are real.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.provision.provisioner import Options
from kubesmith.provision.runner import HostStats, RunResult
from kubesmith.provision.scope import changed_hosts, load_record, matched_hosts, record_run
from kubesmith.state.paths import stack_dir
from kubesmith.state.pki import PkiReport
from tests.clusterlab import local_spec, nodes_of, write_inventory
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Options]:
    """The provisioning runs the command starts, each reported as one change per host."""
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    started: list[Options] = []

    class Outcome:
        pki = PkiReport()

        def __init__(self, hosts: list[str]) -> None:
            self.downloaded: list[Any] = []
            self.run = RunResult(
                "successful", 0, stats={h: HostStats(ok=1, changed=1) for h in hosts}
            )

    def fake(target: Any, options: Options, *_args: Any) -> Outcome:
        started.append(options)
        if options.limit is None:
            return Outcome(list(target.inventory.hostvars))
        return Outcome(matched_hosts(target.inventory.path, options.limit))

    monkeypatch.setattr("kubesmith.cli.provision.provision", fake)
    return started


def test_a_new_worker_then_only_the_pod_routes_of_the_others(runs: list[Options]) -> None:
    write_inventory(stack_dir("local"), local_spec(1, 3))
    result = runner.invoke(app, ["provision", "-s", "local", "--limit", "local-worker-3"])
    assert result.exit_code == 0, result.output
    assert runs == [
        Options(tags=[], limit="local-worker-3"),
        Options(tags=("cni",), limit="local-cp-1,local-worker-1,local-worker-2"),
    ]
    assert (
        "also on local-cp-1, local-worker-1, local-worker-2, only cni: "
        "pod routes to every node's range (bridge CNI)"
    ) in " ".join(result.output.split())
    assert "4 hosts provisioned, 4 changes" in result.output


def test_with_flannel_a_limited_run_stays_limited(runs: list[Options]) -> None:
    write_inventory(stack_dir("local"), local_spec(1, 2, cni={"plugin": "flannel"}))
    result = runner.invoke(app, ["provision", "-s", "local", "-l", "kube_node:!local-worker-1"])
    assert result.exit_code == 0, result.output
    assert runs == [Options(tags=[], limit="kube_node:!local-worker-1")]


def test_tags_the_user_chose_bound_the_extra_run(runs: list[Options]) -> None:
    write_inventory(stack_dir("local"), local_spec(1, 2))
    runner.invoke(app, ["provision", "-s", "local", "-l", "local-worker-2", "-t", "runtime"])
    assert runs == [Options(tags=["runtime"], limit="local-worker-2")]


def test_a_control_plane_brings_the_plays_that_read_it(runs: list[Options]) -> None:
    """The API proxy of the other nodes, the apiserver's and etcd's member lists."""
    write_inventory(stack_dir("local"), local_spec(3, 1))
    result = runner.invoke(app, ["provision", "-s", "local", "-l", "local-cp-3"])
    assert result.exit_code == 0, result.output
    assert runs[1] == Options(
        tags=("cni", "api_proxy", "control_plane", "etcd"),
        limit="local-cp-1,local-cp-2,local-worker-1",
    )


def test_a_limited_run_of_an_unchanged_host_stays_limited(runs: list[Options]) -> None:
    """The record of the last runs says what each host was provisioned with: re-running a
    node that did not change (a kubelet restart, a drain loop) touches no other node."""
    inventory = write_inventory(stack_dir("local"), local_spec(1, 2))
    record_run(stack_dir("local"), inventory, list(inventory.hostvars))
    runner.invoke(app, ["provision", "-s", "local", "-l", "local-worker-2"])
    assert runs == [Options(tags=[], limit="local-worker-2")]
    # Re-addressed since its record: the others' routes follow.
    moved = write_inventory(stack_dir("local"), local_spec(1, 2), nodes_of(local_spec(1, 2), 40))
    assert changed_hosts(moved, load_record(stack_dir("local")), ["local-worker-2"]) == {
        "local-worker-2": ("k8s_cluster", "kube_node")
    }


@pytest.mark.usefixtures("runs")
def test_a_host_gone_from_the_inventory_is_a_change_others_follow() -> None:
    three = write_inventory(stack_dir("local"), local_spec(1, 3))
    record_run(stack_dir("local"), three, list(three.hostvars))
    two = write_inventory(stack_dir("local"), local_spec(1, 2))
    assert changed_hosts(two, load_record(stack_dir("local")), []) == {
        "local-worker-3": ("k8s_cluster", "kube_node")
    }
    # Recording a run drops it.
    record_run(stack_dir("local"), two, ["local-cp-1"])
    assert set(load_record(stack_dir("local")) or {}) == {
        "local-cp-1",
        "local-worker-1",
        "local-worker-2",
    }
