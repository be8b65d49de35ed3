"""The `kubesmith` command line.

Each command family lives in its own module and is registered here. Every KubesmithError
raised below reaches the user as one line on stderr and its exit code, never as a traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from kubesmith.cli import config as config_cmd
from kubesmith.cli.console import err
from kubesmith.errors import KubesmithError


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KubesmithError as exc:
            for line in exc.lines():
                err.print(
                    f"[bold red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True
                )
            if exc.hint:
                err.print(f"hint: {exc.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="kubesmith",
    help="Kubernetes clusters from a stack config: Pulumi machines, Ansible nodes, Jinja apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    app()
