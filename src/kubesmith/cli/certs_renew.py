"""`kubesmith certs --renew`: what it prints (the work is kubesmith.provision.renewal)."""

from __future__ import annotations

from datetime import UTC, datetime

from kubesmith.cli.console import err, out, progress
from kubesmith.local.shares import attach_for
from kubesmith.provision import renewal
from kubesmith.provision.recap import Progress, recap_table
from kubesmith.provision.target import Target
from kubesmith.state.pki import CONTROLLER

RUNBOOK = "docs/runbooks/certificates.md"


def renew_certs(target: Target, within_days: int | None) -> None:
    """Reissue what is due, install it, say what was reissued, why, and what restarted."""
    within = renewal.validate_within(within_days)
    now = datetime.now(UTC)
    plan = renewal.plan(target, within, now)
    for ca in plan.cas:
        err.print(
            f"[yellow]attention[/]: CA {ca.path}.crt expires {ca.not_after:%Y-%m-%d}; "
            f"certs --renew never renews a CA (a new CA is a new cluster PKI): see {RUNBOOK}, "
            "'An expired CA'",
            highlight=False,
        )
    if not plan.due and renewal.pending(target) is None:
        soonest = ""
        if plan.soonest:
            path, not_after = plan.soonest
            soonest = f" (soonest: {path}, {not_after:%Y-%m-%d}, {(not_after - now).days} days)"
        out.print(
            f"[green]ok[/]: nothing due: no leaf certificate of {target.label} expires within "
            f"{within.days} days{soonest}",
            highlight=False,
        )
        return
    title = f"certs --renew: {target.label}"
    hosts = list(target.inventory.hostvars)
    with Progress(progress, hosts, title) as live:
        done = renewal.renew(target, plan, now, live, attach_for(target.inventory.cluster.spec))
    if not done.reissued:
        out.print(
            "nothing due; installing what the last renewal reissued (its run failed)",
            highlight=False,
        )
    else:
        out.print("reissued on the controller (same keys):", highlight=False)
    for node, path, reason in done.reissued:
        where = "controller" if node == CONTROLLER.name else node
        out.print(f"  {where}  {path}  {reason}", highlight=False)
    if done.outcome is None:
        out.print("no node holds a reissued certificate: nothing to install", highlight=False)
    else:
        out.print(recap_table(done.outcome.run, title))
        done.outcome.run.raise_for_failure("certs --renew")
        out.print(
            f"installed with: provision --tags {','.join(done.tags)} --limit "
            f"{','.join(done.hosts) or 'all'}",
            highlight=False,
        )
        _print_services(done)
    if any(node == CONTROLLER.name for node, _, _ in done.reissued):
        err.print(
            "the controller's admin certificate was reissued: write kubeconfigs you handed out "
            "again (kubesmith kubeconfig -o FILE)",
            highlight=False,
        )
    out.print(
        f"[green]ok[/]: {len(done.reissued)} certificate(s) renewed, "
        f"{len(done.hosts)} host(s) updated",
        highlight=False,
    )


def _print_services(done: renewal.Renewal) -> None:
    marked, restarted = done.services.marked, done.services.restarted
    hosts = sorted(set(marked) | set(restarted))
    if not hosts:
        out.print("services: none restarted (no service reads a reissued certificate)")
        return
    out.print("services that read a reissued certificate:", highlight=False)
    for host in hosts:
        for unit in sorted(marked.get(host, set()) | restarted.get(host, set())):
            if unit in restarted.get(host, set()):
                state = "restarted"
            elif done.kubernetes_binaries is False and unit != "etcd":
                state = "marked for restart (not running: no Kubernetes binaries installed)"
            else:
                state = "marked for restart (unit rewritten)"
            out.print(f"  {host}  {unit}: {state}", highlight=False)
