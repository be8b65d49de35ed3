"""`kubesmith config ...`: check a stack's configuration without the Pulumi engine."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from kubesmith.apps.policy import unenforced_policies
from kubesmith.apps.render import render_stack_apps
from kubesmith.cli.console import err, out
from kubesmith.cli.options import Stack
from kubesmith.spec import ClusterSpec
from kubesmith.stackfile import load_spec

app = typer.Typer(help="Inspect and validate stack configuration.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")


def _text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "(none)"
    return str(value)


def _rows(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Flatten nested settings into (dotted key, text) rows; lists of mappings get an index."""
    if isinstance(value, dict) and value:
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows.extend(_rows(f"{prefix}.{key}" if prefix else key, item))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = []
        for index, item in enumerate(value):
            rows.extend(_rows(f"{prefix}[{index}]", item))
        return rows
    return [(prefix, _text(value))]


def spec_table(stack: str, spec: ClusterSpec) -> Table:
    table = Table(title=f"stack {stack}: kubesmith:cluster (resolved)", title_justify="left")
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    data = spec.model_dump(by_alias=True, exclude_none=True)
    data["clusterDns"] = spec.dns_address
    for key, value in _rows("", data):
        table.add_row(key, value)
    return table


@app.command("check")
def check(stack: str = Stack) -> None:
    """Validate Pulumi.STACK.yaml and print the resolved spec (defaults filled in).

    The stack's apps are rendered and checked as `pulumi up` deploys them; a NetworkPolicy
    that no agent of the cluster enforces is named in a warning (kubesmith.apps.policy).
    """
    spec = load_spec(stack)
    rendered = render_stack_apps(spec, stack)
    out.print(spec_table(stack, spec))
    for warning in unenforced_policies(spec, stack, rendered):
        err.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    out.print(
        f"[green]ok[/]: Pulumi.{stack}.yaml is valid ({spec.control_planes} control planes, "
        f"{spec.workers} workers, backend {spec.backend}, Kubernetes {spec.kubernetes_version})"
    )
