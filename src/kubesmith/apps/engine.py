"""Render a bundle (an app or a cluster add-on) of Jinja templates into Kubernetes objects.

Templates produce data, not text for the cluster: each ``*.yaml.j2`` file renders to YAML for
at most one object, which is parsed with ``yaml.safe_load``; the engine then adds what every
object must carry (the ``app.kubernetes.io/*`` labels, the namespace), orders the objects for
applying, and ``kubesmith.apps.output`` serialises them. A template that renders only
whitespace and comments (its guard is false) yields no object.

Templates see four names:
  ``values``   the merged, schema-checked values;
  ``app``      name, env, instance, namespace and selectorLabels of this bundle;
  ``secrets``  secret values by key (redacted placeholders unless real values were given);
  ``files``    the text of the bundle's files by name (an app's files/ directory), or empty.

Jinja runs with StrictUndefined: a template that reads a value nobody set fails with its file
and line instead of rendering an empty string.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from kubesmith.apps import yamlload
from kubesmith.apps.formats import version_label
from kubesmith.apps.values import display_path
from kubesmith.errors import UserError

TEMPLATE_SUFFIX = ".yaml.j2"
MANAGED_BY = "kubesmith"
#: What a Secret holds in place of a value when real values were not given.
SECRET_PLACEHOLDER = "<redacted>"

#: Apply order (after Helm's install order): what others refer to comes first.
_APPLY_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Ingress",
)
_CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
)
#: Kinds whose pods are described by ``spec.template``.
_POD_TEMPLATE_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"})


class TemplateError(UserError):
    """A template that does not render to one valid object; names the file and line."""


@dataclass(frozen=True)
class Bundle:
    """What one render needs: where the templates are and who the objects belong to."""

    name: str
    #: The environment (local, dev, prod) for apps; "cluster" for add-ons.
    env: str
    #: Template names relative to the templates directory, in a stable order.
    templates: tuple[str, ...]
    namespace: str
    #: ``app.kubernetes.io/instance``: distinguishes this bundle's objects from others'.
    instance: str
    part_of: str

    @property
    def selector_labels(self) -> dict[str, str]:
        """The labels selectors match on: stable across versions, so selectors never change."""
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/instance": self.instance}


class SecretValues(Mapping[str, str]):
    """The ``secrets`` templates read; records which keys were read, never prints values."""

    def __init__(self, bundle: str, values: Mapping[str, str] | None) -> None:
        self._bundle = bundle
        self._values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        if self._values is None:
            return SECRET_PLACEHOLDER
        if key not in self._values:
            # Not a KeyError: Jinja would turn that into an undefined value and lose the key.
            raise UserError(f"{self._bundle}: no value given for secret {key!r}")
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values or ())

    def __len__(self) -> int:
        return len(self._values or ())

    def check_all_used(self) -> None:
        unused = sorted(set(self._values or ()) - self.read)
        if unused:
            raise UserError(
                f"{self._bundle}: secret value(s) given but not used by any template: "
                f"{', '.join(unused)}"
            )


def _tojson(value: Any) -> str:
    """JSON is YAML: a value written with ``tojson`` can never break the document around it."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # a StrictUndefined raises UndefinedError naming the missing value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _checksum(value: Any) -> str:
    """A short, stable digest of a value: pod annotations that roll pods when config changes."""
    return hashlib.sha256(_tojson(value).encode()).hexdigest()[:16]


@cache
def _environment(templates_dir: Path) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML; values reach YAML through the tojson filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["tojson"] = _tojson  # Jinja's own escapes for HTML, not for YAML
    environment.filters["checksum"] = _checksum
    return environment


def _template_line(exc: BaseException, templates_dir: Path) -> str:
    """``templates/x.yaml.j2:12`` for the innermost template frame of a render error."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename.endswith(".j2")  # templates and partials
    ]
    if not frames:
        return display_path(templates_dir, templates_dir.parent)
    frame = frames[-1]
    return f"{display_path(Path(frame.filename), templates_dir.parent)}:{frame.lineno}"


def _render_text(templates_dir: Path, name: str, context: Mapping[str, Any]) -> str:
    environment = _environment(templates_dir)
    try:
        return environment.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        where = display_path(Path(exc.filename or name), templates_dir.parent)
        raise TemplateError(f"{where}:{exc.lineno}: template syntax: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        where = _template_line(exc, templates_dir)
        raise TemplateError(f"{where}: undefined value: {exc.message}") from None
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        where = _template_line(exc, templates_dir)
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None


def _parse_object(text: str, where: str) -> dict[str, Any] | None:
    try:
        documents = [d for d in yamlload.load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" (rendered line {mark.line + 1})" if mark is not None else ""
        raise TemplateError(f"{where}: renders invalid YAML{line}: {exc.problem}") from None
    if not documents:
        return None
    if len(documents) > 1:
        raise TemplateError(f"{where}: renders {len(documents)} objects; one file, one object")
    (document,) = documents
    if not isinstance(document, dict):
        raise TemplateError(f"{where}: renders a {type(document).__name__}, not an object")
    metadata = document.get("metadata")
    for key, value in (
        ("apiVersion", document.get("apiVersion")),
        ("kind", document.get("kind")),
        ("metadata.name", metadata.get("name") if isinstance(metadata, dict) else None),
    ):
        if not isinstance(value, str) or not value:
            raise TemplateError(f"{where}: the rendered object has no {key}")
    return document


def _standard_labels(bundle: Bundle, values: Mapping[str, Any]) -> dict[str, str]:
    labels = {
        **bundle.selector_labels,
        "app.kubernetes.io/component": str(values["component"]),
        "app.kubernetes.io/part-of": bundle.part_of,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    image = values.get("image")
    if isinstance(image, str):
        labels["app.kubernetes.io/version"] = version_label(image)
    return labels


def _label(metadata: dict[str, Any], labels: Mapping[str, str]) -> None:
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}


def _finish(document: dict[str, Any], bundle: Bundle, labels: Mapping[str, str]) -> None:
    """Add what the engine guarantees on every object: the labels and the namespace."""
    metadata = document["metadata"]
    _label(metadata, labels)
    if document["kind"] not in _CLUSTER_SCOPED:
        metadata["namespace"] = bundle.namespace
    if document["kind"] in _POD_TEMPLATE_KINDS:
        template = document.get("spec", {}).get("template")
        if isinstance(template, dict):
            _label(template.setdefault("metadata", {}), labels)


def _apply_rank(document: Mapping[str, Any]) -> tuple[int, str]:
    kind = document["kind"]
    rank = _APPLY_ORDER.index(kind) if kind in _APPLY_ORDER else len(_APPLY_ORDER)
    return rank, document["metadata"]["name"]


def render_bundle(
    bundle: Bundle,
    values: Mapping[str, Any],
    templates_dir: Path,
    secrets: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Render every template of ``bundle``; objects in apply order, labelled, namespaced."""
    secret_values = SecretValues(bundle.name, secrets)
    context = {
        "values": values,
        "secrets": secret_values,
        "files": dict(files or {}),
        "app": {
            "name": bundle.name,
            "env": bundle.env,
            "instance": bundle.instance,
            "namespace": bundle.namespace,
            "selectorLabels": bundle.selector_labels,
        },
    }
    labels = _standard_labels(bundle, values)
    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    sources: dict[tuple[str, str, str], str] = {}
    for name in bundle.templates:
        where = display_path(templates_dir / name, templates_dir.parent)
        document = _parse_object(_render_text(templates_dir, name, context), where)
        if document is None:
            continue
        _finish(document, bundle, labels)
        identity = (
            document["kind"],
            document["metadata"].get("namespace", ""),
            document["metadata"]["name"],
        )
        if identity in objects:
            raise TemplateError(
                f"{where}: renders {identity[0]} {identity[2]!r}, which "
                f"{sources[identity]} renders too"
            )
        objects[identity] = document
        sources[identity] = where
    secret_values.check_all_used()
    return sorted(objects.values(), key=_apply_rank)


def templates_in(templates_dir: Path, directory: Path) -> tuple[str, ...]:
    """Loader names of the renderable templates directly in ``directory`` (``_*`` are partials)."""
    return tuple(
        path.relative_to(templates_dir).as_posix()
        for path in sorted(directory.glob(f"*{TEMPLATE_SUFFIX}"))
        if not path.name.startswith("_")
    )
