"""`kubesmith certs --renew` without nodes: its one-line errors, "nothing due", what it
reissues on the controller and the provisioning run it asks for.

The run itself (ansible on the nodes) is replaced by a recorder here, because these tests have
no nodes; tests/integration/test_certs_renew.py runs it for real on LXD.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.provision import renewal
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.provisioner import TAGS, Options, Outcome
from kubesmith.provision.runner import HostStats, RunResult
from kubesmith.state.paths import stack_dir
from kubesmith.state.pki import CONTROLLER, LEAVES, Pki
from tests.certlab import leaf_file, make_ca_due, make_due, read
from tests.clusterlab import local_spec, write_inventory
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    return "local"


def provisioned(directory: Path) -> Inventory:
    inventory = write_inventory(directory, local_spec(1, 1))
    Pki(directory / "pki", inventory.cluster).ensure(inventory.identities())
    return inventory


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Options]:
    """Every provisioning run certs --renew asks for (recorded, not run: no nodes here)."""
    recorded: list[Options] = []

    def record(target: Any, options: Options, *_: Any) -> Any:
        recorded.append(options)
        report = Pki(target.pki_dir, target.inventory.cluster).ensure(target.inventory.identities())
        hosts = str(options.limit).split(",")
        return Outcome(report, [], RunResult("successful", 0, {h: HostStats() for h in hosts}))

    monkeypatch.setattr(renewal, "provision", record)
    return recorded


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("days", ["30", "89", "365", "1000", "-1"])
def test_within_outside_the_window_is_refused(stack: str, days: str) -> None:
    provisioned(stack_dir(stack))
    result = runner.invoke(app, ["certs", "-s", stack, "--renew", "--within", days])
    assert result.exit_code == 2
    assert f"--within: {days} days is outside 90..364" in result.output
    assert "Traceback" not in result.output


def test_within_needs_renew(stack: str) -> None:
    result = runner.invoke(app, ["certs", "-s", stack, "--within", "120"])
    assert result.exit_code == 2
    assert "--within only applies to --renew" in result.output


def test_a_stack_never_provisioned_is_one_line(stack: str) -> None:
    write_inventory(stack_dir(stack), local_spec(1, 1))
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 2
    assert "stack local: never provisioned (no certificates in" in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_a_stack_without_nodes_is_one_line(stack: str) -> None:
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 2
    assert "no inventory at" in result.output


def test_nothing_due_changes_nothing(stack: str, runs: list[Options]) -> None:
    provisioned(stack_dir(stack))
    before = snapshot(stack_dir(stack) / "pki")
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 0, result.output
    assert "nothing due: no leaf certificate of stack local expires within 90 days" in result.output
    assert runs == []
    assert snapshot(stack_dir(stack) / "pki") == before


def test_due_leaves_are_reissued_and_installed_with_the_narrowest_run(
    stack: str, runs: list[Options]
) -> None:
    inventory = provisioned(stack_dir(stack))
    pki = stack_dir(stack) / "pki"
    cp, worker = inventory.hosts_in("kube_control_plane")[0], inventory.hosts_in("kube_node")[0]
    due = {(cp, "etcd/server"): make_due(pki, cp, "etcd/server", 5),
           (worker, "kube-proxy"): make_due(pki, worker, "kube-proxy", 40)}  # fmt: skip
    before = snapshot(pki)
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 0, result.output
    (run,) = runs
    assert list(run.tags) == ["pki", "etcd", "kube_proxy"]
    assert set(run.tags) <= set(TAGS)
    assert sorted(str(run.limit).split(",")) == sorted([cp, worker])
    for (node, leaf), old in due.items():
        path = leaf_file(pki, node, leaf)
        new = read(path)
        assert new.serial_number != old.serial_number
        assert new.public_key() == old.public_key(), "renewal keeps the key"
        assert (new.not_valid_after_utc - new.not_valid_before_utc).days == 365
        assert f"{node}  {leaf}.crt  expires {old.not_valid_after_utc:%Y-%m-%d}" in result.output
        del before[str(path)]
    after = snapshot(pki)
    assert {p: after[p] for p in before if "/bundles/" not in p} == {
        p: v for p, v in before.items() if "/bundles/" not in p
    }, "only the due certificates change"
    assert "2 certificate(s) renewed, 2 host(s) updated" in result.output
    # Renewed: a second run finds nothing due and asks for no run.
    again = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert again.exit_code == 0
    assert "nothing due" in again.output
    assert len(runs) == 1


def test_within_renews_earlier_and_a_due_ca_is_only_reported(
    stack: str, runs: list[Options]
) -> None:
    inventory = provisioned(stack_dir(stack))
    pki = stack_dir(stack) / "pki"
    cp = inventory.hosts_in("kube_control_plane")[0]
    make_due(pki, cp, "apiserver", 150)
    make_ca_due(pki, "front-proxy-ca", 100)
    ca_before = (pki / "front-proxy-ca.crt").read_bytes()
    default = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert "nothing due" in default.output
    assert runs == []
    result = runner.invoke(app, ["certs", "-s", stack, "--renew", "--within", "180"])
    assert result.exit_code == 0, result.output
    (run,) = runs
    assert list(run.tags) == ["pki", "control_plane"]
    assert run.limit == cp
    said = " ".join(result.output.split())
    assert "CA front-proxy-ca.crt expires" in said
    assert "never renews a CA" in said
    assert (pki / "front-proxy-ca.crt").read_bytes() == ca_before


def test_the_controllers_admin_certificate_needs_no_run(stack: str, runs: list[Options]) -> None:
    provisioned(stack_dir(stack))
    pki = stack_dir(stack) / "pki"
    old = make_due(pki, CONTROLLER.name, "admin", 3)
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 0, result.output
    assert runs == []
    assert read(leaf_file(pki, CONTROLLER.name, "admin")).serial_number != old.serial_number
    assert "kubesmith kubeconfig" in result.output


def test_every_leaf_names_the_role_that_restarts_for_it() -> None:
    assert set(renewal.LEAF_TAGS) == {leaf.path for leaf in LEAVES}
    assert {t for t in renewal.LEAF_TAGS.values() if t} <= set(renewal.RENEW_TAGS) <= set(TAGS)


UNITS = REPO / "contrib" / "systemd"


def test_the_shipped_timer_and_service_verify_and_run_a_valid_command(
    stack: str, tmp_path: Path, runs: list[Options]
) -> None:
    """systemd-analyze verify on an instance of both units (ExecStart pointed at a placeholder
    here, the only change: /opt/kubesmith is the documented install path), and the service's
    command line accepted by the CLI as it stands."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed to check the shipped units"
    service = (UNITS / "kubesmith-certs-renew@.service").read_text(encoding="utf-8")
    (exec_start,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    binary, *args = shlex.split(exec_start.removeprefix("ExecStart="))
    assert binary == "/opt/kubesmith/.venv/bin/kubesmith"
    placeholder = tmp_path / "kubesmith"
    placeholder.write_text("#!/bin/sh\nexit 0\n", encoding="ascii")
    placeholder.chmod(0o755)
    (tmp_path / "kubesmith-certs-renew@prod.service").write_text(
        service.replace(binary, str(placeholder)), encoding="utf-8"
    )
    shutil.copy(
        UNITS / "kubesmith-certs-renew@.timer", tmp_path / "kubesmith-certs-renew@prod.timer"
    )
    instances = ["kubesmith-certs-renew@prod.timer", "kubesmith-certs-renew@prod.service"]
    checked = subprocess.run(
        [analyze, "verify", *instances],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == ""
    # The instance name is the stack.
    provisioned(stack_dir(stack))
    result = runner.invoke(app, [a.replace("%i", stack) for a in args])
    assert result.exit_code == 0, result.output
    assert "nothing due" in result.output
    assert "within 120 days" in result.output
    assert runs == []


def test_a_failed_run_is_installed_by_the_next_renewal(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller reissued, a node was unreachable: the certificate is no longer due there,
    but the next `certs --renew` still installs it, until a run succeeds."""
    inventory = provisioned(stack_dir(stack))
    worker = inventory.hosts_in("kube_node")[0]
    make_due(stack_dir(stack) / "pki", worker, "kubelet-server", 10)
    asked: list[Options] = []
    results = [
        RunResult("failed", 2, {worker: HostStats(unreachable=1)}),
        RunResult("successful", 0, {worker: HostStats(ok=1)}),
    ]

    def run(target: Any, options: Options, *_: Any) -> Outcome:
        asked.append(options)
        report = Pki(target.pki_dir, target.inventory.cluster).ensure(target.inventory.identities())
        return Outcome(report, [], results[len(asked) - 1])

    monkeypatch.setattr(renewal, "provision", run)
    failed = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert failed.exit_code == 1
    retried = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert retried.exit_code == 0, retried.output
    assert "installing what the last renewal reissued" in retried.output
    assert [(list(o.tags), o.limit) for o in asked] == [(["pki", "kubelet"], worker)] * 2
    done = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert "nothing due" in done.output
    assert len(asked) == 2


def test_a_damaged_certificate_is_named(stack: str, runs: list[Options]) -> None:
    inventory = provisioned(stack_dir(stack))
    path = leaf_file(stack_dir(stack) / "pki", inventory.hosts_in("kube_node")[0], "kube-proxy")
    path.write_text("not a certificate\n", encoding="ascii")
    result = runner.invoke(app, ["certs", "-s", stack, "--renew"])
    assert result.exit_code == 2
    assert f"{path}: not a PEM certificate" in " ".join(result.output.split())
    assert runs == []
