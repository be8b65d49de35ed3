"""`kubesmith node remove`: take one node out of a cluster for good (kubesmith.provision.removal).

Destructive, so it asks first, like `reset` and `destroy`: --yes, or a person at a terminal
who says so; with neither it refuses in one line. Every check runs before that question, so
a refusal (last control plane, etcd quorum) never asks and never changes anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kubesmith.cli.console import err, out, progress, reporter
from kubesmith.cli.options import OptionalInventory, OptionalStack, confirmed, target_of
from kubesmith.local.shares import attach_for
from kubesmith.provision import removal
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.recap import Progress, pki_summary, recap_table
from kubesmith.provision.runner import RunResult
from kubesmith.provision.target import Target
from kubesmith.state.lock import cluster_lock

node_app = typer.Typer(help="One node of a cluster: remove it for good.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _run(target: Target, options: Options, title: str) -> RunResult:
    hosts = options.limit.split(",") if options.limit else list(target.inventory.hostvars)
    with Progress(progress, hosts, f"{title}: {target.label}") as live:
        outcome = provision(target, options, live, attach_for(target.inventory.cluster.spec))
    summary = pki_summary(outcome.pki)
    if summary:
        err.print(summary)
    out.print(recap_table(outcome.run, f"{title}: {target.label}"))
    return outcome.run


@node_app.command("remove")
def remove_command(
    name: str = typer.Argument(..., help="The node (its inventory host name)."),
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; needed without a terminal."),
) -> None:
    """Remove a node for good: drain it and delete its Node object (when the API answers),
    remove its etcd member (refusing to break quorum), reset it, update what the other nodes
    hold about it, and forget its certificates, pod range and host key.

    A node that no longer answers is removed all the same (it is not reset). The inventory is
    not edited: take the host out of your file afterwards (with a stack, lower its count).
    """
    target = target_of(stack, inventory)
    removal.check_inventory(target.inventory, target.label, [name])  # before any node is asked
    # One change at a time, from the checks on (held while asking, as Pulumi holds a stack's
    # lock at its prompt): what was checked is what the steps find.
    with cluster_lock(target.state_dir, f"node remove {name}"):
        with reporter() as report:
            report.phase(f"node remove {name}: checking {target.label}")
            checked = removal.preflight(target, name)
        question = (
            f"Remove {name} from {target.label} for good: drain it, remove its etcd member, "
            "reset it and forget its certificates, pod range and host key?"
        )
        if not confirmed(
            f"remove {name}", question, yes=yes, interactive=_stdin_is_terminal(), ask=typer.confirm
        ):
            out.print("node remove cancelled; nothing was changed")
            raise typer.Exit(1)

        def say(line: str) -> None:
            out.print(f"{name}: {line}", highlight=False)

        with reporter() as report:
            report.phase(f"node remove {name}: drain, etcd member, reset")
            lines = removal.leave(target, checked)
        for line in lines:
            say(line)
        after = removal.update_others(target, name, _run, say)
        forgotten = removal.forget(target, checked)
    say(f"forgot {', '.join(forgotten)}" if forgotten else "nothing of it kept on the controller")
    out.print(f"[green]ok[/]: {name} removed; the cluster without it: {after.inventory.path}")
    where = (
        f"lower the count in Pulumi.{stack}.yaml (kubesmith up deletes a machine)"
        if stack
        else f"delete {name} from {inventory}"
    )
    err.print(f"kubesmith did not edit the inventory: {where}", highlight=False, soft_wrap=True)
