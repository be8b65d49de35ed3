"""Shared fixtures: every test gets its own kubesmith state directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keys, PKI and state written by a test go to a temporary KUBESMITH_HOME, never the repo."""
    home = tmp_path_factory.mktemp("kubesmith-home")
    monkeypatch.setenv("KUBESMITH_HOME", str(home))
    return home


def load_plugin(path: Path, name: str) -> ModuleType:
    """A playbook plugin or module, loaded as Ansible loads it (a file, not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
