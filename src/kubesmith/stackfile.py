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

from kubesmith.errors import ConfigError, UserError
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


#: Per-stack key material Pulumi writes into a stack file on the stack's first use; a copy
#: gets its own (an `encryptionsalt` copied along would tie the new stack to the old one's key).
_STACK_KEYS = ("encryptionsalt", "encryptedkey")


class _StackFileDumper(yaml.SafeDumper):
    """Lists indented under their key, as the project's yamllint config wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        del indentless  # never indentless: "- item" sits two spaces under its key
        super().increase_indent(flow, False)


def new_stack_file(name: str, source: str, root: Path) -> Path:
    """Write Pulumi.<name>.yaml from Pulumi.<source>.yaml: the same settings, the cluster
    named ``name`` (AWS names its resources after the cluster, so nothing else collides),
    without the source's key material. Refused: an existing target, secrets (`secure:`
    values are encrypted with the source's key) and LXD stacks (their bridge and subnet are
    one per host, so a copy would collide with the source)."""
    target = stack_file(name, root)
    if target.exists():
        raise UserError(f"{target.name} already exists; choose another stack name")
    template = load_spec(source, root)
    source_name = stack_file(source, root).name
    if template.backend == "lxd":
        raise UserError(
            f"{source_name} is an LXD stack: its bridge and subnet (lxd.network, lxd.subnet) "
            "are one stack's per host; copy it by hand and choose new ones"
        )
    document = yaml.safe_load(stack_file(source, root).read_text(encoding="utf-8"))
    secrets = sorted(_secure_keys(document["config"]))
    if secrets:
        raise UserError(
            f"{source_name} holds secrets ({', '.join(secrets)}) encrypted with its own key; "
            "a copy cannot decrypt them"
        )
    cluster = {**document["config"][CONFIG_KEY], "name": name}
    try:
        parse_cluster(cluster)
    except ConfigError as exc:
        raise UserError(f"stack name {name!r} cannot name its cluster: {exc.message}") from None
    copy = {key: value for key, value in document.items() if key not in _STACK_KEYS}
    copy["config"] = {**document["config"], CONFIG_KEY: cluster}
    header = f"# Made by `kubesmith stack new {name} --from {source}` from {source_name}.\n---\n"
    try:
        with target.open("x", encoding="utf-8") as fh:
            fh.write(header + yaml.dump(copy, Dumper=_StackFileDumper, sort_keys=False))
    except FileExistsError:
        raise UserError(f"{target.name} already exists; choose another stack name") from None
    return target


def _secure_keys(value: Any, path: str = "") -> list[str]:
    """Where Pulumi's encrypted values (``{secure: ...}``) are in a config mapping."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return [path]
        return [k for key, item in value.items() for k in _secure_keys(item, _join(path, key))]
    if isinstance(value, list):
        return [k for i, item in enumerate(value) for k in _secure_keys(item, f"{path}[{i}]")]
    return []


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
