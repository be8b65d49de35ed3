"""Turn jsonschema errors into short ``key.path: message`` problems.

Shared by the values check (app schemas) and the manifest check (Kubernetes OpenAPI schemas),
so both name the offending key the same way. A subschema may carry an ``errorMessage``
annotation (the ajv-errors convention: a string, or a mapping keyword -> string) to replace the
generic text where a rule needs explaining.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: How jsonschema words `required` and `dependentRequired` failures (the key is only there).
_MISSING = re.compile(r"'(.+?)' is a (?:required property|dependency of '(.+)')")
_TYPE_NAMES = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


@dataclass(frozen=True)
class SchemaProblem:
    #: Keys and list indices from the document root to the offending value.
    path: tuple[str | int, ...]
    message: str


def format_path(path: Sequence[str | int]) -> str:
    """``spec.template.spec.containers[0].image``; keys with dots or spaces are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def _custom_message(error: ValidationError) -> str | None:
    schema = error.schema
    if not isinstance(schema, Mapping):
        return None
    message = schema.get("errorMessage")
    if isinstance(message, str):
        return message
    if isinstance(message, Mapping):
        found = message.get(str(error.validator))
        return found if isinstance(found, str) else None
    return None


def _type_text(expected: Any) -> str:
    names = [expected] if isinstance(expected, str) else [t for t in expected if t != "null"]
    return " or ".join(_TYPE_NAMES.get(name, name) for name in names)


def _unknown_keys(error: ValidationError) -> list[SchemaProblem]:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    known = list(schema.get("properties", {}))
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    base = tuple(error.absolute_path)
    problems = []
    for key in instance:
        if key in known or any(p.search(key) for p in patterns):
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        elif known:
            hint = f" (known keys: {', '.join(sorted(known))})"
        else:
            hint = ""
        problems.append(SchemaProblem((*base, key), f"unknown key{hint}"))
    return problems


def describe(error: ValidationError) -> list[SchemaProblem]:
    """One or more problems for a single jsonschema error."""
    path = tuple(error.absolute_path)
    custom = _custom_message(error)
    keyword = error.validator
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        # The error is about a key, which jsonschema reports at its parent mapping.
        return [SchemaProblem((*path, error.instance), custom or error.message)]
    if keyword == "additionalProperties" and error.validator_value is False and custom is None:
        return _unknown_keys(error)
    if keyword in ("required", "dependentRequired"):
        missing = _MISSING.match(error.message)
        if missing:
            name, trigger = missing.groups()
            when = f" when {format_path((*path, trigger))} is set" if trigger else ""
            return [SchemaProblem((*path, name), custom or f"is required{when}")]
    if custom is not None:
        return [SchemaProblem(path, custom)]
    if keyword in ("anyOf", "oneOf") and error.context:
        return describe(best_match(error.context))
    if keyword == "type":
        expected = _type_text(error.validator_value)
        return [SchemaProblem(path, f"must be {expected}, got {error.instance!r}")]
    if keyword == "enum":
        allowed = ", ".join(repr(v) for v in cast(list[Any], error.validator_value))
        return [SchemaProblem(path, f"must be one of {allowed}, got {error.instance!r}")]
    if keyword == "const":
        return [SchemaProblem(path, f"must be {error.validator_value!r}, got {error.instance!r}")]
    if keyword == "format" and error.cause is not None:
        return [SchemaProblem(path, str(error.cause))]
    if keyword is None:  # a `false` schema: nothing may appear here
        return [SchemaProblem(path, "is not allowed here")]
    return [SchemaProblem(path, error.message)]


def describe_all(errors: Iterable[ValidationError]) -> list[SchemaProblem]:
    """Every problem once, ordered by where it is in the document."""
    problems: dict[SchemaProblem, None] = {}
    for error in errors:
        problems.update(dict.fromkeys(describe(error)))
    return sorted(problems, key=lambda p: ([_sort_key(part) for part in p.path], p.message))


def _sort_key(part: str | int) -> tuple[int, int, str]:
    return (0, part, "") if isinstance(part, int) else (1, 0, part)
