"""`kubesmith reset`: return a cluster's nodes to their state before provisioning.

Destructive, so it asks first, like `destroy`: --yes, or a person at a terminal who says so;
with neither it refuses in one line. etcd's member data (every object of the cluster) goes
only with --include-etcd-data; without it the output says where it was kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import typer

from kubesmith.cli.console import out, progress
from kubesmith.cli.options import OptionalInventory, OptionalStack, confirmed, target_of
from kubesmith.provision.recap import Progress, recap_table
from kubesmith.provision.reset import reset, reset_hosts

#: Hosts named in the question; a longer list is counted.
_NAMED_HOSTS = 6


def register(app: typer.Typer) -> None:
    app.command("reset")(reset_command)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def confirm_reset(
    label: str,
    hosts: Sequence[str],
    *,
    yes: bool,
    interactive: bool,
    ask: Callable[[str], bool],
    include_etcd_data: bool = False,
) -> bool:
    """Whether to go ahead: --yes, or a person at a terminal who says so."""
    etcd = (
        " and etcd's member data (every object of the cluster)"
        if include_etcd_data
        else " (etcd's member data is kept)"
    )
    named = ", ".join(hosts[:_NAMED_HOSTS])
    if len(hosts) > _NAMED_HOSTS:
        named += f" and {len(hosts) - _NAMED_HOSTS} more"
    question = (
        f"Reset {len(hosts)} node(s) of {label} ({named}): stop kubesmith's "
        f"services and remove their configuration, certificates, data{etcd}?"
    )
    return confirmed(f"reset {label}", question, yes=yes, interactive=interactive, ask=ask)


def reset_command(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    limit: str | None = typer.Option(
        None, "--limit", "-l", help="Only these hosts (names, groups or an Ansible pattern)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; needed without a terminal."),
    include_etcd_data: bool = typer.Option(
        False,
        "--include-etcd-data",
        help="Also remove etcd's member data and snapshots (without it they are kept).",
    ),
) -> None:
    """Return nodes to their state before provisioning: kubesmith's services stopped and
    disabled; their units, configuration, certificates, data and pod network removed.

    Debian packages and installed release binaries stay, as does everything on the controller
    (PKI, keys, pod ranges): provisioning again brings back the same cluster.
    """
    target = target_of(stack, inventory)
    hosts = reset_hosts(target, limit)
    confirmed = confirm_reset(
        target.label,
        hosts,
        yes=yes,
        interactive=_stdin_is_terminal(),
        ask=typer.confirm,
        include_etcd_data=include_etcd_data,
    )
    if not confirmed:
        out.print("reset cancelled; nothing was changed")
        raise typer.Exit(1)
    title = f"reset: {target.label}"
    with Progress(progress, hosts, title) as live:
        outcome = reset(target, limit=limit, include_etcd_data=include_etcd_data, on_event=live)
    out.print(recap_table(outcome.run, title))
    for host, node in sorted(outcome.nodes.items()):
        for line in node.done:
            out.print(f"{host}: {line}", highlight=False)
        for line in node.kept:
            out.print(f"{host}: [yellow]kept[/] {line}", highlight=False)
    outcome.run.raise_for_failure("reset")
    changed = sum(s.changed for s in outcome.run.stats.values())
    undone = sum(len(node.done) for node in outcome.nodes.values())
    out.print(
        f"[green]ok[/]: {len(outcome.run.stats)} hosts reset, {changed} changes "
        f"({undone} things undone)"
    )
