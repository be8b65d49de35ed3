"""Options shared by several commands (each defined once here)."""

from __future__ import annotations

from typing import Any

import typer


def stack_option(default: Any = ..., help: str = "Stack name (reads Pulumi.<stack>.yaml).") -> Any:
    """``--stack/-s``: required unless ``default`` is given."""
    return typer.Option(default, "--stack", "-s", help=help)


Stack = stack_option()
OptionalStack = stack_option(None, "Stack name (its inventory and PKI).")
LocalStack = stack_option("local")
