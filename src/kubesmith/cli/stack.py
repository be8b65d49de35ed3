"""`kubesmith preview|up|destroy|inventory -s STACK`: the stack's machines, through Pulumi.

Every command validates Pulumi.STACK.yaml first, so configuration errors show without the
Pulumi CLI; then it needs the CLI (see kubesmith.program.automation for what runs and what is
unverified on machines without it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from kubesmith.cli.console import out, progress
from kubesmith.cli.options import Stack
from kubesmith.errors import UserError
from kubesmith.program import automation
from kubesmith.stackfile import load_spec
from kubesmith.state.paths import project_root


def register(root: typer.Typer) -> None:
    root.command("preview")(preview)
    root.command("up")(up)
    root.command("destroy")(destroy)
    root.command("inventory")(inventory)


def _progress(line: str) -> None:
    # Pulumi's lines go out as they come (no markup, no rewrapping), like all progress.
    progress.out(line, highlight=False)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ready(command: str, stack: str) -> None:
    load_spec(stack)
    automation.require_cli(command)


def confirm_destroy(
    stack: str, *, yes: bool, interactive: bool, ask: Callable[[str], bool]
) -> bool:
    """Whether to go ahead: --yes, or a person at a terminal who says so."""
    if yes:
        return True
    if not interactive:
        raise UserError(
            f"refusing to destroy stack {stack!r} without --yes: stdin is not a terminal, "
            "so nobody can confirm"
        )
    return ask(f"Destroy every resource of stack {stack!r}?")


def preview(stack: str = Stack) -> None:
    """Show what `up` would create, change or delete for the stack."""
    _ready("preview", stack)
    changes = automation.preview(stack, project_root(), _progress)
    summary = ", ".join(f"{count} to {op}" for op, count in sorted(changes.items()))
    out.print(f"stack {stack}: {summary or 'no changes'}")


def up(stack: str = Stack) -> None:
    """Create or update the stack's machines and print where its API is."""
    _ready("up", stack)
    outputs = automation.up(stack, project_root(), _progress)
    nodes = outputs.get("nodes") or []
    out.print(
        f"stack {stack} is up: {len(nodes)} nodes, API at {outputs.get('apiEndpoint')}; "
        f"inventory: kubesmith inventory -s {stack}"
    )


def destroy(
    stack: str = Stack,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; needed without a terminal."),
    remove: bool = typer.Option(
        False,
        "--remove",
        help="Also remove the stack's state from the backend (for throwaway CI stacks); "
        "Pulumi.STACK.yaml is kept.",
    ),
) -> None:
    """Delete every resource of the stack."""
    _ready("destroy", stack)
    if not confirm_destroy(stack, yes=yes, interactive=_stdin_is_terminal(), ask=typer.confirm):
        out.print("destroy cancelled; nothing was changed")
        raise typer.Exit(1)
    automation.destroy(stack, project_root(), _progress, remove=remove)
    out.print(f"stack {stack} destroyed{' and removed' if remove else ''}")


def inventory(stack: str = Stack) -> None:
    """Print the stack's Ansible inventory (YAML) as recorded by its last `up`."""
    _ready("inventory", stack)
    text = automation.stack_output(stack, project_root(), "inventory")
    typer.echo(str(text), nl=False)
