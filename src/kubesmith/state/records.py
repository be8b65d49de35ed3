"""What a provisioned cluster was built with, kept so later runs refuse what Kubernetes can't do.

Two records live in the cluster's state directory: the Kubernetes version of the last run
(upgrades go one minor at a time, never back) and the pod network (it is never switched under
a running cluster). Each check runs before any node changes; each record is written once
everything the run needs was fetched. A third, ``last-run.json``, says when the last
provisioning run (not a check run) ended and how, for `kubesmith status`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubesmith.cluster import Cluster
from kubesmith.errors import UserError
from kubesmith.state.files import atomic_write
from kubesmith.versions import minor_of

#: The Kubernetes version the cluster was last provisioned with.
VERSION_FILE = "kubernetes-version"
#: The pod network the cluster was provisioned with ("bridge", "flannel vxlan", ...).
POD_NETWORK_FILE = "pod-network"
#: When the last provisioning run ended, how, and whether it had the Kubernetes binaries.
LAST_RUN_FILE = "last-run.json"
#: "<from> <to>" while a rolling upgrade runs (kubesmith.provision.upgrade): an interrupted
#: upgrade stays one when it is run again, although its first step recorded the new version.
UPGRADE_FILE = "upgrade-in-progress"


def _read(path: Path) -> str | None:
    return path.read_text(encoding="ascii").strip() if path.is_file() else None


def _write(state: Path, name: str, value: str) -> None:
    atomic_write(state / name, (value + "\n").encode("ascii"), 0o644)


def recorded_version(state: Path) -> str | None:
    """The Kubernetes version the cluster was last provisioned with (None: never)."""
    return _read(state / VERSION_FILE)


def upgrade_in_progress(state: Path) -> tuple[str, str] | None:
    """The (from, to) versions of a rolling upgrade that started and has not finished."""
    found = (_read(state / UPGRADE_FILE) or "").split()
    return (found[0], found[1]) if len(found) == 2 else None


def start_upgrade(state: Path, current: str, target: str) -> None:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(state, UPGRADE_FILE, f"{current} {target}")


def finish_upgrade(state: Path) -> None:
    (state / UPGRADE_FILE).unlink(missing_ok=True)


def check_upgrade(state: Path, cluster: Cluster) -> None:
    """Refuse a version change Kubernetes does not support (see check_version_change)."""
    current = _read(state / VERSION_FILE)
    if current is not None:
        check_version_change(current, cluster.spec.kubernetes_version)


def check_version_change(current: str, wanted: str) -> None:
    """Refuse ``current`` -> ``wanted`` unless Kubernetes supports it.

    The control plane moves one minor at a time (1.33 -> 1.34 -> 1.35) and never back; a
    patch release within a minor may go either way.
    """
    old, new = minor_of(current), minor_of(wanted)
    if new[0] != old[0] or new[1] > old[1] + 1:
        step = f"{old[0]}.{old[1] + 1}"
        raise UserError(
            f"kubesmith:cluster.kubernetesVersion: {current} -> {wanted} skips a minor; "
            f"Kubernetes upgrades one minor at a time: go to a pinned {step}.x first",
            hint="see docs/runbooks/upgrade.md",
        )
    if new < old:
        raise UserError(
            f"kubesmith:cluster.kubernetesVersion: {current} -> {wanted} is a downgrade of "
            "the control plane, which Kubernetes does not support",
            hint="restore the etcd snapshot taken before the upgrade instead "
            "(docs/runbooks/etcd-backup-restore.md)",
        )


def check_pod_network(state: Path, cluster: Cluster) -> None:
    """Refuse to change the pod network of a cluster that has one.

    Switching would leave running pods with addresses, routes and CNI files of the old
    network on every node (and flannel's backend must not change under a running flannel).
    A cluster provisioned before the choice existed recorded only its version: bridge.
    """
    current = _read(state / POD_NETWORK_FILE)
    if current is None and (state / VERSION_FILE).is_file():
        current = "bridge"
    wanted = cluster.pod_network_label
    if current is not None and current != wanted:
        raise UserError(
            f"kubesmith:cluster.cni: the cluster was provisioned with {current}, the config asks "
            f"for {wanted}; kubesmith does not switch the pod network of a provisioned cluster "
            f"(set cni back to {current}, or recreate the cluster)",
            hint="see docs/cluster.md#pod-network",
        )


def record(state: Path, cluster: Cluster) -> None:
    """Keep the version and pod network this run provisioned."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(state, VERSION_FILE, cluster.spec.kubernetes_version)
    _write(state, POD_NETWORK_FILE, cluster.pod_network_label)


def record_run(
    state: Path,
    *,
    ok: bool,
    changed: int,
    failure: str,
    kubernetes_binaries: bool | None,
    now: dt.datetime | None = None,
) -> None:
    """Keep how the last provisioning run ended (``kubernetes_binaries`` None: a run of the
    node base only, which keeps the earlier run's value)."""
    if kubernetes_binaries is None:
        kubernetes_binaries = last_binaries(state)
    document = {
        "finished": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "ok": ok,
        "changed": changed,
        "failure": failure,
        "kubernetes_binaries": kubernetes_binaries,
    }
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(state / LAST_RUN_FILE, (json.dumps(document) + "\n").encode(), 0o644)


def last_run(state: Path) -> Mapping[str, Any] | None:
    """The last run's record, or None (never provisioned here, or an unreadable record)."""
    try:
        found = json.loads((state / LAST_RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def last_binaries(state: Path) -> bool | None:
    """Whether the last run that decided it installed the Kubernetes binaries; None when no
    run did (later runs that must not install anything new keep this)."""
    kept = (last_run(state) or {}).get("kubernetes_binaries")
    return kept if isinstance(kept, bool) else None
