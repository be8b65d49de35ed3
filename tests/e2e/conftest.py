"""The e2e tier: a real Kubernetes cluster on an LXD lab, then the smoke test.

It needs the Kubernetes server binaries, which only two sources provide:
- KUBESMITH_ARTIFACTS_DIR: a directory in the mirror layout, filled on a machine with
  internet access by `kubesmith artifacts fetch -s local --source release --dest DIR`;
- KUBESMITH_E2E_ONLINE=1: this machine may download them (and every other release file)
  from their upstream URLs.
Without either, every e2e test is skipped with that reason; nothing is downloaded to find
out. The nodes also pull the pinned images (pause, CoreDNS, the smoke test's) from their
registries, so they need registry access (LXD's NAT on a machine with internet).
"""

from __future__ import annotations

import os

import pytest

# The LXD host set-up is the integration tier's (install/start LXD, pool, bridge, image).
from tests.integration.conftest import lxd_ready  # noqa: F401

ARTIFACTS_ENV = "KUBESMITH_ARTIFACTS_DIR"
ONLINE_ENV = "KUBESMITH_E2E_ONLINE"
SKIP_REASON = (
    "the e2e tier needs the Kubernetes server binaries, which this machine cannot obtain: "
    f"set {ARTIFACTS_ENV} to a directory filled by `kubesmith artifacts fetch -s local "
    f"--source release --dest DIR`, or {ONLINE_ENV}=1 on a machine with internet access"
)


def binaries_source() -> str | None:
    """The artifacts directory, "online", or None when the binaries are out of reach."""
    directory = os.environ.get(ARTIFACTS_ENV)
    if directory:
        return directory
    return "online" if os.environ.get(ONLINE_ENV) == "1" else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
            if binaries_source() is None:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
