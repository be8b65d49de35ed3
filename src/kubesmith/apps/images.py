"""The container images rendered objects run: what a site's registry must hold for an app.

Read from the objects as rendered (every container and init container of every pod spec), so
an image set by an environment's values file or a stack's ``apps[].values`` is the one listed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _pod_specs(obj: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        yield spec
    elif obj.get("kind") == "CronJob":
        yield from _pod_specs({"kind": "Job", "spec": spec.get("jobTemplate", {}).get("spec")})
    elif isinstance(spec.get("template"), Mapping):
        yield spec["template"].get("spec") or {}


def images_of(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every image the objects' pods run, in order of appearance, each once."""
    found = (
        str(container["image"])
        for obj in objects
        for pod in _pod_specs(obj)
        for key in _CONTAINER_LISTS
        for container in pod.get(key) or ()
        if "image" in container
    )
    return list(dict.fromkeys(found))
