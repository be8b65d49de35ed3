"""Options shared by several commands (each defined once here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from kubesmith.errors import UserError
from kubesmith.provision import target as targets


def stack_option(default: Any = ..., help: str = "Stack name (reads Pulumi.<stack>.yaml).") -> Any:
    """``--stack/-s``: required unless ``default`` is given."""
    return typer.Option(default, "--stack", "-s", help=help)


Stack = stack_option()
OptionalStack = stack_option(None, "Stack name (its inventory and PKI).")
LocalStack = stack_option("local")
#: ``--inventory/-i``: the other way to name a target (see target_of).
OptionalInventory = typer.Option(
    None,
    "--inventory",
    "-i",
    help="An inventory file instead of a stack (e.g. a lab's); PKI and run data live beside it.",
)


def target_of(stack: str | None, inventory: Path | None) -> targets.Target:
    """The cluster a command works on: a stack's, or an inventory file's (exactly one)."""
    if (stack is None) == (inventory is None):
        raise UserError("give exactly one of --stack/-s STACK or --inventory FILE")
    if stack is not None:
        return targets.for_stack(stack)
    assert inventory is not None
    return targets.for_inventory(inventory)


def confirmed(
    action: str, question: str, *, yes: bool, interactive: bool, ask: Callable[[str], bool]
) -> bool:
    """Whether to go ahead with a destructive ``action``: --yes, or a person at a terminal
    who answers ``question`` so; without either, a one-line refusal."""
    if yes:
        return True
    if not interactive:
        raise UserError(
            f"refusing to {action} without --yes: stdin is not a terminal, so nobody can confirm"
        )
    return ask(question)
