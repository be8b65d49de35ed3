"""Bad values: every kind of mistake fails `kubesmith render` with exit code 2 and one line per
problem that names the file (or stack key) and the key path the user wrote."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.apps.formats import parse_image, version_label
from kubesmith.cli import app as cli
from tests.conftest import REPO

runner = CliRunner()
HELLO = "templates/apps/hello"
STACK = "Pulumi.prod.yaml: kubesmith:cluster.apps[0].values"
Mutation = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Mutation:
    def mutate(values: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return mutate


def deleter(path: str) -> Mutation:
    def mutate(values: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = values
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))
    return tmp_path


def edit(project: Path, where: str, mutate: Mutation) -> None:
    """Apply ``mutate`` to a values file of hello, or ("stack") to its stack values."""
    if where == "stack":
        path = project / "Pulumi.prod.yaml"
        document = yaml.safe_load(path.read_text())
        (ref,) = document["config"]["kubesmith:cluster"]["apps"]
        values = copy.deepcopy(ref.get("values", {}))
        mutate(values)
        ref["values"] = values
    else:
        path = project / HELLO / where
        document = yaml.safe_load(path.read_text()) or {}
        mutate(document)
    path.write_text(yaml.safe_dump(document))


def render(env: str, *extra: str) -> Any:
    return runner.invoke(cli, ["render", "hello", "-e", env, *extra])


# (id, file edited, env rendered, mutation, the line's source and key path, words it holds)
BAD_CASES: list[tuple[str, str, str, Mutation, str, str]] = [
    (
        "negative-replicas",
        "values-prod.yaml",
        "prod",
        setter("replicas", -1),
        f"{HELLO}/values-prod.yaml: replicas",
        "-1 is less than the minimum of 0",
    ),
    (
        "replicas-as-word",
        "values-prod.yaml",
        "prod",
        setter("replicas", "three"),
        f"{HELLO}/values-prod.yaml: replicas",
        "must be a whole number, got 'three'",
    ),
    (
        "replicas-as-bool",
        "values.yaml",
        "dev",
        setter("replicas", True),
        f"{HELLO}/values.yaml: replicas",
        "must be a whole number, got True",
    ),
    (
        "missing-mount-path",
        "values.yaml",
        "dev",
        deleter("files.mountPath"),
        f"{HELLO}/values.yaml: files.mountPath",
        "is required",
    ),
    (
        "a-namespace-of-the-cluster",
        "stack",
        "prod",
        setter("namespace", "kube-system"),
        "Pulumi.prod.yaml: kubesmith:cluster.apps[0].values.namespace",
        "is one of the cluster's namespaces; an app gets a namespace of its own",
    ),
    (
        "namespace-not-a-label",
        "values-dev.yaml",
        "dev",
        setter("namespace", "Hello_App"),
        f"{HELLO}/values-dev.yaml: namespace",
        "must be a DNS label",
    ),
    (
        "missing-probe-setting",
        "values.yaml",
        "local",
        deleter("probes.liveness.periodSeconds"),
        f"{HELLO}/values.yaml: probes.liveness.periodSeconds",
        "is required",
    ),
    (
        "unknown-top-level-key",
        "values-prod.yaml",
        "prod",
        setter("replica", 2),
        f"{HELLO}/values-prod.yaml: replica",
        "unknown key (did you mean 'replicas'?)",
    ),
    (
        "unknown-nested-key",
        "values-local.yaml",
        "local",
        setter("service.nodeport", 30080),
        f"{HELLO}/values-local.yaml: service.nodeport",
        "unknown key (did you mean 'nodePort'?)",
    ),
    (
        "container-port-too-high",
        "values.yaml",
        "dev",
        setter("containerPort", 70000),
        f"{HELLO}/values.yaml: containerPort",
        "70000 is greater than the maximum of 65535",
    ),
    (
        "container-port-zero",
        "values.yaml",
        "dev",
        setter("containerPort", 0),
        f"{HELLO}/values.yaml: containerPort",
        "0 is less than the minimum of 1",
    ),
    (
        "node-port-outside-range",
        "values-local.yaml",
        "local",
        setter("service.nodePort", 8080),
        f"{HELLO}/values-local.yaml: service.nodePort",
        "8080 is less than the minimum of 30000",
    ),
    (
        "service-port-as-string",
        "values-dev.yaml",
        "dev",
        setter("service.port", "80"),
        f"{HELLO}/values-dev.yaml: service.port",
        "must be a whole number, got '80'",
    ),
    (
        "uppercase-image",
        "values-prod.yaml",
        "prod",
        setter("image", "UPPER/Case:tag"),
        f"{HELLO}/values-prod.yaml: image",
        "'UPPER/Case:tag' is not an image reference",
    ),
    (
        "image-empty-tag",
        "values.yaml",
        "dev",
        setter("image", "foo:"),
        f"{HELLO}/values.yaml: image",
        "'foo:' is not an image reference",
    ),
    (
        "image-without-tag",
        "values.yaml",
        "dev",
        setter("image", "node"),
        f"{HELLO}/values.yaml: image",
        "'node' needs an explicit :tag or @digest",
    ),
    (
        "unknown-service-type",
        "values-dev.yaml",
        "dev",
        setter("service.type", "Headless"),
        f"{HELLO}/values-dev.yaml: service.type",
        "must be one of 'ClusterIP', 'NodePort', 'LoadBalancer', got 'Headless'",
    ),
    (
        "cluster-ip-with-node-port",
        "values-prod.yaml",
        "prod",
        setter("service", {"type": "ClusterIP", "port": 80, "nodePort": 30080}),
        f"{HELLO}/values-prod.yaml: service.nodePort",
        "only NodePort and LoadBalancer services have a nodePort",
    ),
    (
        "load-balancer-open-to-all",
        "values-dev.yaml",
        "dev",
        setter("service", {"type": "LoadBalancer", "port": 80}),
        f"{HELLO}/values-dev.yaml: service.loadBalancerSourceRanges",
        "is required for a LoadBalancer service",
    ),
    (
        "probe-path-relative",
        "values.yaml",
        "dev",
        setter("probes.readiness.path", "healthz"),
        f"{HELLO}/values.yaml: probes.readiness.path",
        "must start with /",
    ),
    (
        "cpu-not-a-quantity",
        "values-prod.yaml",
        "prod",
        setter("resources.requests.cpu", "lots"),
        f"{HELLO}/values-prod.yaml: resources.requests.cpu",
        "'lots' is not a quantity",
    ),
    (
        "runs-as-root",
        "values.yaml",
        "dev",
        setter("securityContext.runAsUser", 0),
        f"{HELLO}/values.yaml: securityContext.runAsUser",
        "must be a non-root user id",
    ),
    (
        "budget-with-both-bounds",
        "values-prod.yaml",
        "prod",
        setter("podDisruptionBudget.maxUnavailable", 1),
        f"{HELLO}/values-prod.yaml: podDisruptionBudget",
        "set exactly one of minAvailable or maxUnavailable",
    ),
    (
        "ingress-host-not-dns",
        "values-prod.yaml",
        "prod",
        setter("ingress.host", "Hello_World"),
        f"{HELLO}/values-prod.yaml: ingress.host",
        "'Hello_World' is not a DNS name",
    ),
    (
        "surge-over-100-percent",
        "values.yaml",
        "dev",
        setter("rollingUpdate.maxSurge", "150%"),
        f"{HELLO}/values.yaml: rollingUpdate.maxSurge",
        "must be a whole number or a percentage",
    ),
    (
        "env-name-starts-with-digit",
        "values-dev.yaml",
        "dev",
        setter("env", {"1ST": "x"}),
        f"{HELLO}/values-dev.yaml: env.1ST",
        "must be an environment variable name",
    ),
    (
        "hello-as-daemonset",
        "values-prod.yaml",
        "prod",
        setter("workload", "DaemonSet"),
        f"{HELLO}/values-prod.yaml: workload",
        "must be 'Deployment', got 'DaemonSet'",
    ),
    (
        "stack-negative-replicas",
        "stack",
        "prod",
        setter("replicas", -3),
        f"{STACK}.replicas",
        "-3 is less than the minimum of 0",
    ),
    (
        "stack-unknown-key",
        "stack",
        "prod",
        setter("ingres", {"host": "a.example.com"}),
        f"{STACK}.ingres",
        "unknown key (did you mean 'ingress'?)",
    ),
    (
        "stack-removes-required-section",
        "stack",
        "prod",
        setter("service", None),
        f"{STACK}.service",
        "is required",
    ),
]


@pytest.mark.parametrize(
    ("where", "env", "mutate", "located", "words"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_values_fail_with_one_line_naming_the_key(
    project: Path, where: str, env: str, mutate: Mutation, located: str, words: str
) -> None:
    edit(project, where, mutate)
    result = render(env, *(["-s", "prod"] if where == "stack" else []))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    # Some messages go on after the words checked (e.g. the expected image format).
    assert line.startswith(f"error: {located}: {words}")


def test_every_problem_is_reported_at_once(project: Path) -> None:
    edit(project, "values-prod.yaml", setter("replicas", -1))
    edit(project, "values-prod.yaml", setter("ingress.host", "Bad_Host"))
    edit(project, "values.yaml", setter("containerPort", "8000"))
    result = render("prod")
    assert result.exit_code == 2
    assert [line.split(": ", 3)[1:3] for line in result.stderr.strip().splitlines()] == [
        [f"{HELLO}/values.yaml", "containerPort"],
        [f"{HELLO}/values-prod.yaml", "ingress.host"],
        [f"{HELLO}/values-prod.yaml", "replicas"],
    ]


def test_a_values_file_that_is_not_yaml_names_its_line(project: Path) -> None:
    (project / HELLO / "values-prod.yaml").write_text("---\nreplicas: 3\ningress: [\n")
    result = render("prod")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {HELLO}/values-prod.yaml:4: not valid YAML")


def test_a_values_file_must_be_a_mapping(project: Path) -> None:
    (project / HELLO / "values-prod.yaml").write_text("---\n- replicas: 3\n")
    result = render("prod")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {HELLO}/values-prod.yaml: must be a mapping of values, got list"
    )


@pytest.mark.parametrize(
    "reference",
    [
        "hello:1.0.0",
        "localhost/team/hello:1.0.0",
        "registry.example.com:5000/team/app_x:v2-rc.1",
        "ghcr.io/org/app@sha256:" + "0" * 64,
        "10.0.0.1:5000/app:latest",
    ],
)
def test_good_image_references_are_accepted(reference: str) -> None:
    parse_image(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "UPPER/Case:tag",
        "foo:",
        "app",
        "app:tag with space",
        "-app:1",
        "app:-bad",
        "registry.example.com/App:1",
        "app@sha256:tooshort",
        "a//b:1",
        "",
    ],
)
def test_bad_image_references_are_rejected(reference: str) -> None:
    with pytest.raises(ValueError, match=r"image reference|explicit :tag"):
        parse_image(reference)


def test_version_label_fits_kubernetes_label_rules() -> None:
    assert version_label("app:1.2.3") == "1.2.3"
    long_tag = "v" + "1" * 70 + "."
    label = version_label(f"app:{long_tag}")
    assert len(label) <= 63
    assert label[-1].isalnum()
