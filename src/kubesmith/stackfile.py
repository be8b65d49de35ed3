"""Read a stack's settings from Pulumi.<stack>.yaml without the Pulumi engine.

The stack files are the project's; outside any project (an installed kubesmith run from
anywhere) they are the ones kubesmith ships (local, dev, prod), so `kubesmith lab up` and
`config check` work there too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kubesmith.errors import UserError
from kubesmith.resources import project_files
from kubesmith.spec import CONFIG_KEY, ClusterSpec, parse_cluster
from kubesmith.state.paths import find_project_root

_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def stack_file(stack: str, root: Path | None = None) -> Path:
    if not _STACK_NAME.fullmatch(stack):
        raise UserError(f"stack name {stack!r} may only hold letters, digits, '-', '_' and '.'")
    return _stacks_dir(root) / f"Pulumi.{stack}.yaml"


def _stacks_dir(root: Path | None) -> Path:
    return root or find_project_root() or project_files()


def available_stacks(root: Path | None = None) -> list[str]:
    base = _stacks_dir(root)
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in base.glob("Pulumi.*.yaml"))


def read_stack_config(stack: str, root: Path | None = None) -> dict[str, Any]:
    """The `config:` mapping of Pulumi.<stack>.yaml."""
    path = stack_file(stack, root)
    if not path.is_file():
        known = ", ".join(available_stacks(root)) or "none"
        raise UserError(f"{path.name}: no such stack file (stacks here: {known})")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path.name}:{mark.line + 1}" if mark is not None else path.name
        raise UserError(f"{where}: not valid YAML: {exc.problem}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise UserError(f"{path.name}: expected a mapping with a 'config:' section")
    config: dict[str, Any] = document.get("config") or {}
    return config


def load_spec(stack: str, root: Path | None = None) -> ClusterSpec:
    """Read and validate `kubesmith:cluster` from Pulumi.<stack>.yaml."""
    config = read_stack_config(stack, root)
    if CONFIG_KEY not in config:
        raise UserError(f"{stack_file(stack, root).name}: no '{CONFIG_KEY}' key under config:")
    return parse_cluster(config[CONFIG_KEY])
