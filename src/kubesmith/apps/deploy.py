"""Deploy a stack's apps with pulumi-kubernetes, one Pulumi resource per Kubernetes object.

``AppsDeployment`` renders every app the stack lists (``kubesmith:cluster.apps``) for its
environment, checks the objects against the stack's Kubernetes version, builds a Kubernetes
provider from the cluster's kubeconfig, and registers each object as its own resource under
the type pulumi-kubernetes uses for that kind (``kubernetes:apps/v1:Deployment``), so
``pulumi preview`` lists changes object by object::

    AppsDeployment "apps"
    ├── pulumi:providers:kubernetes "apps-kubernetes"
    └── App "hello"                                   (one per app)
        ├── kubernetes:core/v1:Service "default/hello"
        └── kubernetes:apps/v1:Deployment "default/hello"

Secret values never pass through templates or values files: Secrets are rendered with
placeholders and their ``stringData`` is replaced by Pulumi secrets taken from
``AppsDeploymentArgs.secrets`` (the stack's ``kubesmith:appSecrets`` config secret,
``{app: {NAME: value}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from kubesmith.apps.render import render_stack_apps
from kubesmith.errors import ConfigError, KubesmithError
from kubesmith.spec import ClusterSpec

#: The stack config secret holding app secret values: {app: {NAME: value}}.
SECRETS_CONFIG_KEY = "kubesmith:appSecrets"
#: Kinds whose pods read ConfigMaps, Secrets and ServiceAccounts; created after them.
_WORKLOADS = frozenset({"Deployment", "DaemonSet", "StatefulSet"})
_WORKLOAD_INPUTS = frozenset({"ConfigMap", "Secret", "ServiceAccount"})


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


@dataclass(frozen=True)
class AppsDeploymentArgs:
    spec: ClusterSpec
    #: The Pulumi stack: names the Pulumi.<stack>.yaml that problems point at.
    stack: str
    #: The cluster's admin kubeconfig (marked secret here whatever the caller passed).
    kubeconfig: pulumi.Input[str]
    #: The values files used: values-<env>.yaml. Defaults to the stack name.
    env: str | None = None
    #: Secret values by app and name, e.g. the stack's kubesmith:appSecrets config secret.
    secrets: pulumi.Input[Mapping[str, Mapping[str, str]]] | None = None
    #: The templates directory (default: templates/ of the project).
    templates: Path | None = None


def secrets_from_config() -> pulumi.Output[Any] | None:
    """The stack's ``kubesmith:appSecrets`` config secret ({app: {NAME: value}}), if set."""
    namespace, key = SECRETS_CONFIG_KEY.split(":")
    return pulumi.Config(namespace).get_secret_object(key)


def _secret_values(
    secrets: pulumi.Input[Mapping[str, Mapping[str, str]]], app: str, names: list[str]
) -> pulumi.Output[dict[str, str]]:
    def pick(all_secrets: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
        given = (all_secrets or {}).get(app) or {}
        missing = [name for name in names if name not in given]
        if missing:
            raise KubesmithError(
                f"{SECRETS_CONFIG_KEY}.{app}: no value for {', '.join(missing)} "
                f"(pulumi config set --secret --path '{SECRETS_CONFIG_KEY}.{app}.{missing[0]}')"
            )
        return {name: given[name] for name in names}

    return pulumi.Output.secret(pulumi.Output.from_input(secrets).apply(pick))


class App(pulumi.ComponentResource):
    """The objects of one app: groups them in ``pulumi preview``."""

    def __init__(
        self,
        name: str,
        objects: list[dict[str, Any]],
        provider: k8s.Provider,
        secrets: pulumi.Input[Mapping[str, Mapping[str, str]]] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubesmith:apps:App", name, None, opts)
        self.objects: dict[str, KubernetesObject] = {}
        inputs: list[pulumi.Resource] = []
        for obj in objects:
            manifest: dict[str, Any] = dict(obj)
            options = pulumi.ResourceOptions(parent=self, provider=provider)
            if obj["kind"] == "Secret":
                manifest = self._secret_manifest(name, obj, secrets)
                options = pulumi.ResourceOptions.merge(
                    options,
                    pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"]),
                )
            if obj["kind"] in _WORKLOADS and inputs:
                options = pulumi.ResourceOptions.merge(
                    options, pulumi.ResourceOptions(depends_on=list(inputs))
                )
            resource = KubernetesObject(resource_name(obj), manifest, options)
            self.objects[f"{obj['kind']}/{resource_name(obj)}"] = resource
            if obj["kind"] in _WORKLOAD_INPUTS:
                inputs.append(resource)
        self.register_outputs({"objects": sorted(self.objects)})

    @staticmethod
    def _secret_manifest(
        app: str,
        obj: Mapping[str, Any],
        secrets: pulumi.Input[Mapping[str, Mapping[str, str]]] | None,
    ) -> dict[str, Any]:
        manifest: dict[str, Any] = dict(obj)
        if "data" in manifest:
            manifest["data"] = pulumi.Output.secret(manifest["data"])
        names = sorted(manifest.get("stringData") or {})
        if names:
            if secrets is None:
                raise ConfigError(
                    [
                        f"{SECRETS_CONFIG_KEY}: app {app} needs secret values for "
                        f"{', '.join(names)}, and none were given"
                    ]
                )
            manifest["stringData"] = _secret_values(secrets, app, names)
        return manifest


class AppsDeployment(pulumi.ComponentResource):
    """Every app of the stack on the cluster the kubeconfig points at."""

    def __init__(
        self, name: str, args: AppsDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # Render and check first: a values or schema problem stops before any resource exists.
        rendered = render_stack_apps(args.spec, args.stack, args.env, templates=args.templates)
        super().__init__("kubesmith:apps:AppsDeployment", name, None, opts)
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
                args.secrets,
                pulumi.ResourceOptions(parent=self),
            )
            for app, objects in rendered.items()
        }
        self.register_outputs({"apps": sorted(self.apps)})
