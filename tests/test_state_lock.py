"""One change to a cluster at a time (kubesmith.state.lock): a second provisioning run,
renewal or reset of the same cluster is refused in one line naming the process that holds
the lock, before it writes anything; the lock goes with the process that held it.

The holder is a real second process (flock is per open file, so only another process shows
what a second terminal or a renewal timer would meet)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import KubesmithError
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.kubernetes import cluster_pki
from kubesmith.provision.target import for_inventory
from kubesmith.state.lock import LOCK_FILE, cluster_lock
from kubesmith.state.records import VERSION_FILE
from tests.certlab import make_due
from tests.clusterlab import local_spec, write_inventory

runner = CliRunner()

HOLD = """
import sys
from pathlib import Path
from kubesmith.state.lock import cluster_lock
with cluster_lock(Path(sys.argv[1]), "provisioning (site.yml)"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_elsewhere(state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the cluster's lock until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


def can_take(state_dir: Path) -> bool:
    """Whether another process can take the lock now."""
    probe = subprocess.run(
        [sys.executable, "-c", HOLD, str(state_dir)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path / "lab", local_spec(1, 1))


@pytest.mark.parametrize(
    "args",
    [
        ["provision", "--no-kubernetes-binaries"],
        ["certs", "--renew"],
        ["reset", "--yes"],
        ["upgrade", "--no-kubernetes-binaries"],
        ["node", "remove", "{worker}", "--yes"],
    ],
    ids=["provision", "certs --renew", "reset", "upgrade", "node remove"],
)
def test_a_second_change_of_the_same_cluster_is_refused_naming_the_first(
    inventory: Inventory, args: list[str]
) -> None:
    target = for_inventory(inventory.path)
    cp, worker = inventory.hostvars
    if args[0] == "certs":
        # A cluster with a certificate due, so that the renewal has something to change.
        cluster_pki(target).ensure(target.inventory.identities())
        make_due(target.pki_dir, cp, "apiserver", 5)
    if args[0] == "upgrade":
        # A cluster last provisioned one minor back: the upgrade has steps to run.
        (target.state_dir / VERSION_FILE).write_text("1.34.4\n", encoding="ascii")
    args = [arg.format(worker=worker) for arg in args]
    files = {p: p.read_bytes() for p in target.state_dir.rglob("*") if p.is_file()}
    with held_elsewhere(target.state_dir) as holder:
        result = runner.invoke(app, [*args, "--inventory", str(inventory.path)])
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "another kubesmith run is changing this cluster" in line
    assert f"pid {holder.pid}: provisioning (site.yml), since " in line
    # Refused before anything was written: every file as it was, nothing added but the lock.
    now = {p: p.read_bytes() for p in target.state_dir.rglob("*") if p.is_file()}
    assert {p: d for p, d in now.items() if p.name != LOCK_FILE} == files


def test_the_lock_is_re_entrant_in_one_process_and_released_after_an_error(
    tmp_path: Path,
) -> None:
    with cluster_lock(tmp_path, "certificate renewal"):
        with cluster_lock(tmp_path, "provisioning (site.yml)"):
            assert not can_take(tmp_path)
        assert not can_take(tmp_path)  # still the outer holder's
    assert can_take(tmp_path)
    with pytest.raises(RuntimeError), cluster_lock(tmp_path, "reset"):
        raise RuntimeError("a run failed")
    assert can_take(tmp_path)


def test_a_holder_that_dies_leaves_no_lock_behind(tmp_path: Path) -> None:
    with held_elsewhere(tmp_path) as holder:
        with (
            pytest.raises(KubesmithError, match=f"pid {holder.pid}"),
            cluster_lock(tmp_path, "reset"),
        ):
            pass
        holder.kill()
        holder.wait(timeout=30)
        with cluster_lock(tmp_path, "reset"):
            pass
