"""Apps and add-ons as the rest of kubesmith sees them: a name in, Kubernetes objects out.

Layout under the project's ``templates/`` directory::

    templates/*.yaml.j2                 the template library, one object per file
    templates/_*.j2                     partials (macros) the library imports
    templates/_definitions.schema.json  value shapes app schemas refer to
    templates/apps/<app>/               values.yaml, values-<env>.yaml, values.schema.json,
                                        and optionally the app's own *.yaml.j2 templates
    templates/apps/<app>/files/         optional: files the app mounts (values.files), as the
                                        ConfigMap <app>-files
    templates/addons/<addon>/           values.yaml, values.schema.json and the add-on's
                                        templates (add-ons do not use the library)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubesmith import versions
from kubesmith.apps.engine import Bundle, render_bundle, templates_in
from kubesmith.apps.kubeschema import check_objects
from kubesmith.apps.values import (
    ValuesLayer,
    display_path,
    load_values_file,
    validated_values,
)
from kubesmith.errors import ConfigError, KubesmithError, UserError
from kubesmith.resources import templates_dir as _shipped_templates
from kubesmith.spec import CONFIG_KEY, ClusterSpec
from kubesmith.state.paths import find_project_root

APPS = "apps"
ADDONS = "addons"
#: Namespace of add-on objects (cluster components, as kubeadm places them), unless the
#: add-on's values name its own (flannel: kube-flannel).
ADDON_NAMESPACE = "kube-system"
#: What a ConfigMap key may be, and so the name of a file under templates/apps/<app>/files/.
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def templates_dir(root: Path | None = None) -> Path:
    """templates/ of ``root``, else of the kubesmith project being worked in (its own apps),
    else the templates kubesmith ships (kubesmith.resources), e.g. from an installed wheel."""
    if root is not None:
        return root / "templates"
    project = find_project_root()
    own = project / "templates" if project is not None else None
    return own if own is not None and own.is_dir() else _shipped_templates()


def _bundle_dir(templates: Path, family: str, name: str) -> Path:
    directory = templates / family / name
    if not (directory / "values.yaml").is_file():
        known = ", ".join(available(family, templates)) or "none"
        raise UserError(f"no {family[:-1]} {name!r} in {templates / family} (known: {known})")
    return directory


def available(family: str, templates: Path | None = None) -> list[str]:
    """Names of the apps (family "apps") or add-ons ("addons") under ``templates``."""
    base = (templates or templates_dir()) / family
    return sorted(p.parent.name for p in base.glob("*/values.yaml"))


def environments(app: str, templates: Path | None = None) -> list[str]:
    """The environments an app has a ``values-<env>.yaml`` for."""
    directory = _bundle_dir(templates or templates_dir(), APPS, app)
    return sorted(p.name[len("values-") : -len(".yaml")] for p in directory.glob("values-*.yaml"))


def _file_layer(path: Path, templates: Path) -> ValuesLayer:
    return load_values_file(path, display_path(path, templates.parent))


def app_values(
    app: str,
    env: str,
    overrides: ValuesLayer | Mapping[str, Any] | None = None,
    *,
    templates: Path | None = None,
) -> dict[str, Any]:
    """The app's values for ``env``: values.yaml < values-<env>.yaml < overrides, checked."""
    templates = templates or templates_dir()
    directory = _bundle_dir(templates, APPS, app)
    env_file = directory / f"values-{env}.yaml"
    if not env_file.is_file():
        known = ", ".join(environments(app, templates)) or "none"
        raise UserError(
            f"{display_path(directory, templates.parent)}: no values-{env}.yaml "
            f"(environments of {app}: {known})"
        )
    defaults = _file_layer(directory / "values.yaml", templates)
    layers = [defaults, _file_layer(env_file, templates)]
    pinned = versions.app_image(app)
    if pinned is not None:
        layers.insert(0, ValuesLayer(f"versions.yaml (images.apps.{app})", {"image": pinned}))
    if overrides is not None:
        layers.append(
            overrides
            if isinstance(overrides, ValuesLayer)
            else ValuesLayer("overrides", dict(overrides))
        )
    return validated_values(
        layers, directory / "values.schema.json", templates, required_from=defaults
    )


def app_files(app: str, values: Mapping[str, Any], templates: Path) -> dict[str, str]:
    """The text of every file in templates/apps/<app>/files/ when the values mount them
    (``files``), by file name; what the ConfigMap <app>-files holds."""
    if "files" not in values:
        return {}
    directory = templates / APPS / app / "files"
    where = display_path(directory, templates.parent)
    paths = sorted(p for p in directory.glob("*") if p.is_file())
    if not paths:
        raise UserError(f"{where}: no files, but the values of {app} mount them (files)")
    files = {}
    for path in paths:
        if not _CONFIGMAP_KEY.fullmatch(path.name):
            raise UserError(
                f"{where}/{path.name}: not a ConfigMap key (letters, digits, '-', '_', '.')"
            )
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}/{path.name}: not UTF-8 text") from None
    return files


def render_app(
    app: str,
    env: str,
    overrides: ValuesLayer | Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    *,
    templates: Path | None = None,
) -> list[dict[str, Any]]:
    """Objects of ``app`` in ``env``, in apply order.

    ``overrides`` are the highest-precedence values (the stack's ``apps[].values``); pass a
    ValuesLayer to have problems name where they came from. ``secrets`` maps secret keys to
    their values; without it every Secret value is SECRET_PLACEHOLDER.
    """
    templates = templates or templates_dir()
    values = app_values(app, env, overrides, templates=templates)
    directory = templates / APPS / app
    bundle = Bundle(
        name=app,
        env=env,
        templates=templates_in(templates, templates) + templates_in(templates, directory),
        namespace=str(values.get("namespace", app)),
        instance=f"{app}-{env}",
        part_of=str(values.get("partOf", app)),
    )
    return render_bundle(bundle, values, templates, secrets, app_files(app, values, templates))


def stack_values(spec: ClusterSpec, stack: str, app: str) -> ValuesLayer:
    """The values Pulumi.<stack>.yaml sets for ``app`` (``kubesmith:cluster.apps[].values``)."""
    for index, ref in enumerate(spec.apps):
        if ref.name == app:
            key = f"{CONFIG_KEY}.apps[{index}].values"
            return ValuesLayer(f"Pulumi.{stack}.yaml", ref.values, key=key)
    listed = ", ".join(ref.name for ref in spec.apps) or "none"
    raise UserError(
        f"Pulumi.{stack}.yaml: {CONFIG_KEY}.apps does not list {app!r} (apps: {listed})"
    )


def render_stack_apps(
    spec: ClusterSpec, stack: str, env: str | None = None, *, templates: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every app the stack lists, rendered for ``env`` (default: the stack name) and checked
    against the stack's Kubernetes version; problems of all apps are reported together.

    Secret values are SECRET_PLACEHOLDER: the caller supplies the real ones (see deploy.py).
    """
    rendered: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    owners: dict[tuple[str, str, str], str] = {}
    for ref in spec.apps:
        layer = stack_values(spec, stack, ref.name)
        try:
            objects = render_app(ref.name, env or stack, layer, templates=templates)
        except KubesmithError as exc:
            problems.extend(exc.lines())
            continue
        checked = check_objects(objects, spec.kubernetes_version, f"{ref.name}/{env or stack}")
        problems.extend(str(problem) for problem in checked)
        for obj in objects:
            metadata = obj["metadata"]
            identity = (obj["kind"], metadata.get("namespace", ""), metadata["name"])
            owner = owners.setdefault(identity, ref.name)
            if owner != ref.name:
                problems.append(
                    f"Pulumi.{stack}.yaml: apps {owner} and {ref.name} both render "
                    f"{identity[0]} {'/'.join(filter(None, identity[1:]))}"
                )
        rendered[ref.name] = objects
    if problems:
        raise ConfigError(problems)
    return rendered


def render_addon(
    addon: str, values: Mapping[str, Any], *, templates: Path | None = None
) -> list[dict[str, Any]]:
    """Objects of the cluster add-on ``addon`` (e.g. "coredns"): values.yaml < ``values``."""
    templates = templates or templates_dir()
    directory = _bundle_dir(templates, ADDONS, addon)
    given = ValuesLayer(f"{addon} add-on values", dict(values))
    layers = [_file_layer(directory / "values.yaml", templates), given]
    # What values.yaml leaves out (the cluster DNS address, the pinned image) is the caller's.
    merged = validated_values(
        layers, directory / "values.schema.json", templates, required_from=given
    )
    bundle = Bundle(
        name=addon,
        env="cluster",
        templates=templates_in(templates, directory),
        namespace=str(merged.get("namespace", ADDON_NAMESPACE)),
        instance=addon,
        part_of=str(merged.get("partOf", "kubesmith")),
    )
    return render_bundle(bundle, merged, templates)
