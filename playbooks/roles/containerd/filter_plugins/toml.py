"""to_toml: render a mapping as TOML, so containerd's config is built from data like the rest.

Covers what containerd's configuration uses: nested tables, strings, booleans, integers,
floats and lists of scalars. Strings are written as TOML basic strings (JSON's escaping is a
subset of TOML's), table names are quoted where they are not bare keys ("io.containerd...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: object) -> str:
    text = str(name)
    return text if _BARE_KEY.match(text) else json.dumps(text)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    raise TypeError(f"to_toml cannot write a {type(value).__name__}: {value!r}")


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(path) + "]")
    for key, value in scalars.items():
        if value is not None:
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in tables.items():
        _table(value, [*path, _key(key)], lines)


def to_toml(data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise TypeError(f"to_toml needs a mapping, got {type(data).__name__}")
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"to_toml": to_toml}
