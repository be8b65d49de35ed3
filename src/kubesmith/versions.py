"""Read access to versions.yaml, the single source of versions and checksums."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

import yaml

from kubesmith.paths import package_dir


@cache
def load() -> dict[str, Any]:
    with (package_dir() / "versions.yaml").open(encoding="utf-8") as fh:
        return cast(dict[str, Any], yaml.safe_load(fh))


def kubernetes_versions() -> list[str]:
    """Pinned Kubernetes versions, newest first."""
    versions = [str(v) for v in load()["kubernetes"]["versions"]]
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)


def default_kubernetes_version() -> str:
    return str(load()["kubernetes"]["default"])
