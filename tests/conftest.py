"""Shared fixtures: every test gets its own kubesmith state directory."""

from __future__ import annotations

import importlib.util
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from kubesmith.downloads import download

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keys, PKI and state written by a test go to a temporary KUBESMITH_HOME, never the repo."""
    home = tmp_path_factory.mktemp("kubesmith-home")
    monkeypatch.setenv("KUBESMITH_HOME", str(home))
    # Pulumi plugins a test installs land there too, never in ~/.pulumi.
    monkeypatch.setenv("PULUMI_HOME", str(home / "pulumi-home"))
    return home


@pytest.fixture(autouse=True)
def loopback_downloads_only(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit test that would download from anywhere but 127.0.0.1 (or a local file:// mirror)
    fails instead of sending it
    (the LXD and e2e tiers reach their nodes, and e2e may opt into upstream downloads)."""
    if any(request.node.get_closest_marker(m) for m in ("integration", "e2e")):
        return
    real = urllib.request.urlopen

    def urlopen(url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        local = parts.hostname == "127.0.0.1" or (parts.scheme == "file" and not parts.netloc)
        assert local, f"a test tried to download {url}: only loopback is allowed"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(download.urllib.request, "urlopen", urlopen)


def load_plugin(path: Path, name: str) -> ModuleType:
    """A playbook plugin or module, loaded as Ansible loads it (a file, not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
