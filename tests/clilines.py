"""Command lines written for people (workflows, runbooks), checked against the real CLI.

`parses` asks the CLI for the line's ``--help``: Typer resolves the command and rejects an
unknown option before it prints help, so nothing runs and a renamed command or flag fails.
"""

from __future__ import annotations

import re
import shlex

from typer.testing import CliRunner

from kubesmith.cli import app

runner = CliRunner()


def kubesmith_lines(script: str) -> list[str]:
    """The `kubesmith ...` command lines of a shell script."""
    return [line.strip() for line in script.splitlines() if line.strip().startswith("kubesmith ")]


def cli_args(line: str) -> list[str]:
    """A command line's arguments, with shell variables and expressions as placeholders."""
    line = re.sub(r"\$\{\{.*?\}\}", "placeholder", line)
    line = re.sub(r"\$\{?\w+\}?", "placeholder", line)
    return shlex.split(line, comments=True)[1:]


def parses(line: str) -> tuple[bool, str]:
    """Whether the CLI accepts the line's command and flags (its --help, so nothing runs)."""
    result = runner.invoke(app, [*cli_args(line), "--help"])
    return result.exit_code == 0 and "Usage: kubesmith" in result.output, result.output
