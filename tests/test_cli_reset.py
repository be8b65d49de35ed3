"""`kubesmith reset`: it asks before it changes anything (refusing in one line where nobody can
answer), passes what the user chose to the playbook, reports what each node undid and kept,
and names what the user got wrong. The playbook itself runs on real LXD nodes in
tests/integration/test_reset.py; here the run is replaced by a recorder (no nodes needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.cli import reset as reset_cli
from kubesmith.errors import UserError
from kubesmith.provision import reset as reset_run
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.runner import Failure, HostStats, RunResult
from kubesmith.provision.target import for_inventory
from kubesmith.resources import playbooks_dir
from tests.clusterlab import local_spec, write_inventory

runner = CliRunner()
ROLE = playbooks_dir() / "roles" / "reset"
SCRIPT = ROLE / "files" / "kubesmith-reset"


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path / "lab", local_spec(1, 1))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, inventory: Inventory) -> list[dict[str, Any]]:
    """Each reset run's arguments; the run reports one change per host, etcd's data kept."""
    made: list[dict[str, Any]] = []
    cp, worker = inventory.hostvars

    def fake(target: Any, **kwargs: Any) -> reset_run.ResetOutcome:
        made.append({"label": target.label, **kwargs})
        nodes = {
            cp: reset_run.NodeReset(
                ["stop etcd.service", "remove /etc/kubernetes"],
                ["etcd data /var/lib/etcd/member (--include-etcd-data removes it)"],
            ),
            worker: reset_run.NodeReset(["remove /etc/kubernetes"]),
        }
        stats = {host: HostStats(ok=2, changed=1) for host in nodes}
        return reset_run.ResetOutcome(RunResult("successful", 0, stats), nodes)

    monkeypatch.setattr(reset_cli, "reset", fake)
    return made


def test_without_yes_and_without_a_terminal_it_refuses_in_one_line(
    inventory: Inventory, calls: list[dict[str, Any]]
) -> None:
    result = runner.invoke(app, ["reset", "-i", str(inventory.path)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"refusing to reset {inventory.path} without --yes" in line
    assert calls == [], "refused before any node is touched"


@pytest.mark.parametrize("etcd_data", [False, True])
def test_at_a_terminal_it_asks_first_and_a_no_changes_nothing(
    inventory: Inventory,
    calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    etcd_data: bool,
) -> None:
    monkeypatch.setattr(reset_cli, "_stdin_is_terminal", lambda: True)
    extra = ["--include-etcd-data"] if etcd_data else []
    result = runner.invoke(app, ["reset", "-i", str(inventory.path), *extra], input="n\n")
    assert result.exit_code == 1
    question = " ".join(result.output.split())
    assert f"Reset 2 node(s) of {inventory.path} ({', '.join(inventory.hostvars)})" in question
    if etcd_data:
        assert "and etcd's member data (every object of the cluster)?" in question
    else:
        assert "(etcd's member data is kept)?" in question
    assert "reset cancelled; nothing was changed" in result.stdout
    assert calls == []

    yes = runner.invoke(app, ["reset", "-i", str(inventory.path), *extra], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert [c["include_etcd_data"] for c in calls] == [etcd_data]


def test_with_yes_it_resets_and_reports_what_each_node_undid_and_kept(
    inventory: Inventory, calls: list[dict[str, Any]]
) -> None:
    cp, worker = inventory.hostvars
    result = runner.invoke(app, ["reset", "-i", str(inventory.path), "--yes", "--limit", worker])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["limit"] == worker
    assert call["include_etcd_data"] is False
    said = " ".join(result.stdout.split())
    assert f"{cp}: stop etcd.service" in said
    assert f"{worker}: remove /etc/kubernetes" in said
    assert f"{cp}: kept etcd data /var/lib/etcd/member (--include-etcd-data removes it)" in said
    assert "ok: 2 hosts reset, 2 changes (3 things undone)" in said


def test_include_etcd_data_reaches_the_playbook(
    inventory: Inventory, calls: list[dict[str, Any]]
) -> None:
    result = runner.invoke(app, ["reset", "-i", str(inventory.path), "-y", "--include-etcd-data"])
    assert result.exit_code == 0, result.output
    assert calls[0]["include_etcd_data"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-s", "local", "-i", "x.yml"],
            "give exactly one of --stack/-s STACK or --inventory FILE",
        ),
        ([], "give exactly one of --stack/-s STACK or --inventory FILE"),
        (["--limit", "nosuch"], "--limit: 'nosuch' is no host or group of"),
    ],
)
def test_what_the_user_got_wrong_is_one_line_before_anything_runs(
    inventory: Inventory, calls: list[dict[str, Any]], args: list[str], message: str
) -> None:
    if "-i" not in args and "-s" not in args and args:
        args = ["-i", str(inventory.path), *args]
    result = runner.invoke(app, ["reset", *args, "--yes"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert "Traceback" not in result.output
    assert calls == []


def test_a_missing_inventory_is_named(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    missing = tmp_path / "nope.yml"
    result = runner.invoke(app, ["reset", "-i", str(missing), "--yes"])
    assert result.exit_code != 0
    assert str(missing) in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert calls == []


def test_a_failed_run_names_the_host_and_task(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = next(iter(inventory.hostvars))

    def failing(target: Any, **kwargs: Any) -> reset_run.ResetOutcome:
        del target, kwargs
        failure = Failure(host, reset_run.APPLY_TASK, "umount: target is busy")
        run = RunResult("failed", 2, {host: HostStats(ok=1, failed=1)}, [failure])
        return reset_run.ResetOutcome(run, {})

    monkeypatch.setattr(reset_cli, "reset", failing)
    result = runner.invoke(app, ["reset", "-i", str(inventory.path), "--yes"])
    assert result.exit_code != 0
    said = " ".join(result.stderr.split())
    assert "reset failed" in said
    assert host in said
    assert "umount: target is busy" in said


def test_limit_names_hosts_and_groups_and_passes_patterns_through(inventory: Inventory) -> None:
    target = for_inventory(inventory.path)
    cp, worker = inventory.hostvars
    assert reset_run.reset_hosts(target, None) == [cp, worker]
    assert reset_run.reset_hosts(target, worker) == [worker]
    assert reset_run.reset_hosts(target, "kube_control_plane") == [cp]
    assert reset_run.reset_hosts(target, f"{cp},{worker},{cp}") == [cp, worker]
    assert reset_run.reset_hosts(target, "*worker*") == [cp, worker]
    with pytest.raises(UserError, match="'nosuch' is no host or group"):
        reset_run.reset_hosts(target, f"{cp},nosuch")


def test_confirm_reset_rules() -> None:
    asked: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return False

    hosts = ["a-cp-1"]
    assert reset_cli.confirm_reset("lab", hosts, yes=True, interactive=False, ask=ask) is True
    assert reset_cli.confirm_reset("lab", hosts, yes=False, interactive=True, ask=ask) is False
    many = [f"n-{i}" for i in range(20)]
    reset_cli.confirm_reset("lab", many, yes=False, interactive=True, ask=ask)
    assert "Reset 20 node(s) of lab (n-0, n-1, n-2, n-3, n-4, n-5 and 14 more)" in asked[-1]
    assert len(asked) == 2
    with pytest.raises(UserError, match="without --yes"):
        reset_cli.confirm_reset("lab", hosts, yes=False, interactive=False, ask=ask)


# --- the role the command runs --------------------------------------------------------------


def test_the_command_reads_the_output_of_the_roles_own_tasks() -> None:
    """The CLI collects each node's lines by task name: renaming a task must fail here."""
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text(encoding="utf-8"))
    assert [t["name"] for t in tasks] == [reset_run.PLAN_TASK, reset_run.APPLY_TASK]
    play = yaml.safe_load((playbooks_dir() / reset_run.RESET_PLAYBOOK).read_text())
    assert play[0]["hosts"] == ":".join(reset_run.GROUPS)


UNIT_DIR = "/etc/systemd/system/"
#: Paths the roles name that are not theirs to remove (read, or shared directories).
_NOT_CREATED = {"/etc/fstab", "/etc/resolv.conf", "/etc/modules-load.d", "/etc/containerd"}
_TOO_GENERAL = {
    "/",
    "/etc",
    "/etc/systemd",
    "/etc/systemd/system",
    "/etc/sysctl.d",
    "/var",
    "/var/lib",
    "/var/log",
    "/usr",
    "/usr/local",
    "/usr/local/sbin",
    "/usr/local/lib",
}


def _role_paths() -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r"/(?:etc|usr/local/sbin|usr/local/lib|var/lib|var/log)/[A-Za-z0-9_./-]+")
    for path in (playbooks_dir() / "roles").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".j2") and ROLE not in path.parents:
            found |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return found - _NOT_CREATED


def test_every_path_a_role_writes_is_one_the_reset_removes() -> None:
    """A role that writes a new path (a unit, a helper, a directory) without the reset knowing
    fails here: the path, or a directory the reset removes whole, is in the reset script."""
    script = SCRIPT.read_text(encoding="utf-8")
    uncovered = []
    for path in sorted(_role_paths()):
        candidates = [path, *(str(p) for p in Path(path).parents)]
        if path.startswith(UNIT_DIR):
            candidates.append(path.removeprefix(UNIT_DIR))  # the script names units alone
        if not any(c in script for c in candidates if c not in _TOO_GENERAL):
            uncovered.append(path)
    assert len(_role_paths()) > 30
    assert uncovered == []
