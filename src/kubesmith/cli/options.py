"""Options shared by several commands."""

from __future__ import annotations

import typer

Stack = typer.Option(..., "--stack", "-s", help="Stack name (reads Pulumi.<stack>.yaml).")
