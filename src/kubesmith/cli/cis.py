"""`kubesmith cis check`: the CIS Kubernetes Benchmark judged from every node's files and units.

Exit 1 when an item fails on a node; `--json` prints every item of every node with its
status and evidence (the same data as the table, for machines).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape

from kubesmith.cis.benchmark import load
from kubesmith.cis.run import NodeReport, check_target
from kubesmith.cli.console import out, progress
from kubesmith.cli.options import OptionalInventory, OptionalStack, target_of
from kubesmith.errors import KubesmithError
from kubesmith.provision.recap import Progress

app = typer.Typer(
    help="The CIS Kubernetes Benchmark, judged from the nodes' files and units.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cis")


@app.command("check")
def check(
    stack: str | None = OptionalStack,
    inventory: Path | None = OptionalInventory,
    as_json: bool = typer.Option(False, "--json", help="Every item of every node as JSON."),
) -> None:
    """Judge every node on each item of CIS 1.12 sections 1-4 that lives in its files and
    units (src/kubesmith/cis/benchmark.yaml); exit 1 when one fails."""
    target = target_of(stack, inventory)
    hosts = target.inventory.hosts_in("k8s_cluster")
    title = f"CIS benchmark: {target.label}"
    with Progress(progress, hosts, title) as events:
        reports = check_target(target, events)
    if as_json:
        document = {
            "benchmark": load().benchmark,
            "nodes": [
                {"host": r.host, "role": r.role, "results": [asdict(x) for x in r.results]}
                for r in reports
            ],
        }
        out.print(json.dumps(document, indent=2), markup=False)
    else:
        _table(reports)
    failing = [(r.host, x.id) for r in reports for x in r.results if x.status == "fail"]
    if failing:
        where = ", ".join(dict.fromkeys(host for host, _ in failing))
        raise KubesmithError(f"{len(failing)} CIS item(s) fail, on {where}")


def _table(reports: list[NodeReport]) -> None:
    for report in reports:
        counts: dict[str, int] = {}
        for result in report.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        out.print(f"{escape(report.host)} ({report.role}): {summary}")
        for result in report.results:
            if result.status == "fail":
                evidence = "; ".join(result.evidence)
                out.print(f"  [red]FAIL[/] {result.id} {escape(result.title)}: {escape(evidence)}")
