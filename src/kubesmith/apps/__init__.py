"""Application manifests: Jinja templates + layered values -> validated Kubernetes objects.

The Pulumi side (``kubesmith.apps.deploy``) is imported separately, so rendering never loads
the Pulumi SDK.
"""

from __future__ import annotations

from kubesmith.apps.engine import SECRET_PLACEHOLDER, TemplateError
from kubesmith.apps.kubeschema import ManifestProblem, check_objects, check_stream, schema_version
from kubesmith.apps.output import dump_stream, manifest_filename, write_manifests
from kubesmith.apps.render import (
    app_values,
    available,
    environments,
    render_addon,
    render_app,
    templates_dir,
)
from kubesmith.apps.values import ValuesLayer

__all__ = [
    "SECRET_PLACEHOLDER",
    "ManifestProblem",
    "TemplateError",
    "ValuesLayer",
    "app_values",
    "available",
    "check_objects",
    "check_stream",
    "dump_stream",
    "environments",
    "manifest_filename",
    "render_addon",
    "render_app",
    "schema_version",
    "templates_dir",
    "write_manifests",
]
