"""AppsDeployment under Pulumi mocks: one resource per Kubernetes object, each behind the
provider built from the kubeconfig, Secrets' values as Pulumi secrets.

The Pulumi engine and the Kubernetes provider plugin cannot run here; these tests check what
the component asks the engine for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from kubesmith.apps import render_app
from kubesmith.apps.deploy import (
    AppsDeployment,
    AppsDeploymentArgs,
    KubernetesObject,
    resource_name,
    secrets_from_config,
    type_token,
)
from kubesmith.errors import ConfigError
from kubesmith.spec import parse_cluster
from tests.conftest import REPO
from tests.pulumi_mocks import (
    KubesmithMocks,
    ProgramFailed,
    RecordedResource,
    run_program,
    stack_config,
)

TEMPLATES = REPO / "templates"
PROVIDER = "pulumi:providers:kubernetes"
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n# a mock kubeconfig\n"
#: How Pulumi marks a secret value on the wire (pulumi.runtime.rpc._special_secret_sig).
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


def apps_program(env: str | None = None) -> Callable[[], None]:
    """What the integrator's program does once the kubeconfig output exists."""

    def program() -> None:
        spec = parse_cluster(pulumi.Config("kubesmith").require_object("cluster"))
        AppsDeployment(
            "apps",
            AppsDeploymentArgs(
                spec=spec,
                stack=pulumi.get_stack(),
                env=env,
                kubeconfig=pulumi.Output.from_input(KUBECONFIG),
                secrets=secrets_from_config(),
                templates=TEMPLATES,
            ),
        )

    return program


def prod_config(values: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    config = copy.deepcopy(stack_config("prod"))
    if values is not None:
        config["kubesmith:cluster"]["apps"] = [{"name": "hello", "values": values}]
    config.update(extra)
    return config


def unwrap_secret(value: Any) -> Any:
    assert isinstance(value, dict), f"not a secret: {value!r}"
    assert value.get(SIG_KEY) == SECRET_SIG, f"not a secret: {value!r}"
    return value["value"]


def as_ints(value: Any) -> Any:
    """The wire format carries numbers as doubles: 3 arrives as 3.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_ints(v) for v in value]
    return value


def objects_of(resources: list[RecordedResource]) -> list[RecordedResource]:
    return [r for r in resources if r.custom and r.type != PROVIDER]


def test_one_resource_per_object_of_every_app_with_the_manifest_as_inputs() -> None:
    run = run_program("prod", program=apps_program())
    stack_values = prod_config()["kubesmith:cluster"]["apps"][0].get("values", {})
    expected = render_app("hello", "prod", stack_values, templates=TEMPLATES)

    recorded = {(r.type, r.name): r for r in objects_of(run.resources)}
    assert len(recorded) == len(objects_of(run.resources))
    assert set(recorded) == {
        (type_token(o["apiVersion"], o["kind"]), resource_name(o)) for o in expected
    }
    for obj in expected:
        resource = recorded[(type_token(obj["apiVersion"], obj["kind"]), resource_name(obj))]
        assert as_ints(resource.inputs) == obj
    deployment = recorded[("kubernetes:apps/v1:Deployment", "hello/hello")]
    assert as_ints(deployment.inputs["spec"]["replicas"]) == 3


def test_every_object_goes_through_the_provider_built_from_the_kubeconfig() -> None:
    run = run_program("prod", program=apps_program())
    (provider,) = run.of_type(PROVIDER)
    assert unwrap_secret(provider.inputs["kubeconfig"]) == KUBECONFIG
    assert provider.parent_type == "kubesmith:apps:AppsDeployment"
    objects = objects_of(run.resources)
    assert objects
    for obj in objects:
        assert obj.provider is not None
        urn, provider_id = obj.provider.rsplit("::", 1)
        assert provider_id == provider.id
        assert urn.endswith(f"{PROVIDER}::{provider.name}")


def test_objects_are_grouped_per_app_under_the_component() -> None:
    run = run_program("prod", program=apps_program())
    (app,) = run.of_type("kubesmith:apps:App")
    assert app.name == "hello"
    assert app.parent_type == "kubesmith:apps:AppsDeployment"
    assert {r.parent_type for r in objects_of(run.resources)} == {"kubesmith:apps:App"}


def depends_on(resource: RecordedResource) -> set[str]:
    """Names of the resources ``resource`` was registered to wait for (URNs end in the name)."""
    return {urn.rsplit("::", 1)[-1] for urn in resource.dependencies}


def test_the_namespace_comes_first_and_everything_in_it_waits_for_it() -> None:
    secrets = {"kubesmith:appSecrets": {"hello": {"API_TOKEN": "x"}}}
    run = run_program("prod", prod_config({"secretEnv": ["API_TOKEN"]}, **secrets),
                      program=apps_program())  # fmt: skip
    objects = objects_of(run.resources)
    namespace = objects[0]  # registered first
    assert (namespace.type, namespace.name) == ("kubernetes:core/v1:Namespace", "hello")
    labels = namespace.inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not namespace.dependencies
    for other in objects[1:]:
        assert other.name.startswith("hello/"), other.name
        assert "hello" in depends_on(other), other.name
    # The Deployment also waits for what its pods read: the script and the Secret.
    (deployment,) = [r for r in objects if r.type == "kubernetes:apps/v1:Deployment"]
    assert depends_on(deployment) == {"hello", "hello/hello-files", "hello/hello-secrets"}


def test_secret_values_come_from_the_stack_config_secret_and_stay_secret() -> None:
    config = prod_config(
        {"secretEnv": ["API_TOKEN"]},
        **{"kubesmith:appSecrets": {"hello": {"API_TOKEN": "t0p-s3cret"}}},
    )
    run = run_program("prod", config, program=apps_program())
    (secret,) = [r for r in objects_of(run.resources) if r.type == "kubernetes:core/v1:Secret"]
    assert secret.name == "hello/hello-secrets"
    assert unwrap_secret(secret.inputs["stringData"]) == {"API_TOKEN": "t0p-s3cret"}
    for other in objects_of(run.resources):
        if other is not secret:
            assert "t0p-s3cret" not in repr(other.inputs)


@pytest.mark.parametrize(
    ("secrets", "problems"),
    [
        (
            None,
            [
                "kubesmith:appSecrets.hello.API_TOKEN: needed by app hello and not set "
                "(pulumi config set --secret --path 'kubesmith:appSecrets.hello.API_TOKEN' VALUE)"
            ],
        ),
        (
            {"hello": {"API_TOKNE": "x"}, "helo": {"A": "y"}},
            [
                "kubesmith:appSecrets.hello.API_TOKEN: needed by app hello and not set "
                "(pulumi config set --secret --path 'kubesmith:appSecrets.hello.API_TOKEN' VALUE)",
                "kubesmith:appSecrets.hello.API_TOKNE: not used by app hello "
                "(its secretEnv: API_TOKEN)",
                "kubesmith:appSecrets.helo: the stack deploys no app 'helo'",
            ],
        ),
        (
            {"hello": {"API_TOKEN": 42}},
            [
                "kubesmith:appSecrets.hello: must be an object {app: {NAME: value}} of strings",
            ],
        ),
    ],
    ids=["none-given", "misspelt", "not-a-string"],
)
def test_secret_problems_stop_the_program_before_any_kubernetes_object(
    secrets: dict[str, Any] | None, problems: list[str]
) -> None:
    extra = {} if secrets is None else {"kubesmith:appSecrets": secrets}
    mocks = KubesmithMocks()
    with pytest.raises(ProgramFailed) as info:
        run_program(
            "prod", prod_config({"secretEnv": ["API_TOKEN"]}, **extra), program=apps_program(),
            mocks=mocks,
        )  # fmt: skip
    assert isinstance(info.value.error, ConfigError)
    assert info.value.error.lines() == problems
    assert not [r for r in mocks.resources if r.type.startswith("kubernetes:")]
    # Problems name keys, never the values.
    assert "42" not in " ".join(problems)


def test_bad_values_stop_the_program_before_any_resource() -> None:
    with pytest.raises(ProgramFailed) as info:
        run_program("prod", prod_config({"replicas": -1}), program=apps_program())
    error = info.value.error
    assert isinstance(error, ConfigError)
    assert error.lines() == [
        "Pulumi.prod.yaml: kubesmith:cluster.apps[0].values.replicas: "
        "-1 is less than the minimum of 0"
    ]


@pytest.mark.parametrize("agent", ["none", "kube-router"])
def test_up_warns_of_a_policy_nothing_enforces_and_deploys_it_anyway(agent: str) -> None:
    config = prod_config({"networkPolicy": {"fromNamespaces": ["ingress"]}})
    config["kubesmith:cluster"]["cni"] = {"networkPolicy": agent}
    run = run_program("prod", config, program=apps_program())
    warnings = [m for m in run.log if "nothing on this cluster enforces it" in m]
    assert len(warnings) == (1 if agent == "none" else 0)
    if warnings:
        assert "Pulumi.prod.yaml: app hello enables NetworkPolicy hello" in warnings[0]
    # A warning, not an error: the policy is deployed (and enforced once an agent runs).
    kinds = [r.type.rsplit(":", 1)[-1] for r in objects_of(run.resources)]
    assert "NetworkPolicy" in kinds


def test_the_environment_defaults_to_the_stack_and_can_be_chosen() -> None:
    chosen = run_program("prod", prod_config({}), program=apps_program(env="dev"))
    service = next(r for r in objects_of(chosen.resources) if r.type.endswith(":Service"))
    assert service.inputs["spec"]["type"] == "NodePort"  # values-dev.yaml, not values-prod.yaml
    default = run_program("prod", prod_config({}), program=apps_program())
    service = next(r for r in objects_of(default.resources) if r.type.endswith(":Service"))
    assert service.inputs["spec"]["type"] == "ClusterIP"


SPEC: dict[str, Any] = {"spec": {}}
#: Typed class, apiVersion, and the arguments the class insists on (their values do not matter).
TYPED: dict[str, tuple[Callable[..., pulumi.CustomResource], str, dict[str, Any]]] = {
    "Deployment": (k8s.apps.v1.Deployment, "apps/v1", SPEC),
    "DaemonSet": (k8s.apps.v1.DaemonSet, "apps/v1", SPEC),
    "Service": (k8s.core.v1.Service, "v1", {}),
    "ConfigMap": (k8s.core.v1.ConfigMap, "v1", {}),
    "Secret": (k8s.core.v1.Secret, "v1", {}),
    "ServiceAccount": (k8s.core.v1.ServiceAccount, "v1", {}),
    "Ingress": (k8s.networking.v1.Ingress, "networking.k8s.io/v1", {}),
    "NetworkPolicy": (k8s.networking.v1.NetworkPolicy, "networking.k8s.io/v1", {}),
    "HorizontalPodAutoscaler": (k8s.autoscaling.v2.HorizontalPodAutoscaler, "autoscaling/v2", SPEC),
    "PodDisruptionBudget": (k8s.policy.v1.PodDisruptionBudget, "policy/v1", {}),
    "ClusterRole": (k8s.rbac.v1.ClusterRole, "rbac.authorization.k8s.io/v1", {}),
    "ClusterRoleBinding": (
        k8s.rbac.v1.ClusterRoleBinding,
        "rbac.authorization.k8s.io/v1",
        {"role_ref": {}},
    ),
}


def test_generic_objects_register_the_type_of_pulumi_kubernetes_typed_classes() -> None:
    def program() -> None:
        for kind, (typed, api_version, required) in TYPED.items():
            typed(f"typed-{kind}", **required)
            manifest = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
            KubernetesObject(f"generic-{kind}", manifest)

    run = run_program("prod", program=program)
    registered = {r.name: r.type for r in run.resources}
    for kind in TYPED:
        assert registered[f"generic-{kind}"] == registered[f"typed-{kind}"], kind
