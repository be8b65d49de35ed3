"""Serialise rendered objects: one YAML stream, or one file per object.

``yaml.dump`` with a SafeDumper subclass and sorted keys: identical objects give identical
bytes. The subclass only changes layout (sequences indented under their key, as yamllint's
default expects; multi-line strings as ``|`` blocks so a Corefile stays readable).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class _ManifestDumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        del indentless  # never indentless: "- item" sits two spaces under its key
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_ManifestDumper.add_representer(str, _represent_str)

#: Files `write_manifests` owns in an output directory (and replaces on the next render).
_OUTPUT_FILE = re.compile(r"[0-9]{2,}-[a-z0-9]+-[a-z0-9.-]+\.yaml")


def dump_stream(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, every document starting with ``---``."""
    return yaml.dump_all(
        [dict(o) for o in objects],
        Dumper=_ManifestDumper,
        sort_keys=True,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
    )


def manifest_filename(index: int, obj: Mapping[str, Any]) -> str:
    """``<index>-<kind>-<name>.yaml``, index zero-padded so files sort in apply order."""
    return f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_manifests(objects: Sequence[Mapping[str, Any]], directory: Path) -> list[Path]:
    """One file per object in ``directory``; earlier renders' files there are replaced.

    Files holding a Secret are created 0600: they may carry real secret values.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        if stale.is_file() and _OUTPUT_FILE.fullmatch(stale.name):
            stale.unlink()
    written = []
    for index, obj in enumerate(objects):
        path = directory / manifest_filename(index, obj)
        mode = 0o600 if obj["kind"] == "Secret" else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_stream([obj]))
        written.append(path)
    return written
