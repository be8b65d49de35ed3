"""Values: layered, merged, and checked against a JSON Schema before any template runs.

Layers, lowest precedence first: the bundle's ``values.yaml``, its ``values-<env>.yaml``, then
the stack's ``kubesmith:cluster.apps[].values`` (or whatever the caller passes). They merge
with JSON Merge Patch semantics (RFC 7386): mappings merge key by key, ``null`` removes a key,
anything else (scalars, lists) replaces the lower value.

Every schema problem is reported at once, one line each, naming the layer that set the
offending key: ``templates/apps/hello/values-prod.yaml: replicas: -1 is less than the minimum
of 0``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from kubesmith.apps import yamlload
from kubesmith.apps.formats import format_checker
from kubesmith.apps.schemaerrors import SchemaProblem, describe_all, format_path
from kubesmith.errors import ConfigError, UserError


@dataclass(frozen=True)
class ValuesLayer:
    """One source of values and how problems name it."""

    #: A file (``templates/apps/hello/values.yaml``) or a stack file (``Pulumi.prod.yaml``).
    source: str
    data: Mapping[str, Any]
    #: For values nested in a config document: the key holding them
    #: (``kubesmith:cluster.apps[0].values``); None for a values file.
    key: str | None = None

    def locate(self, path: Sequence[str | int]) -> str:
        where = format_path(path)
        if self.key is not None:
            suffix = f"[{where}" if where.startswith("[") else f".{where}" if where else ""
            return f"{self.source}: {self.key}{suffix}"
        return f"{self.source}: {where}" if where else self.source


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside, else as given."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def load_values_file(path: Path, source: str) -> ValuesLayer:
    """Read one values file; its problems name ``source`` and the line."""
    try:
        document = yamlload.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise UserError(f"{where}: not valid YAML: {exc.problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UserError(f"{source}: must be a mapping of values, got {type(document).__name__}")
    return ValuesLayer(source, document)


def merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: ``patch`` over ``base``; neither argument is modified."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def merge_layers(layers: Sequence[ValuesLayer]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.data)
    return merged


def _contains(data: Any, path: Sequence[str | int]) -> bool:
    node = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            # Lists replace wholesale, so the layer holding the list owns all its items.
            return isinstance(node, list) and isinstance(part, int) and part < len(node)
    return True


def _owner(
    problem: SchemaProblem, layers: Sequence[ValuesLayer], required_from: ValuesLayer
) -> ValuesLayer:
    """The highest-precedence layer that wrote the offending key (or its parent, if missing)."""
    path = problem.path
    if not any(_contains(layer.data, path) for layer in layers):
        path = path[:-1]  # a missing key: blame whoever wrote the mapping that lacks it
        if not path:
            return required_from
    for layer in reversed(layers):
        if _contains(layer.data, path):
            return layer
    return layers[0]


@cache
def _read_json(path: Path, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key only: an edited schema is read again
    return json.loads(path.read_text(encoding="utf-8"))


def _load_schema(path: Path, source: str) -> Any:
    try:
        return _read_json(path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None


_FORMATS = format_checker()
#: Schemas (as canonical JSON) already checked against the metaschema in this process:
#: the check costs more than validating values, and apps often share a schema's text.
_CHECKED: set[str] = set()


def _check_schema(schema: Any, display: str) -> None:
    key = json.dumps(schema, sort_keys=True)
    if key in _CHECKED:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise UserError(f"{display}: not a valid JSON Schema: {exc.message}") from None
    _CHECKED.add(key)


def _retriever(root: Path) -> Callable[[str], Resource[Any]]:
    """Loads ``$ref``-ed schema files, refusing anything outside the templates directory."""

    def retrieve(uri: str) -> Resource[Any]:
        target = Path(uri.removeprefix("file://"))
        if not uri.startswith("file://") or not target.resolve().is_relative_to(root):
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs field
        schema = _load_schema(target, display_path(target, root.parent))
        _check_schema(schema, display_path(target, root.parent))
        return Resource.from_contents(schema)

    return retrieve


@cache
def _library(root: Path, stamp: tuple[tuple[str, int], ...]) -> Registry[Any]:
    """A registry holding the shared schemas (templates/*.schema.json), checked once."""
    retrieve = _retriever(root)
    # `retrieve` is an attrs alias, documented but invisible to mypy.
    registry: Registry[Any] = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return registry.with_resources(
        ((root / name).as_uri(), retrieve((root / name).as_uri())) for name, _ in stamp
    )


def schema_validator(schema_path: Path, templates_dir: Path) -> Draft202012Validator:
    """A validator for ``schema_path``; relative ``$ref``s resolve to files in templates_dir."""
    root = templates_dir.resolve()
    display = display_path(schema_path, root.parent)
    schema = _load_schema(schema_path, display)
    _check_schema(schema, display)
    # Keyed by modification times, so an edited shared schema is read again.
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in root.glob("*.schema.json")))
    uri = schema_path.resolve().as_uri()
    registry = _library(root, stamp).with_resource(uri, Resource.from_contents(schema))
    return Draft202012Validator({"$ref": uri}, registry=registry, format_checker=_FORMATS)


def validated_values(
    layers: Sequence[ValuesLayer],
    schema_path: Path,
    templates_dir: Path,
    *,
    required_from: ValuesLayer | None = None,
) -> dict[str, Any]:
    """Merge ``layers`` and check the result; ConfigError lists every problem.

    A missing top-level key is blamed on ``required_from`` (default: the first layer, the
    bundle's values.yaml, where defaults belong).
    """
    values = merge_layers(layers)
    validator = schema_validator(schema_path, templates_dir)
    try:
        problems = describe_all(validator.iter_errors(values))
    except Unresolvable as exc:
        source = display_path(schema_path, templates_dir.parent)
        raise UserError(
            f"{source}: cannot resolve $ref {exc.ref!r} (refs must name schema files inside "
            f"{display_path(templates_dir, templates_dir.parent)}/)"
        ) from None
    if problems:
        raise ConfigError(
            f"{_owner(problem, layers, required_from or layers[0]).locate(problem.path)}: "
            f"{problem.message}"
            for problem in problems
        )
    return values
