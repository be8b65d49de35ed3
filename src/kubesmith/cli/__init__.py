"""The `kubesmith` command line.

Each command family lives in its own module of this package and defines
``register(app: typer.Typer) -> None``; modules are discovered here, so adding a command never
edits this file. Every KubesmithError raised below reaches the user as one line on stderr and
its exit code, never as a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import typer
from typer.core import TyperGroup

from kubesmith.cli.console import err, set_quiet
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


@app.callback()
def _options(
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        envvar="KUBESMITH_QUIET",
        help="No progress output (CI logs): only results, warnings and errors.",
    ),
) -> None:
    set_quiet(quiet)


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_commands()


def main() -> None:
    app()
