"""`kubesmith certs --renew`: reissue the leaf certificates that are due and push them.

Due: a leaf certificate with fewer than ``within`` days left (at least ``RENEW_BEFORE``, the
window in which every provisioning run reissues it anyway). The controller reissues each one
with its existing key (the PKI's own rules, by removing the certificate and letting
``Pki.ensure`` issue it again), then one provisioning run installs them: only the roles that
carry certificates (``RENEW_TAGS`` as far as the reissued files need them) and only on the
hosts whose files changed. Each of those roles restarts exactly the services whose
certificates changed, with its own handlers (etcd one member at a time, control planes one
after another); the run's events say which units were rewritten and which restarted.

CAs are never renewed here: a new CA is a new cluster PKI (docs/runbooks/certificates.md).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509

from kubesmith.errors import UserError
from kubesmith.provision import kubernetes
from kubesmith.provision.provisioner import Options, Outcome, provision
from kubesmith.provision.runner import EventHandler
from kubesmith.provision.target import Target
from kubesmith.provision.variables import BINARIES_VAR
from kubesmith.state import records
from kubesmith.state.files import atomic_write
from kubesmith.state.lock import cluster_lock
from kubesmith.state.pki import CAS, CONTROLLER, LEAVES, RENEW_BEFORE, NodeIdentity

#: The longest window: a certificate is issued for 365 days, so a longer one renews every run.
MAX_WITHIN_DAYS = 364

#: The role (provision tag) whose services read each leaf certificate; None: read by no
#: service (kubeconfigs of people and kubectl, etcd's health check), installed by pki alone.
LEAF_TAGS: Mapping[str, str | None] = {
    "etcd/server": "etcd",
    "etcd/peer": "etcd",
    "etcd/healthcheck-client": None,
    "apiserver-etcd-client": "control_plane",
    "apiserver": "control_plane",
    "apiserver-kubelet-client": "control_plane",
    "front-proxy-client": "control_plane",
    "controller-manager": "control_plane",
    "scheduler": "control_plane",
    "super-admin": None,
    "admin": None,
    "kubelet-client": "kubelet",
    "kubelet-server": "kubelet",
    "kube-proxy": "kube_proxy",
}
#: The provision tags a renewal may run, in play order: pki installs, the others restart.
RENEW_TAGS = ("pki", "etcd", "control_plane", "kubelet", "kube_proxy")

#: Task names of the roles' restart handlers (an `ok`/`changed` event = a real restart).
_RESTART_TASKS = (
    "Etcd | restart",
    "Control plane | restart the changed service",
    "Kubelet | restart",
    "Kube-proxy | restart",
)
_NOTE_TASK = "Control plane | note the services whose files changed"


@dataclass(frozen=True)
class Due:
    node: str  # node name, or CONTROLLER.name for the controller's own certificate
    path: str  # leaf path, e.g. "etcd/server"
    not_after: dt.datetime

    def reason(self, now: dt.datetime) -> str:
        left = (self.not_after - now).days
        if left < 0:
            return f"expired {self.not_after:%Y-%m-%d}"
        return f"expires {self.not_after:%Y-%m-%d} ({left} days left)"


@dataclass(frozen=True)
class CaWarning:
    path: str
    not_after: dt.datetime


@dataclass(frozen=True)
class Plan:
    """What is due: leaves to reissue, CAs to warn about, the soonest leaf expiry."""

    within: dt.timedelta
    due: list[Due]
    cas: list[CaWarning]
    soonest: tuple[str, dt.datetime] | None


@dataclass
class Services:
    """Per host: units rewritten by the run (marked for restart) and units restarted."""

    marked: dict[str, set[str]] = field(default_factory=dict)
    restarted: dict[str, set[str]] = field(default_factory=dict)

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("event_data")
        if event.get("event") != "runner_on_ok" or not isinstance(data, dict):
            return
        res = data.get("res")
        if not isinstance(res, dict):
            res = {}
        host, task = str(data.get("host")), str(data.get("task", ""))
        if task == _NOTE_TASK:
            noted = (res.get("ansible_facts") or {}).get("__control_plane_restart_services")
            self.marked.setdefault(host, set()).update(noted or ())
        elif res.get("changed") and isinstance(res.get("changed_paths"), list):
            for path in res["changed_paths"]:
                unit = _unit_of(str(path))
                if unit:
                    self.marked.setdefault(host, set()).add(unit)
        elif res.get("changed") and task.startswith(_RESTART_TASKS):
            delegated = res.get("_ansible_delegated_vars") or {}
            where = str(delegated.get("ansible_delegated_host") or host)
            unit = str(res.get("name", "")).removesuffix(".service")
            if unit:
                self.restarted.setdefault(where, set()).add(unit)


def _unit_of(path: str) -> str | None:
    """The service a rewritten file restarts: its unit, or etcd's configuration (which holds
    etcd's certificate digest)."""
    name = PurePosixPath(path)
    if name.parent == PurePosixPath("/etc/systemd/system") and name.suffix == ".service":
        return name.stem
    if name.name == "etcd.conf.yml":
        return "etcd"
    return None


def validate_within(days: int | None) -> dt.timedelta:
    if days is None:
        return RENEW_BEFORE
    low = RENEW_BEFORE.days
    if not low <= days <= MAX_WITHIN_DAYS:
        raise UserError(
            f"--within: {days} days is outside {low}..{MAX_WITHIN_DAYS} ({low}: every "
            f"provisioning run already renews inside {low} days; certificates are issued for "
            "365 days)"
        )
    return dt.timedelta(days=days)


def _not_after(path: Path) -> dt.datetime:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise UserError(f"{path}: not a PEM certificate") from None


def _leaf_files(target: Target) -> list[tuple[str, str, Path]]:
    """(node, leaf path, controller file) of every leaf certificate the inventory gives out."""
    pki = kubernetes.cluster_pki(target)
    found: list[tuple[str, str, Path]] = []
    leaves = {f"{leaf.path}.crt" for leaf in LEAVES}
    nodes: Sequence[NodeIdentity] = target.inventory.identities()
    for node in nodes:
        for f in pki.node_files(node):
            if f.dest in leaves:
                found.append((node.name, f.dest.removesuffix(".crt"), f.src))
    crt, _ = pki.controller_admin()
    found.append((CONTROLLER.name, "admin", crt))
    return found


def plan(target: Target, within: dt.timedelta, now: dt.datetime) -> Plan:
    """What is due in ``target``'s PKI; a one-line error when there is nothing provisioned."""
    pki_dir = target.pki_dir
    if not any(pki_dir.glob("*.crt")):
        raise UserError(
            f"{target.label}: never provisioned (no certificates in {pki_dir}); "
            "run kubesmith provision first"
        )
    due: list[Due] = []
    soonest: tuple[str, dt.datetime] | None = None
    for node, path, crt in _leaf_files(target):
        if not crt.is_file():
            raise UserError(
                f"{target.label}: {crt} is missing; run kubesmith provision "
                "(it issues every missing certificate)"
            )
        not_after = _not_after(crt)
        if soonest is None or not_after < soonest[1]:
            soonest = (str(crt.relative_to(pki_dir)), not_after)
        if not_after - now < within:
            due.append(Due(node, path, not_after))
    cas = []
    for ca in CAS:
        not_after = _not_after(pki_dir / f"{ca.path}.crt")
        if not_after - now < within:
            cas.append(CaWarning(ca.path, not_after))
    return Plan(within, due, cas, soonest)


#: Hosts and tags of a renewal whose run has not succeeded yet (in the state directory).
PENDING_FILE = "certs-renew-pending.json"


@dataclass(frozen=True)
class Pending:
    hosts: list[str]
    tags: list[str]
    everywhere: bool = False


def pending(target: Target) -> Pending | None:
    """What an earlier renewal reissued but did not install, or None."""
    path = target.state_dir / PENDING_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        return Pending(
            [str(h) for h in found["hosts"]],
            [str(t) for t in found["tags"] if t in RENEW_TAGS],
            bool(found.get("everywhere")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path}: unreadable; remove it and run kubesmith provision (it installs every "
            "certificate)"
        ) from None


def _write_pending(target: Target, what: Pending) -> None:
    document = {"hosts": what.hosts, "tags": what.tags, "everywhere": what.everywhere}
    atomic_write(target.state_dir / PENDING_FILE, (json.dumps(document) + "\n").encode(), 0o600)


@dataclass
class Renewal:
    plan: Plan
    #: (node, certificate file, reason) of every certificate reissued on the controller.
    reissued: list[tuple[str, str, str]]
    #: The provisioning run; None when only the controller's own certificate was reissued.
    outcome: Outcome | None
    services: Services
    tags: list[str]
    hosts: list[str]
    kubernetes_binaries: bool | None


def renew(
    target: Target,
    due_plan: Plan,
    now: dt.datetime,
    on_event: EventHandler | None = None,
    attach: kubernetes.Attach | None = None,
) -> Renewal:
    """Reissue ``due_plan``'s certificates and install them (with what an earlier renewal
    could not install) with the narrowest run, holding the cluster's change lock throughout."""
    with cluster_lock(target.state_dir, "certificate renewal"):
        return _renew(target, due_plan, now, on_event, attach)


def _renew(
    target: Target,
    due_plan: Plan,
    now: dt.datetime,
    on_event: EventHandler | None,
    attach: kubernetes.Attach | None,
) -> Renewal:
    pki = kubernetes.cluster_pki(target)
    for d in due_plan.due:
        crt = (
            pki.controller_admin()[0]
            if d.node == CONTROLLER.name
            else target.pki_dir / "nodes" / d.node / f"{d.path}.crt"
        )
        # The key stays: Pki.ensure reissues a missing certificate with the existing key.
        crt.unlink()
    report = pki.ensure(target.inventory.identities(), now=now)
    reasons = {(d.node, f"{d.path}.crt"): d.reason(now) for d in due_plan.due}
    reissued = [(n, p, reasons.get((n, p), why)) for n, p, why in report.issued]
    # Whatever else Pki.ensure wrote (a changed address, say) goes out in the same run; a new
    # CA or service-account key ("-") concerns every host. So does what an earlier renewal
    # reissued but could not install (its run failed): it is kept until a run succeeds.
    earlier = pending(target)
    everywhere = any(n == "-" for n, _, _ in reissued) or bool(earlier and earlier.everywhere)
    hosts = sorted(
        {n for n, _, _ in reissued if n not in ("-", CONTROLLER.name)}
        | set(earlier.hosts if earlier else ())
    )
    wanted = (
        {"pki"}
        | set(earlier.tags if earlier else ())
        | {tag for _, path, _ in reissued if (tag := LEAF_TAGS.get(path.removesuffix(".crt")))}
    )
    tags = list(RENEW_TAGS) if everywhere else [t for t in RENEW_TAGS if t in wanted]
    services = Services()

    def collect(event: dict[str, Any]) -> None:
        services(event)
        if on_event is not None:
            on_event(event)

    # Install nothing new: the run keeps whether the last one had the Kubernetes binaries.
    known = records.last_binaries(target.state_dir)
    outcome = None
    if hosts or everywhere:
        options = Options(
            tags=tags,
            limit=None if everywhere else ",".join(hosts),
            extravars={} if known is None else {BINARIES_VAR: known},
        )
        _write_pending(target, Pending(hosts, tags, everywhere))
        outcome = provision(target, options, collect, attach)
        if outcome.run.ok:
            (target.state_dir / PENDING_FILE).unlink()
    return Renewal(due_plan, reissued, outcome, services, tags, hosts, known)
