"""`kubesmith lab up|down`: throwaway LXD nodes with an Ansible inventory, no Pulumi engine."""

from __future__ import annotations

import typer

from kubesmith.cli.console import out, reporter
from kubesmith.cli.options import LocalStack
from kubesmith.local.lab import create_lab, destroy_lab

app = typer.Typer(
    help="Labs: LXD nodes for role development and tests (create, wait for SSH, inventory).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="lab")


@app.command("up")
def up(
    name: str = typer.Argument(..., help="Lab name; nodes are NAME-cp-N and NAME-worker-N."),
    stack: str = LocalStack,
    control_planes: int | None = typer.Option(
        None, "--control-planes", help="Control-plane nodes (default: the stack's)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker nodes (default: the stack's)."
    ),
) -> None:
    """Create the lab's nodes (or reuse them), wait for SSH and print the inventory path last."""
    with reporter() as progress:
        lab = create_lab(
            name, stack=stack, control_planes=control_planes, workers=workers, reporter=progress
        )
    for node in lab.nodes:
        out.print(f"{node.name}\t{node.role}\t{node.private_address}")
    out.print(str(lab.inventory_path))


@app.command("down")
def down(name: str = typer.Argument(..., help="Lab name given to `lab up`.")) -> None:
    """Delete the lab's nodes and its directory (a lab that is not there is not an error)."""
    with reporter() as progress:
        teardown = destroy_lab(name, reporter=progress)
    if not teardown.found:
        out.print(f"no lab {name} here; nothing to do")
        return
    deleted = ", ".join(teardown.deleted) or "no nodes"
    out.print(f"lab {name} removed ({deleted})")
