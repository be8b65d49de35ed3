"""Check objects against the Kubernetes OpenAPI schemas, offline, in strict mode.

The schemas are the ones kubernetes-validate ships (``v<minor>.0-local-strict``: unknown
fields are errors). Its own ``validate()`` reads and parses the 1.5 MB definitions file for
every object and stops at the first error; this module loads each schema once per process and
reports every error of every object.

A Kubernetes version maps to the schemas of its minor release (1.35.1 -> 1.35.0), the way
kubernetes-validate maps it; a minor newer than the newest shipped schema is refused rather
than checked against older rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from kubernetes_validate import __version__ as kubernetes_validate_version
from kubernetes_validate import utils as kubernetes_validate
from referencing import Registry, Resource

from kubesmith.apps import yamlload
from kubesmith.apps.schemaerrors import describe_all, format_path
from kubesmith.errors import UserError

_VERSION = re.compile(r"v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")
#: kubernetes-validate's file naming: "rbac.authorization.k8s.io/v1" -> "rbac-v1".
_GROUP_DOMAIN = re.compile(r"^([^./]*)(?:\.[^/]*)?/")


@dataclass(frozen=True)
class ManifestProblem:
    source: str
    #: Position of the document in its stream, counting from 0 (empty documents count).
    index: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.index}:{self.path or '(document)'}: {self.message}"


def _minor(version: str) -> tuple[int, int]:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise UserError(f"Kubernetes version {version!r} is not a version such as 1.35.1")
    return int(match[1]), int(match[2])


@cache
def _shipped() -> tuple[tuple[int, int], ...]:
    return tuple(sorted({_minor(v) for v in kubernetes_validate.all_versions()}))


def schema_version(kubernetes_version: str) -> str:
    """The schema release used for a Kubernetes version: "1.35.1" -> "1.35.0"."""
    wanted = _minor(kubernetes_version)
    shipped = _shipped()
    if wanted > shipped[-1]:
        newest = ".".join(map(str, shipped[-1]))
        raise UserError(
            f"Kubernetes {kubernetes_version} is newer than the newest schemas kubernetes-validate "
            f"{kubernetes_validate_version} ships ({newest}); upgrade kubernetes-validate"
        )
    candidates = [minor for minor in shipped if minor <= wanted]
    if not candidates:
        oldest = ".".join(map(str, shipped[0]))
        raise UserError(
            f"Kubernetes {kubernetes_version} is older than the oldest schemas shipped ({oldest})"
        )
    major, minor = candidates[-1]
    return f"{major}.{minor}.0"


def _schema_dir(version: str) -> str:
    return f"kubernetes-json-schema/v{version}-local-strict"


@cache
def _registry(version: str) -> Registry[Any]:
    definitions: dict[str, Any] = kubernetes_validate.schema_contents(
        f"{_schema_dir(version)}/_definitions.json", version
    )
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions)
    )
    return registry


@cache
def _validator(version: str, api_version: str, kind: str) -> Draft202012Validator | None:
    group_version = _GROUP_DOMAIN.sub(r"\1-", api_version)
    filename = f"{_schema_dir(version)}/{kind.lower()}-{group_version}.json"
    try:
        schema = kubernetes_validate.schema_contents(filename, version)
    except FileNotFoundError:
        return None
    return Draft202012Validator(schema, registry=_registry(version))


def check_object(obj: Any, kubernetes_version: str) -> list[tuple[str, str]]:
    """(field path, message) for every way ``obj`` breaks the strict schema."""
    if not isinstance(obj, Mapping):
        return [("", f"must be a mapping (an object), got {type(obj).__name__}")]
    identity = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}
    for key, value in identity.items():
        if not value:
            return [(key, "is required")]
        if not isinstance(value, str):
            return [(key, f"must be a string, got {value!r}")]
    api_version, kind = str(identity["apiVersion"]), str(identity["kind"])
    version = schema_version(kubernetes_version)
    validator = _validator(version, api_version, kind)
    if validator is None:
        return [
            (
                "kind",
                f"no schema for {kind} in {api_version} for Kubernetes {version} "
                "(unknown kind or API version)",
            )
        ]
    return [(format_path(p.path), p.message) for p in describe_all(validator.iter_errors(obj))]


def check_objects(
    objects: Iterable[Any], kubernetes_version: str, source: str = "<rendered>"
) -> list[ManifestProblem]:
    """Problems of a sequence of objects (None entries are empty documents and pass)."""
    problems: list[ManifestProblem] = []
    for index, obj in enumerate(objects):
        if obj is None:
            continue
        problems.extend(
            ManifestProblem(source, index, path, message)
            for path, message in check_object(obj, kubernetes_version)
        )
    return problems


def load_stream(text: str, source: str) -> tuple[list[Any], list[ManifestProblem]]:
    """The documents of a YAML stream, and a problem for a syntax error that ends it early."""
    documents: list[Any] = []
    try:
        for document in yamlload.load_all(text):
            documents.append(document)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        message = f"not valid YAML: {line}{exc.problem}"
        return documents, [ManifestProblem(source, len(documents), "", message)]
    return documents, []


def check_stream(text: str, kubernetes_version: str, source: str) -> list[ManifestProblem]:
    """Problems of the documents in a YAML stream, syntax errors included."""
    schema_version(kubernetes_version)  # refuse an unsupported version before reading
    documents, problems = load_stream(text, source)
    return check_objects(documents, kubernetes_version, source) + problems
