"""Deploy a stack's apps with pulumi-kubernetes, one Pulumi resource per Kubernetes object.

``AppsDeployment`` renders every app the stack lists (``kubesmith:cluster.apps``) for its
environment, checks the objects against the stack's Kubernetes version, builds a Kubernetes
provider from the cluster's kubeconfig, and registers each object as its own resource under
the type pulumi-kubernetes uses for that kind (``kubernetes:apps/v1:Deployment``), so
``pulumi preview`` lists changes object by object::

    AppsDeployment "apps"
    ├── pulumi:providers:kubernetes "apps-kubernetes"
    └── App "hello"                                   (one per app)
        ├── kubernetes:core/v1:Namespace "hello"      (first: the rest depend on it)
        ├── kubernetes:core/v1:ConfigMap "hello/hello-files"
        ├── kubernetes:core/v1:Service "hello/hello"
        └── kubernetes:apps/v1:Deployment "hello/hello"

Secret values never pass through templates or values files: Secrets are rendered with
placeholders and their ``stringData`` is replaced by Pulumi secrets taken from
``AppsDeploymentArgs.secrets`` (``secrets_from_config()``: the stack's
``kubesmith:appSecrets`` config secret, ``{app: {NAME: value}}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from kubesmith.apps.policy import unenforced_policies
from kubesmith.apps.render import render_stack_apps
from kubesmith.errors import ConfigError
from kubesmith.spec import ClusterSpec

#: The stack config secret holding app secret values: {app: {NAME: value}}.
SECRETS_CONFIG_KEY = "kubesmith:appSecrets"
#: Kinds whose pods read ConfigMaps, Secrets and ServiceAccounts; created after them.
_WORKLOADS = frozenset({"Deployment", "DaemonSet", "StatefulSet"})
_WORKLOAD_INPUTS = frozenset({"ConfigMap", "Secret", "ServiceAccount"})
#: What the typed pulumi-kubernetes Secret marks secret too: its state never shows values.
_SECRET_OUTPUTS = pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])


def type_token(api_version: str, kind: str) -> str:
    """The Pulumi type of a kind: "v1" Service -> ``kubernetes:core/v1:Service``."""
    group_version = api_version if "/" in api_version else f"core/{api_version}"
    return f"kubernetes:{group_version}:{kind}"


def resource_name(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


class KubernetesObject(pulumi.CustomResource):
    """Any Kubernetes object, registered under the type pulumi-kubernetes gives its kind.

    The provider receives the manifest's fields as they are (apiVersion, kind, metadata, spec,
    data, ...), exactly as the typed classes send them.
    """

    def __init__(
        self,
        name: str,
        manifest: Mapping[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            type_token(manifest["apiVersion"], manifest["kind"]), name, dict(manifest), opts
        )


#: Secret values by app and name. Names are plain (they are checked before anything is
#: created); each value is wrapped in a Pulumi secret before it reaches a resource.
AppSecrets = Mapping[str, Mapping[str, pulumi.Input[str]]]


@dataclass(frozen=True)
class AppsDeploymentArgs:
    spec: ClusterSpec
    #: The Pulumi stack: names the Pulumi.<stack>.yaml that problems point at.
    stack: str
    #: The cluster's admin kubeconfig (marked secret here whatever the caller passed).
    kubeconfig: pulumi.Input[str]
    #: The values files used: values-<env>.yaml. Defaults to the stack name.
    env: str | None = None
    #: Secret values, e.g. ``secrets_from_config()`` (the stack's kubesmith:appSecrets).
    secrets: AppSecrets | None = None
    #: The templates directory (default: templates/ of the project).
    templates: Path | None = None


def secrets_from_config() -> dict[str, dict[str, pulumi.Output[str]]]:
    """The stack's ``kubesmith:appSecrets`` ({app: {NAME: value}}), every value a secret.

    Set with ``pulumi config set --secret --path 'kubesmith:appSecrets.hello.API_TOKEN' ...``.
    The names are read as plain data so missing ones are reported before any resource exists;
    problems name keys, never values.
    """
    raw = pulumi.runtime.get_config(SECRETS_CONFIG_KEY)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    shape = f"{SECRETS_CONFIG_KEY}: must be an object {{app: {{NAME: value}}}} of strings"
    if not isinstance(data, dict):
        raise ConfigError([shape])
    problems = [
        f"{SECRETS_CONFIG_KEY}.{app}: {shape.split(': ', 1)[1]}"
        for app, names in data.items()
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values())
    ]
    if problems:
        raise ConfigError(problems)
    return {
        app: {name: pulumi.Output.secret(value) for name, value in names.items()}
        for app, names in data.items()
    }


def _secret_names(objects: list[dict[str, Any]]) -> set[str]:
    return {
        name for obj in objects if obj["kind"] == "Secret" for name in (obj.get("stringData") or {})
    }


def _secret_problems(
    rendered: Mapping[str, list[dict[str, Any]]], secrets: AppSecrets
) -> list[str]:
    """Every secret a template needs and is not given, and every one given for nothing."""
    problems: list[str] = []
    for app, objects in rendered.items():
        given = set(secrets.get(app) or {})
        problems.extend(
            f"{SECRETS_CONFIG_KEY}.{app}.{name}: needed by app {app} and not set (pulumi config "
            f"set --secret --path '{SECRETS_CONFIG_KEY}.{app}.{name}' VALUE)"
            for name in sorted(_secret_names(objects) - given)
        )
        problems.extend(
            f"{SECRETS_CONFIG_KEY}.{app}.{name}: not used by app {app} (its secretEnv: "
            f"{', '.join(sorted(_secret_names(objects))) or 'none'})"
            for name in sorted(given - _secret_names(objects))
        )
    problems.extend(
        f"{SECRETS_CONFIG_KEY}.{app}: the stack deploys no app {app!r}"
        for app in sorted(set(secrets) - set(rendered))
    )
    return problems


class App(pulumi.ComponentResource):
    """The objects of one app: groups them in ``pulumi preview``."""

    def __init__(
        self,
        name: str,
        objects: list[dict[str, Any]],
        provider: k8s.Provider,
        secrets: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubesmith:apps:App", name, None, opts)
        self.objects: dict[str, KubernetesObject] = {}
        inputs: list[pulumi.Resource] = []
        # Objects come in apply order, so the app's Namespace is registered before the
        # objects in it; they wait for it, as workloads wait for what their pods read.
        namespaces: dict[str, pulumi.Resource] = {}
        for obj in objects:
            manifest: dict[str, Any] = dict(obj)
            options = pulumi.ResourceOptions(parent=self, provider=provider)
            if obj["kind"] == "Secret":
                manifest = _with_secret_values(obj, secrets)
                options = pulumi.ResourceOptions.merge(options, _SECRET_OUTPUTS)
            depends_on = list(inputs) if obj["kind"] in _WORKLOADS else []
            namespace = obj["metadata"].get("namespace")
            if namespace in namespaces:
                depends_on.insert(0, namespaces[namespace])
            if depends_on:
                options = pulumi.ResourceOptions.merge(
                    options, pulumi.ResourceOptions(depends_on=depends_on)
                )
            resource = KubernetesObject(resource_name(obj), manifest, options)
            self.objects[f"{obj['kind']}/{resource_name(obj)}"] = resource
            if obj["kind"] in _WORKLOAD_INPUTS:
                inputs.append(resource)
            if obj["kind"] == "Namespace":
                namespaces[obj["metadata"]["name"]] = resource
        self.register_outputs({"objects": sorted(self.objects)})


def _with_secret_values(
    obj: Mapping[str, Any], secrets: Mapping[str, pulumi.Input[str]]
) -> dict[str, Any]:
    """The Secret with its placeholders replaced by the given values, as Pulumi secrets."""
    manifest: dict[str, Any] = dict(obj)
    if "data" in manifest:
        manifest["data"] = pulumi.Output.secret(manifest["data"])
    if manifest.get("stringData"):
        manifest["stringData"] = {
            name: pulumi.Output.secret(secrets[name]) for name in manifest["stringData"]
        }
    return manifest


class AppsDeployment(pulumi.ComponentResource):
    """Every app of the stack on the cluster the kubeconfig points at."""

    def __init__(
        self, name: str, args: AppsDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # Render and check first: a values, schema or secret problem stops before any resource.
        rendered = render_stack_apps(args.spec, args.stack, args.env, templates=args.templates)
        secrets = args.secrets or {}
        problems = _secret_problems(rendered, secrets)
        if problems:
            raise ConfigError(problems)
        super().__init__("kubesmith:apps:AppsDeployment", name, None, opts)
        for warning in unenforced_policies(args.spec, args.stack, rendered):
            pulumi.log.warn(warning, resource=self)
        self.provider = k8s.Provider(
            f"{name}-kubernetes",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.apps = {
            app: App(
                app,
                objects,
                self.provider,
                secrets.get(app) or {},
                pulumi.ResourceOptions(parent=self),
            )
            for app, objects in rendered.items()
        }
        self.register_outputs({"apps": sorted(self.apps)})
