"""`kubesmith validate`: strict Kubernetes schema checks, one `file:index:path: message` line
per problem, exit code 1 when there is any."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.apps import dump_stream, render_app, schema_version
from kubesmith.apps.kubeschema import check_object
from kubesmith.cli import app as cli
from kubesmith.errors import UserError
from tests.conftest import REPO

runner = CliRunner()
PINNED = versions.default_kubernetes_version()


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))


def hello(env: str = "prod") -> list[dict[str, Any]]:
    return render_app("hello", env, templates=REPO / "templates")


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("env", ["local", "dev", "prod"])
def test_render_piped_into_validate_succeeds(env: str) -> None:
    rendered = runner.invoke(cli, ["render", "hello", "-e", env])
    assert rendered.exit_code == 0, rendered.output
    result = runner.invoke(
        cli, ["validate", "-", "--kubernetes-version", PINNED], input=rendered.stdout
    )
    assert result.exit_code == 0, result.output
    count = len(hello(env))
    assert result.stdout.startswith(f"ok: {count} document(s) valid for Kubernetes {PINNED}")


@pytest.mark.usefixtures("in_repo")
def test_a_broken_manifest_is_reported_field_by_field(tmp_path: Path) -> None:
    objects = hello("prod")
    kinds = [o["kind"] for o in objects]
    deployment_index = kinds.index("Deployment")
    deployment = copy.deepcopy(objects[deployment_index])
    deployment["spec"]["replicas"] = "three"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    deployment["spec"]["strategy"]["rollingUpdate"]["surge"] = 1
    objects[deployment_index] = deployment
    path = tmp_path / "hello.yaml"
    path.write_text(dump_stream(objects))

    result = runner.invoke(cli, ["validate", str(path), "--kubernetes-version", PINNED])
    assert result.exit_code == 1
    i = deployment_index
    assert result.stdout.splitlines() == [
        f"{path}:{i}:spec.replicas: must be a whole number, got 'three'",
        f"{path}:{i}:spec.strategy.rollingUpdate.surge: unknown key (did you mean 'maxSurge'?)",
        f"{path}:{i}:spec.template.spec.containers[0].imagePulPolicy: "
        "unknown key (did you mean 'imagePullPolicy'?)",
    ]
    assert result.stderr.strip() == f"error: 3 problem(s) in {path}"


@pytest.mark.usefixtures("in_repo")
def test_a_directory_is_checked_file_by_file(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    assert runner.invoke(cli, ["render", "hello", "-e", "prod", "-o", str(out)]).exit_code == 0
    (service_file,) = out.glob("*-service-hello.yaml")
    service = yaml.safe_load(service_file.read_text())
    service["spec"]["ports"][0]["port"] = {"number": 80}
    service_file.write_text(yaml.safe_dump(service))

    result = runner.invoke(cli, ["validate", str(out), "--kubernetes-version", PINNED])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{service_file}:0:spec.ports[0].port: must be a whole number, got {{'number': 80}}"
    ]


def test_documents_are_counted_in_the_stream_including_empty_ones() -> None:
    stream = (
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
        "---\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {n: 1}\n"
        "---\n- not an object\n"
        "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
        "---\nkind: ConfigMap\n"
    )
    result = runner.invoke(cli, ["validate", "-", "--kubernetes-version", PINNED], input=stream)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "<stdin>:2:data.n: must be a string, got 1",
        "<stdin>:3:(document): must be a mapping (an object), got list",
        "<stdin>:4:kind: no schema for Widget in example.com/v1 for Kubernetes 1.35.0 "
        "(unknown kind or API version)",
        "<stdin>:5:apiVersion: is required",
    ]


def test_a_yaml_syntax_error_is_one_problem_at_its_document() -> None:
    stream = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nmetadata: [\n"
    result = runner.invoke(cli, ["validate", "-"], input=stream)
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith("<stdin>:1:(document): not valid YAML: line 7:")


def test_fields_are_checked_against_the_requested_kubernetes_version() -> None:
    # Service.spec.trafficDistribution arrived in Kubernetes 1.30.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "trafficDistribution": "PreferClose"},
    }
    assert check_object(service, "1.35.1") == []
    ((path, message),) = check_object(service, "1.29.4")
    assert path == "spec.trafficDistribution"
    assert message.startswith("unknown key")


@pytest.mark.parametrize(
    ("version", "schema"),
    [("1.35.1", "1.35.0"), ("v1.33.8", "1.33.0"), ("1.37.12", "1.37.0"), ("1.30", "1.30.0")],
)
def test_patch_releases_use_their_minor_releases_schemas(version: str, schema: str) -> None:
    assert schema_version(version) == schema


def test_every_pinned_version_has_schemas() -> None:
    for version in versions.kubernetes_versions():
        assert schema_version(version) == ".".join(version.split(".")[:2]) + ".0"


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1.99.0", "newer than the newest schemas"),
        ("1.2.0", "older than the oldest schemas"),
        ("latest", "is not a version such as"),
    ],
)
def test_unsupported_versions_are_refused_before_reading(version: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        schema_version(version)
    result = runner.invoke(cli, ["validate", "-", "--kubernetes-version", version], input="")
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_stack_supplies_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    result = runner.invoke(cli, ["validate", str(manifest), "-s", "local"])
    assert result.exit_code == 0, result.output
    assert f"Kubernetes {PINNED}" in result.stdout
    both = ["validate", str(manifest), "-s", "local", "--kubernetes-version", PINNED]
    assert runner.invoke(cli, both).exit_code == 2


@pytest.mark.parametrize("target", ["missing.yaml", "empty-dir"])
def test_unreadable_paths_are_usage_errors(tmp_path: Path, target: str) -> None:
    (tmp_path / "empty-dir").mkdir()
    result = runner.invoke(cli, ["validate", str(tmp_path / target)])
    assert result.exit_code == 2
    assert str(tmp_path / target) in result.stderr
