"""Shared fixtures: every test gets its own kubesmith state directory."""

from __future__ import annotations

from pathlib import Path

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
