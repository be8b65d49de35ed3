"""The rolling upgrade's plan and order (kubesmith.provision.upgrade), its refusals, and how
`kubesmith provision`, `kubesmith upgrade` and the Pulumi Provisioning resource reach it.

Provisioning runs and the API actions are recorded instead of started: the runs themselves,
their order on the nodes and the untouched etcd are checked on real LXD nodes in
tests/integration/test_upgrade.py; drain, readiness and uncordon against a running API only
in tests/e2e/test_upgrade_e2e.py. Inventories, records and the CLI are real, and so is
playbooks/upgrade.yml, run here through ansible-runner with a script standing in for kubectl.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.cli import app
from kubesmith.errors import KubesmithError, UserError
from kubesmith.program import provisioning
from kubesmith.program.provisioning import ProvisioningProvider
from kubesmith.provision import target as targets
from kubesmith.provision import upgrade
from kubesmith.provision.provisioner import BASE_TAGS, Options
from kubesmith.provision.runner import HostStats, RunRequest, RunResult, TaskOutputs, run_playbook
from kubesmith.state import records
from kubesmith.state.paths import stack_dir
from kubesmith.state.pki import PkiReport
from tests.clusterlab import local_spec, write_inventory
from tests.conftest import REPO

runner = CliRunner()


def _by_minor() -> dict[tuple[int, int], str]:
    return {versions.minor_of(v): v for v in versions.kubernetes_versions()}


NEW = _by_minor()[max(_by_minor())]
OLD = _by_minor()[(versions.minor_of(NEW)[0], versions.minor_of(NEW)[1] - 1)]
OLDEST = _by_minor()[(versions.minor_of(NEW)[0], versions.minor_of(NEW)[1] - 2)]


def stack_target(
    control_planes: int = 3,
    workers: int = 3,
    version: str = NEW,
    recorded: str | None = OLD,
    **overrides: Any,
) -> targets.Target:
    directory = stack_dir("local")
    spec = local_spec(control_planes, workers, kubernetesVersion=version, **overrides)
    inventory = write_inventory(directory, spec)
    if recorded is not None:
        (directory / records.VERSION_FILE).write_text(f"{recorded}\n", encoding="ascii")
    return targets.Target("stack local", inventory, directory, targets.ArtifactSettings({}))


class Outcome:
    pki = PkiReport()

    def __init__(self, hosts: list[str]) -> None:
        self.downloaded: list[Any] = []
        self.run = RunResult("successful", 0, stats={h: HostStats(ok=1, changed=1) for h in hosts})


Step = tuple[str, tuple[str, ...], str | None]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """What the upgrade starts, in order: ("run", tags, limit) per provisioning run and
    ("api", nodes, action) per API action; the probe answers "ok" (a running API)."""
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    steps: list[Step] = []

    def api(_target: Any, action: str, nodes: Any = ()) -> str:
        steps.append(("api", tuple(nodes), action))
        return "ok"

    monkeypatch.setattr(upgrade, "_api", api)
    return steps


def step(steps: list[Step]) -> upgrade.RunStep:
    def run(options: Options, _title: str) -> Any:
        steps.append(("run", tuple(options.tags), options.limit))
        return Outcome([])

    return run


def test_no_upgrade_before_the_first_run_or_at_the_recorded_version() -> None:
    assert upgrade.pending(stack_target(recorded=None)) is None
    assert upgrade.pending(stack_target(version=NEW, recorded=NEW)) is None


def test_the_plan_control_planes_one_at_a_time_then_workers_in_batches() -> None:
    plan = upgrade.pending(stack_target(3, 3, upgrade={"maxUnavailable": 2}))
    assert plan is not None
    assert (plan.current, plan.target) == (OLD, NEW)
    assert plan.control_planes == ("local-cp-1", "local-cp-2", "local-cp-3")
    assert plan.batches == (("local-worker-1", "local-worker-2"), ("local-worker-3",))
    assert plan.lines()[2:] == [
        "  2. control plane local-cp-1: upgrade, wait until Ready",
        "  3. control plane local-cp-2: upgrade, wait until Ready",
        "  4. control plane local-cp-3: upgrade, wait until Ready",
        "  5. nodes local-worker-1, local-worker-2: drain, upgrade, wait until Ready, uncordon",
        "  6. node local-worker-3: drain, upgrade, wait until Ready, uncordon",
        "  7. pod network and CoreDNS",
    ]


def test_a_control_plane_that_takes_workloads_is_drained_too() -> None:
    plan = upgrade.pending(stack_target(1, 0))
    assert plan is not None
    assert plan.schedulable == {"local-cp-1"}
    assert plan.lines()[2] == (
        "  2. control plane local-cp-1: drain, upgrade, wait until Ready, uncordon"
    )


@pytest.mark.parametrize(
    ("recorded", "wanted", "expected"),
    [
        (OLDEST, NEW, f"{OLDEST} -> {NEW} skips a minor"),
        (NEW, OLD, f"{NEW} -> {OLD} is a downgrade"),
    ],
)
def test_unsupported_changes_are_refused_before_anything_runs(
    recorded: str, wanted: str, expected: str, started: list[Step]
) -> None:
    with pytest.raises(UserError, match=expected):
        upgrade.pending(stack_target(version=wanted, recorded=recorded))
    assert started == []


def test_the_steps_in_order_with_a_running_api(started: list[Step]) -> None:
    target = stack_target(3, 3, upgrade={"maxUnavailable": 2})
    plan = upgrade.pending(target)
    assert plan is not None
    notes: list[str] = []
    upgrade.run(target, plan, step(started), notes.append)
    node = ("api_proxy", "control_plane", "cni", "kubelet", "kube_proxy")
    batch = ("local-worker-1", "local-worker-2")
    assert started == [
        ("run", BASE_TAGS, None),
        ("api", (), "probe"),
        ("run", node, "local-cp-1"),
        ("api", ("local-cp-1",), "ready"),
        ("run", node, "local-cp-2"),
        ("api", ("local-cp-2",), "ready"),
        ("run", node, "local-cp-3"),
        ("api", ("local-cp-3",), "ready"),
        ("api", batch, "drain"),
        ("run", node, ",".join(batch)),
        ("api", batch, "ready"),
        ("api", batch, "uncordon"),
        ("api", ("local-worker-3",), "drain"),
        ("run", node, "local-worker-3"),
        ("api", ("local-worker-3",), "ready"),
        ("api", ("local-worker-3",), "uncordon"),
        ("run", ("cni", "coredns"), None),
    ]
    assert notes == []
    assert records.upgrade_in_progress(target.state_dir) is None


def test_without_an_answering_api_the_api_steps_are_skipped_and_said(
    started: list[Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = stack_target(1, 1)
    plan = upgrade.pending(target)
    assert plan is not None

    def silent(*_: Any) -> str:
        started.append(("api", (), "probe"))
        return ""

    monkeypatch.setattr(upgrade, "_api", silent)
    notes: list[str] = []
    upgrade.run(target, plan, step(started), notes.append, {"kubesmith_kubernetes_binaries": False})
    assert [s for s in started if s[0] == "api"] == [("api", (), "probe")]
    assert notes == [
        "upgrade: no Kubernetes binaries (configuration only): drain, readiness waits and "
        "uncordon are skipped"
    ]


@pytest.mark.usefixtures("started")
def test_an_interrupted_upgrade_stays_one() -> None:
    target = stack_target(1, 1)
    plan = upgrade.pending(target)
    assert plan is not None

    def failing(options: Options, title: str) -> Any:
        if options.limit == "local-worker-1":
            raise KubesmithError(f"{title} failed")
        # The first Kubernetes step records the new version, as provisioning does.
        records.record(target.state_dir, target.inventory.cluster)
        return Outcome([])

    with pytest.raises(KubesmithError, match="local-worker-1 failed"):
        upgrade.run(target, plan, failing, lambda _: None)
    assert records.recorded_version(target.state_dir) == NEW
    again = upgrade.pending(target)
    assert again is not None
    assert (again.current, again.target) == (OLD, NEW)


# --- the commands ----------------------------------------------------------------------------


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch, started: list[Step]) -> list[Step]:
    """`kubesmith provision` and `upgrade` with their provisioning runs recorded."""

    def fake(target: Any, options: Options, *_args: Any) -> Outcome:
        started.append(("run", tuple(options.tags), options.limit))
        return Outcome(list(target.inventory.hostvars))

    monkeypatch.setattr("kubesmith.cli.provision.provision", fake)
    return started


def test_provision_with_a_new_version_rolls_and_refuses_limits(runs: list[Step]) -> None:
    stack_target(1, 1)
    limited = runner.invoke(app, ["provision", "-s", "local", "--limit", "local-worker-1"])
    assert limited.exit_code == 2
    assert f"{OLD} -> {NEW} is a rolling upgrade of every node" in " ".join(limited.output.split())
    assert runs == []
    base = runner.invoke(app, ["provision", "-s", "local", "--tags", "runtime,etcd"])
    assert base.exit_code == 0, base.output
    assert runs == [("run", ("runtime", "etcd"), None)], "the node base alone is no upgrade"
    runs.clear()
    result = runner.invoke(app, ["provision", "-s", "local"])
    assert result.exit_code == 0, result.output
    assert [s[2] for s in runs if s[0] == "run"] == [None, "local-cp-1", "local-worker-1", None]
    assert f"upgraded to Kubernetes {NEW} in 4 provisioning runs" in " ".join(result.output.split())


def test_upgrade_to_writes_the_inventory_and_plan_changes_nothing(
    runs: list[Step], tmp_path: Path
) -> None:
    target = stack_target(1, 1, version=OLD)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(target.inventory.path.read_text())
    (tmp_path / records.VERSION_FILE).write_text(f"{OLD}\n")
    planned = runner.invoke(app, ["upgrade", "-i", str(inventory), "--to", NEW, "--plan"])
    assert planned.exit_code == 0, planned.output
    assert f"Kubernetes {OLD} -> {NEW}:" in planned.output
    assert runs == []
    assert f"kubernetesVersion: {OLD}" in inventory.read_text()
    done = runner.invoke(app, ["upgrade", "-i", str(inventory), "--to", NEW])
    assert done.exit_code == 0, done.output
    cluster = yaml.safe_load(inventory.read_text())["all"]["vars"]["kubesmith_cluster"]
    assert cluster["kubernetesVersion"] == NEW
    assert len([s for s in runs if s[0] == "run"]) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-i", "INVENTORY", "--to", "1.99.0"], "--to: Kubernetes 1.99.0 is not pinned"),
        (["-s", "local", "--to", NEW], "--to applies to --inventory"),
    ],
)
def test_upgrade_refuses_in_one_line(args: list[str], expected: str, runs: list[Step]) -> None:
    target = stack_target(1, 1, version=OLD)
    args = [str(target.inventory.path) if a == "INVENTORY" else a for a in args]
    result = runner.invoke(app, ["upgrade", *args])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert runs == []


def test_a_stack_whose_config_moved_on_is_sent_to_up(runs: list[Step]) -> None:
    """Pulumi.local.yaml names no version (the newest pinned); the inventory `up` wrote last
    holds the older one: `kubesmith up` is what brings the new version to the inventory."""
    assert local_spec().kubernetes_version == NEW
    stack_target(1, 1, version=OLD, recorded=OLD)
    result = runner.invoke(app, ["upgrade", "-s", "local"])
    assert result.exit_code == 2
    assert (
        f"Pulumi.local.yaml asks for Kubernetes {NEW}, the stack's inventory holds {OLD}: "
        "run kubesmith up -s local (it runs this upgrade)"
    ) in " ".join(result.output.split())
    assert runs == []


def test_the_pulumi_update_rolls_node_by_node(
    monkeypatch: pytest.MonkeyPatch, started: list[Step]
) -> None:
    target = stack_target(1, 1)
    data = yaml.safe_load(target.inventory.path.read_text())

    def fake(_target: Any, options: Options, *_args: Any) -> Outcome:
        started.append(("run", tuple(options.tags), options.limit))
        return Outcome(["local-cp-1", "local-worker-1"])

    monkeypatch.setattr("kubesmith.provision.provisioner.provision", fake)
    props = {"stack": "local", "inventory": data, "trigger": "t"}
    result = ProvisioningProvider().update("id", props, props)
    runs = [s[2] for s in started if s[0] == "run"]
    assert runs == [None, "local-cp-1", "local-worker-1", None]
    assert result.outs is not None
    assert result.outs[provisioning.RECAP_KEY]["local-cp-1"]["changed"] == 4


# --- playbooks/upgrade.yml itself, on this machine with a stand-in for kubectl ----------------


def local_inventory(directory: Path) -> Path:
    """The first control plane is this machine (a local connection)."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    data = {
        "all": {"hosts": {"cp": host}, "children": {"kube_control_plane": {"hosts": {"cp": {}}}}}
    }
    path = directory / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("action", "nodes", "expected"),
    [
        ("probe", [], "get --raw /readyz"),
        (
            "drain",
            ["w-1", "w-2"],
            "drain w-1 w-2 --ignore-daemonsets --delete-emptydir-data --timeout=300s",
        ),
        ("ready", ["w-1", "w-2"], "wait --for=condition=Ready --timeout=300s node/w-1 node/w-2"),
        ("uncordon", ["w-1"], "uncordon w-1"),
    ],
)
def test_the_api_playbook_runs_kubectl_as_documented(
    action: str, nodes: list[str], expected: str, tmp_path: Path
) -> None:
    """The real playbook through ansible-runner on a local connection; kubectl is a script that
    logs its arguments (no API here), so this checks each action's command line."""
    log = tmp_path / "kubectl.log"
    stub = tmp_path / "kubectl"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho ok\n')
    stub.chmod(0o755)
    inventory = local_inventory(tmp_path)
    outputs = TaskOutputs(upgrade.PROBE_TASK)
    request = RunRequest(
        private_data_dir=tmp_path / "runner",
        inventory=inventory,
        playbook=upgrade.API_PLAYBOOK,
        extravars={"upgrade_action": action, "upgrade_nodes": nodes, "upgrade_kubectl": str(stub)},
    )
    result = run_playbook(request, outputs)
    assert result.ok, result.failures or result.error
    assert log.read_text().split("\n")[0] == expected
    if action == "probe":
        assert outputs.stdout[upgrade.PROBE_TASK] == {"cp": "ok"}


def test_the_api_playbook_refuses_an_action_without_nodes(tmp_path: Path) -> None:
    inventory = local_inventory(tmp_path)
    request = RunRequest(
        private_data_dir=tmp_path / "runner",
        inventory=inventory,
        playbook=upgrade.API_PLAYBOOK,
        extravars={"upgrade_action": "drain", "upgrade_nodes": [], "upgrade_kubectl": "false"},
    )
    result = run_playbook(request)
    assert not result.ok
    assert result.failures[0].task == "Rolling upgrade | check the action"


def test_the_pulumi_diff_says_the_version_change_rolls(capsys: pytest.CaptureFixture[str]) -> None:
    old = {"stack": "local", "trigger": "a", "cluster": {"kubernetesVersion": OLD}}
    new = {"stack": "local", "trigger": "b", "cluster": {"kubernetesVersion": NEW}}
    ProvisioningProvider().diff("id", old, new)
    assert (
        f"will upgrade Kubernetes {OLD} -> {NEW} node by node: control planes one at a time, "
        "then the other nodes in batches of upgrade.maxUnavailable"
    ) in capsys.readouterr().err
    ProvisioningProvider().diff("id", new, {**new, "trigger": "c"})
    assert "will upgrade" not in capsys.readouterr().err
