"""Run every benchmark module (or those named on the command line), print a table, write JSON.

Each `bench/bench_<name>.py` defines `run() -> list[dict[str, object]]`; each row has at
least `case` and `seconds`. Results land in bench/results/<name>.json with the machine's
core count and a timestamp, so numbers can be compared across runs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        rows = module.run()
        table = Table(title=f"bench {name}", title_justify="left")
        columns = list(dict.fromkeys(key for row in rows for key in row))
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        console.print(table)
        report = {"bench": name, "cores": os.cpu_count(), "at": time.time(), "rows": rows}
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
