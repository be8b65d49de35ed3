"""The wheel: an installed kubesmith finds its playbooks, templates and versions anywhere.

Builds the wheel from this checkout (pip, hatchling from the package index), installs it
without dependencies into a directory of its own (the dependencies come from this venv), and
runs `kubesmith` from a directory outside the checkout with only that install on the path:
render and validate an app, and provision an inventory (whose one host is unreachable, so the
run gets as far as Ansible contacting it: the playbooks were found and parsed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.clusterlab import unreachable_inventory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("kubesmith-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kubesmith/_project/playbooks/site.yml" in names
    assert "kubesmith/_project/templates/apps/hello/values.yaml" in names
    assert "kubesmith/versions.yaml" in names
    assert not [n for n in names if "__pycache__" in n]
    site = tmp_path_factory.mktemp("site")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    subprocess.run(
        [*install, str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    return site


def kubesmith(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed kubesmith, outside any project, with a home of its own (the state goes
    to $XDG_STATE_HOME/kubesmith there)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KUBESMITH_HOME", "KUBESMITH_PROJECT", "XDG_STATE_HOME")
    }
    env |= {"PYTHONPATH": str(site), "HOME": str(cwd / "home")}
    code = "import sys; from kubesmith.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_the_installed_package_is_the_one_that_runs(installed: Path, tmp_path: Path) -> None:
    probe = "import kubesmith.resources as r; print(r.playbooks_dir())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()) == installed / "kubesmith" / "_project" / "playbooks"


def test_render_and_validate_work_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    rendered = kubesmith(installed, tmp_path, "render", "hello", "--env", "local", "-o", "out")
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    manifests = sorted((tmp_path / "out").rglob("*.yaml"))
    assert manifests
    checked = kubesmith(installed, tmp_path, "validate", "out")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_provision_runs_the_packaged_playbooks(installed: Path, tmp_path: Path) -> None:
    inventory = unreachable_inventory(tmp_path)
    result = kubesmith(installed, tmp_path, "provision", "-i", str(inventory), "--tags", "prep")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "provision failed on t1-cp-1: unreachable" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # The run's data (PKI, runner files) lives beside the inventory; nothing in the checkout.
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert not (REPO / "playbooks" / "inventory").exists()


def test_the_shipped_stacks_are_read_outside_a_project(installed: Path, tmp_path: Path) -> None:
    """`lab up` reads the local stack's settings: outside a project, the shipped ones."""
    result = kubesmith(installed, tmp_path, "config", "check", "-s", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kubesmith0" in result.stdout
