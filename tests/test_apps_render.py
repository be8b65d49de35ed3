"""Rendering apps: the hello app per environment, every library template, the engine's rules.

Golden files: tests/golden/hello/<env>.yaml hold the accepted output of
`kubesmith render hello -e <env>`. After an intended change, regenerate them with
``KUBESMITH_UPDATE_GOLDEN=1 pytest tests/test_apps_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.apps import (
    SECRET_PLACEHOLDER,
    TemplateError,
    check_objects,
    dump_stream,
    render_app,
)
from kubesmith.apps.images import images_of
from kubesmith.apps.render import render_stack_apps
from kubesmith.cli import app as cli
from kubesmith.errors import UserError
from kubesmith.stackfile import load_spec
from tests.conftest import REPO

ENVS = ("local", "dev", "prod")
#: Every stack kubesmith ships (Pulumi.<stack>.yaml); each deploys hello.
STACKS = ENVS
TEMPLATES = REPO / "templates"
GOLDEN = Path(__file__).resolve().parent / "golden" / "hello"
LIBRARY = sorted(p.name for p in TEMPLATES.glob("*.yaml.j2") if not p.name.startswith("_"))
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
}

runner = CliRunner()


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), f"expected one object per kind, got {kinds}"
    return {o["kind"]: o for o in objects}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def make_project(root: Path) -> Path:
    """A project with a copy of the repository's templates, for tests that add apps."""
    shutil.copytree(TEMPLATES, root / "templates")
    (root / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    return root / "templates"


def add_app(templates: Path, name: str, files: dict[str, Any]) -> Path:
    """templates/apps/<name>/ with the given files (dicts become YAML, or JSON for schemas)."""
    directory = templates / "apps" / name
    directory.mkdir(parents=True)
    for filename, content in files.items():
        if isinstance(content, str):
            text = content
        elif filename.endswith(".json"):
            text = json.dumps(content)
        else:
            text = yaml.safe_dump(content)
        (directory / filename).write_text(text)
    return directory


def hello_schema() -> dict[str, Any]:
    return dict(json.loads((TEMPLATES / "apps/hello/values.schema.json").read_text()))


def hello_values() -> dict[str, Any]:
    """hello's values.yaml with the image versions.yaml pins for it: a copy to start an app."""
    values = yaml.safe_load((TEMPLATES / "apps/hello/values.yaml").read_text())
    return {"image": versions.app_image("hello"), **values}


# --- hello --------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_hello_matches_its_golden_file(env: str) -> None:
    rendered = dump_stream(render_app("hello", env, templates=TEMPLATES))
    golden = GOLDEN / f"{env}.yaml"
    if os.environ.get("KUBESMITH_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert golden.is_file(), f"{golden} missing: run with KUBESMITH_UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), f"{golden} differs; see the module docstring"


@pytest.mark.parametrize("env", ["local", "dev"])
def test_hello_is_a_nodeport_service_outside_prod(env: str) -> None:
    objects = by_kind(render_app("hello", env, templates=TEMPLATES))
    assert set(objects) == {"Namespace", "ConfigMap", "Deployment", "Service"}
    service, deployment = objects["Service"], objects["Deployment"]
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert 30000 <= port["nodePort"] <= 32767
    # The Service reaches the container's port 8000 through its name.
    (container_port,) = container(deployment)["ports"]
    assert container_port == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert port["targetPort"] == container_port["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 1


def test_hello_in_prod_has_an_ingress_three_replicas_and_a_disruption_budget() -> None:
    objects = by_kind(render_app("hello", "prod", templates=TEMPLATES))
    assert set(objects) == {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
    }
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert objects["Service"]["spec"]["type"] == "ClusterIP"
    (rule,) = objects["Ingress"]["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "hello", "port": {"name": "http"}}
    pdb = objects["PodDisruptionBudget"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["selector"]["matchLabels"] == selector
    # A drain may take one of the three pods, never two.
    assert pdb["minAvailable"] == 2


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_runs_hello_on_the_node_image_pinned_by_digest(stack: str) -> None:
    """No image to build: the official Node.js image, by the digest versions.yaml pins."""
    objects = render_stack_apps(load_spec(stack, REPO), stack, templates=TEMPLATES)["hello"]
    main = container(by_kind(objects)["Deployment"])
    pinned = versions.app_image("hello")
    assert pinned is not None
    assert main["image"] == pinned
    name, digest = pinned.split("@")
    assert re.fullmatch(r"docker\.io/library/node:\d+\.\d+\.\d+-slim", name)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert main["command"] == ["node", "/app/hello.js"]


@pytest.mark.parametrize("env", ENVS)
def test_hello_lives_in_its_own_restricted_namespace_created_first(env: str) -> None:
    objects = render_app("hello", env, templates=TEMPLATES)
    namespace, *others = objects
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == "hello"
    assert "namespace" not in namespace["metadata"]
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert {o["metadata"]["namespace"] for o in others} == {"hello"}


def test_the_namespace_value_names_the_apps_namespace() -> None:
    objects = render_app("hello", "dev", {"namespace": "web"}, templates=TEMPLATES)
    assert objects[0]["metadata"]["name"] == "web"
    assert {o["metadata"].get("namespace") for o in objects[1:]} == {"web"}


@pytest.mark.parametrize("env", ENVS)
def test_hello_runs_its_script_from_a_configmap_mounted_read_only(env: str) -> None:
    objects = by_kind(render_app("hello", env, templates=TEMPLATES))
    script = (TEMPLATES / "apps/hello/files/hello.js").read_text()
    config_map = objects["ConfigMap"]
    assert config_map["metadata"]["name"] == "hello-files"
    assert config_map["data"] == {"hello.js": script}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert {"name": "files", "configMap": {"name": "hello-files"}} in pod["volumes"]
    main = container(objects["Deployment"])
    assert {"name": "files", "mountPath": "/app", "readOnly": True} in main["volumeMounts"]
    assert main["command"] == ["node", "/app/hello.js"]
    # The script listens where the Service, the probes and the port name point.
    (port,) = main["ports"]
    assert re.search(rf"^const PORT = {port['containerPort']};$", script, re.MULTILINE)


def test_changing_the_script_rolls_the_pods(tmp_path: Path) -> None:
    templates = make_project(tmp_path)

    def pod_of() -> dict[str, Any]:
        objects = render_app("hello", "dev", templates=templates)
        return dict(by_kind(objects)["Deployment"]["spec"]["template"])

    before = pod_of()
    script = templates / "apps/hello/files/hello.js"
    script.write_text(script.read_text().replace("Hello World!", "Hello again!"))
    after = pod_of()
    key = "kubesmith.io/files-checksum"
    assert before["metadata"]["annotations"][key] != after["metadata"]["annotations"][key]
    # Nothing else about the pods changed: only the checksum rolls them.
    del before["metadata"]["annotations"][key], after["metadata"]["annotations"][key]
    assert before == after


def test_mounted_files_must_exist_and_be_configmap_keys(tmp_path: Path) -> None:
    templates = make_project(tmp_path)
    files = templates / "apps/hello/files"
    (files / "hello.js").rename(files / "hello world.js")
    with pytest.raises(UserError, match=r"files/hello world\.js: not a ConfigMap key"):
        render_app("hello", "dev", templates=templates)
    shutil.rmtree(files)
    expected = r"^templates/apps/hello/files: no files, but the values of hello mount them"
    with pytest.raises(UserError, match=expected):
        render_app("hello", "dev", templates=templates)


@pytest.mark.parametrize("version", versions.kubernetes_versions())
@pytest.mark.parametrize("env", ENVS)
def test_hello_validates_for_every_pinned_kubernetes_version(env: str, version: str) -> None:
    assert check_objects(render_app("hello", env, templates=TEMPLATES), version) == []


@pytest.mark.parametrize("env", ENVS)
def test_hello_pods_run_locked_down(env: str) -> None:
    deployment = by_kind(render_app("hello", env, templates=TEMPLATES))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The official Node.js images' "node" user.
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        1000,
        1000,
    )
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    main = container(deployment)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]
    assert main["readinessProbe"]["httpGet"]["port"] == "http"
    assert main["livenessProbe"]["httpGet"]["port"] == "http"
    # The read-only root works because /tmp is an emptyDir; the script is mounted read-only.
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/app"}
    assert {"name": mounts["/tmp"]["name"], "emptyDir": {}} in pod["volumes"]
    assert mounts["/app"]["readOnly"] is True
    # Only volume types Pod Security "restricted" allows.
    assert all(set(v) - {"name"} <= {"configMap", "emptyDir"} for v in pod["volumes"])
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_every_object_carries_the_standard_labels_and_selectors_stay_stable() -> None:
    objects = render_app("hello", "prod", templates=TEMPLATES)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert set(labels) >= STANDARD_LABELS, obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "kubesmith"
        assert labels["app.kubernetes.io/instance"] == "hello-prod"
    deployment = by_kind(objects)["Deployment"]
    assert set(deployment["spec"]["template"]["metadata"]["labels"]) >= STANDARD_LABELS
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "24.19.0-slim"

    # A new image changes the version label, never the (immutable) selector.
    bumped = by_kind(
        render_app(
            "hello", "prod", {"image": "registry.example/team/hello:2.1"}, templates=TEMPLATES
        )
    )["Deployment"]
    assert bumped["metadata"]["labels"]["app.kubernetes.io/version"] == "2.1"
    assert bumped["spec"]["selector"] == deployment["spec"]["selector"]


def test_version_label_of_a_digest_only_image_is_a_valid_label() -> None:
    digest = "sha256:" + "ab" * 32
    objects = render_app(
        "hello", "dev", {"image": f"registry.example:5000/team/hello@{digest}"}, templates=TEMPLATES
    )
    assert by_kind(objects)["Deployment"]["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "ab" * 6
    )
    assert check_objects(objects, versions.default_kubernetes_version()) == []


# --- every library template x environment ------------------------------------------------


def _kind_of(template: str) -> str:
    match = re.search(r"^kind: (\w+)$", (TEMPLATES / template).read_text(), re.MULTILINE)
    assert match, f"{template} names no kind"
    return match[1]


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two apps that switch on every section of the library between them, in all envs
    (the agent mounts its files/, the web app does not)."""
    templates = make_project(tmp_path_factory.mktemp("showcase"))
    schema = hello_schema()
    schema["properties"]["workload"] = {"$ref": "../../_definitions.schema.json#/$defs/workload"}
    schema["required"].remove("files")
    everything = {
        **{k: v for k, v in hello_values().items() if k != "files"},
        "image": "registry.example/team/showcase:1.0",
        "command": ["node"],
        "args": ["server.js"],
        "env": {"LOG_LEVEL": "info"},
        "config": {"GREETING": "hello <world> & 'friends'"},
        "secretEnv": ["API_TOKEN"],
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70},
        "podDisruptionBudget": {"maxUnavailable": "25%"},
        "networkPolicy": {"fromNamespaces": ["ingress-nginx"], "fromCidrs": ["10.203.0.0/24"]},
        "ingress": {
            "host": "showcase.example.com",
            "path": "/",
            "pathType": "Prefix",
            "className": "nginx",
            "tlsSecretName": "showcase-tls",
        },
    }
    per_env = {
        "local": {"service": {"type": "NodePort", "port": 80, "nodePort": 30081}},
        "dev": {
            "service": {
                "type": "LoadBalancer",
                "port": 80,
                "loadBalancerSourceRanges": ["198.51.100.0/24"],
            }
        },
        "prod": {"replicas": 3},
    }
    mounts = {"web": {}, "agent": {"files": {"mountPath": "/srv"}}}
    for name, workload in (("web", "Deployment"), ("agent", "DaemonSet")):
        files: dict[str, Any] = {
            "values.schema.json": schema,
            "values.yaml": {**everything, **mounts[name], "workload": workload},
        }
        files.update({f"values-{env}.yaml": values for env, values in per_env.items()})
        add_app(templates, name, files)
    (templates / "apps/agent/files").mkdir()
    (templates / "apps/agent/files/server.js").write_text("console.log('agent');\n")
    return templates


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("template", LIBRARY)
def test_every_library_template_renders_and_validates(
    showcase: Path, template: str, env: str
) -> None:
    kind = _kind_of(template)
    rendered = {
        name: render_app(name, env, secrets={"API_TOKEN": "t0ken"}, templates=showcase)
        for name in ("web", "agent")
    }
    found = [o for objects in rendered.values() for o in objects if o["kind"] == kind]
    assert found, f"{template}: no {kind} rendered in {env}"
    for objects in rendered.values():
        assert check_objects(objects, versions.default_kubernetes_version()) == []


def test_the_autoscaler_owns_the_replica_count(showcase: Path) -> None:
    web = by_kind(render_app("web", "prod", secrets={"API_TOKEN": "x"}, templates=showcase))
    assert "replicas" not in web["Deployment"]["spec"]
    hpa = web["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    # A DaemonSet has no replicas to scale: no autoscaler for it.
    agent = render_app("agent", "prod", secrets={"API_TOKEN": "x"}, templates=showcase)
    assert "HorizontalPodAutoscaler" not in {o["kind"] for o in agent}


def test_config_reaches_the_pod_and_a_change_rolls_it(showcase: Path) -> None:
    def pod_of(config: dict[str, str]) -> dict[str, Any]:
        objects = render_app(
            "web", "dev", {"config": config}, secrets={"API_TOKEN": "x"}, templates=showcase
        )
        return dict(by_kind(objects)["Deployment"]["spec"]["template"])

    before, after = pod_of({"GREETING": "hi"}), pod_of({"GREETING": "hello"})
    assert before["metadata"]["annotations"] != after["metadata"]["annotations"]
    env_from = before["spec"]["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": "web-config"}} in env_from
    assert {"secretRef": {"name": "web-secrets"}} in env_from


def test_values_with_yaml_syntax_stay_data(showcase: Path) -> None:
    tricky = 'a: b\n- "quoted" # not a comment\n{x: 1}'
    objects = render_app(
        "web", "dev", {"config": {"TRICKY": tricky}}, secrets={"API_TOKEN": tricky},
        templates=showcase,
    )  # fmt: skip
    kinds = by_kind(objects)
    assert kinds["ConfigMap"]["data"]["TRICKY"] == tricky
    assert kinds["Secret"]["stringData"] == {"API_TOKEN": tricky}


# --- values layering --------------------------------------------------------------------


def test_null_removes_a_section_lists_replace_and_mappings_merge() -> None:
    overrides = {
        "ingress": None,
        "podDisruptionBudget": None,
        "writablePaths": ["/var/cache/app"],
        "resources": {"limits": {"memory": "256Mi"}},
    }
    objects = by_kind(render_app("hello", "prod", overrides, templates=TEMPLATES))
    assert set(objects) == {"Namespace", "ConfigMap", "Deployment", "Service"}
    main = container(objects["Deployment"])
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/app", "/var/cache/app"]
    # values-prod.yaml's requests survive; only the limit changed.
    assert main["resources"] == {
        "requests": {"cpu": "100m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_stack_values_win_over_the_environment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(tmp_path)
    stack = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())
    stack["config"]["kubesmith:cluster"]["apps"] = [{"name": "hello", "values": {"replicas": 5}}]
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(stack))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))

    result = runner.invoke(cli, ["render", "hello", "-e", "prod", "-s", "prod"])
    assert result.exit_code == 0, result.output
    deployment = by_kind(list(yaml.safe_load_all(result.stdout)))["Deployment"]
    assert deployment["spec"]["replicas"] == 5

    stack["config"]["kubesmith:cluster"]["apps"] = []
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(stack))
    result = runner.invoke(cli, ["render", "hello", "-e", "prod", "-s", "prod"])
    assert result.exit_code == 2
    assert "Pulumi.prod.yaml: kubesmith:cluster.apps does not list 'hello'" in result.stderr


# --- CLI output -------------------------------------------------------------------------


_CLI = "from kubesmith.cli import main; main()"


def test_render_is_byte_identical_across_processes() -> None:
    """Hash seeds change dict and set order between processes; the output must not."""
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "KUBESMITH_PROJECT": str(REPO)}
        result = subprocess.run(
            [sys.executable, "-c", _CLI, "render", "hello", "-e", "prod"],
            capture_output=True,
            check=True,
            env=env,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    (output,) = outputs
    assert output == (GOLDEN / "prod.yaml").read_bytes()


def test_output_directory_gets_one_file_per_object_in_apply_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("not ours\n")
    (out / "07-configmap-stale.yaml").write_text("left from an earlier render\n")

    result = runner.invoke(cli, ["render", "hello", "-e", "prod", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    objects = render_app("hello", "prod", templates=TEMPLATES)
    expected = [
        f"{i:02d}-{o['kind'].lower()}-{o['metadata']['name']}.yaml" for i, o in enumerate(objects)
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "README.txt"])
    for name, obj in zip(expected, objects, strict=True):
        assert list(yaml.safe_load_all((out / name).read_text())) == [obj]
    kinds = [o["kind"] for o in objects]
    # What others refer to is applied first.
    assert kinds.index("Service") < kinds.index("Deployment") < kinds.index("Ingress")


def test_cli_never_prints_secret_values_unless_given_a_secrets_file(
    showcase: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(showcase.parent))
    result = runner.invoke(cli, ["render", "web", "-e", "dev"])
    assert result.exit_code == 0, result.output
    secret = by_kind(list(yaml.safe_load_all(result.stdout)))["Secret"]
    assert secret["stringData"] == {"API_TOKEN": SECRET_PLACEHOLDER}

    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text("API_TOKEN: s3cr3t-value\n")
    out = tmp_path / "out"
    result = runner.invoke(
        cli, ["render", "web", "-e", "dev", "--secrets-file", str(secrets_file), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    (secret_file,) = out.glob("*-secret-*.yaml")
    assert yaml.safe_load(secret_file.read_text())["stringData"] == {"API_TOKEN": "s3cr3t-value"}
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert "s3cr3t-value" not in result.output


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({}, "web: no value given for secret 'API_TOKEN'"),
        (
            {"API_TOKEN": "value-1", "API_TOKNE": "value-2"},
            "web: secret value(s) given but not used by any template: API_TOKNE",
        ),
    ],
)
def test_secret_values_must_match_the_declared_names(
    showcase: Path, secrets: dict[str, str], message: str
) -> None:
    with pytest.raises(UserError) as info:
        render_app("web", "dev", secrets=secrets, templates=showcase)
    assert str(info.value) == message


# --- template errors --------------------------------------------------------------------


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.fixture
def broken_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app "broken" like hello plus its own template (written by each test)."""
    templates = make_project(tmp_path)
    add_app(
        templates,
        "broken",
        {
            "values.yaml": hello_values(),
            "values-dev.yaml": "---\n",
            "values.schema.json": hello_schema(),
        },
    )
    shutil.copytree(templates / "apps/hello/files", templates / "apps/broken/files")
    monkeypatch.setenv("KUBESMITH_PROJECT", str(tmp_path))
    return templates


def test_undefined_value_names_the_template_and_line(broken_project: Path) -> None:
    template = broken_project / "apps/broken/extra.yaml.j2"
    template.write_text(
        "{#- an app's own template -#}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n"
        "data:\n  greeting: {{ values.greting | tojson }}\n"
    )
    result = runner.invoke(cli, ["render", "broken", "-e", "dev"])
    assert result.exit_code == 2
    line = _line_of(template, "values.greting")
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith(f"error: templates/apps/broken/extra.yaml.j2:{line}: undefined value")
    assert "greting" in message
    assert "Traceback" not in result.output


def test_undefined_value_inside_a_library_partial_points_at_the_partial(
    broken_project: Path,
) -> None:
    # A schema that forgets to require probes lets the values through; the partial then fails.
    schema = hello_schema()
    schema["required"].remove("probes")
    (broken_project / "apps/broken/values.schema.json").write_text(json.dumps(schema))
    (broken_project / "apps/broken/values-dev.yaml").write_text("---\nprobes: null\n")
    with pytest.raises(TemplateError) as info:
        render_app("broken", "dev", templates=broken_project)
    line = _line_of(broken_project / "_pod.yaml.j2", "probe(values.probes.readiness)")
    assert str(info.value).startswith(f"templates/_pod.yaml.j2:{line}: undefined value")
    assert "probes" in str(info.value)


def test_an_undefined_value_in_a_condition_fails_too(broken_project: Path) -> None:
    template = broken_project / "apps/broken/extra.yaml.j2"
    template.write_text("{% if values.debugMode %}\nkind: ConfigMap\n{% endif %}\n")
    with pytest.raises(TemplateError, match=r"extra\.yaml\.j2:1: undefined value.*debugMode"):
        render_app("broken", "dev", templates=broken_project)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: {% if %}\n", r"^templates/apps/broken/extra\.yaml\.j2:2: template syntax"),
        ("a: [1,\n", r"^templates/apps/broken/extra\.yaml\.j2: renders invalid YAML"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            r"extra\.yaml\.j2: renders 2 objects; one file, one object",
        ),
        ("apiVersion: v1\nkind: ConfigMap\n", r"extra\.yaml\.j2: the rendered object has no"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\n",
            r"extra\.yaml\.j2: renders Service 'broken', which templates/service\.yaml\.j2",
        ),
    ],
    ids=["syntax", "yaml", "two-objects", "no-name", "duplicate"],
)
def test_templates_must_render_one_well_formed_object(
    broken_project: Path, text: str, expected: str
) -> None:
    (broken_project / "apps/broken/extra.yaml.j2").write_text(text)
    with pytest.raises(TemplateError, match=expected):
        render_app("broken", "dev", templates=broken_project)


def test_unknown_app_and_environment_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    result = runner.invoke(cli, ["render", "helo", "-e", "prod"])
    assert result.exit_code == 2
    assert "no app 'helo'" in result.stderr
    assert "known: hello" in result.stderr
    result = runner.invoke(cli, ["render", "hello", "-e", "staging"])
    assert result.exit_code == 2
    assert (
        "templates/apps/hello: no values-staging.yaml (environments of hello: dev, local, prod)"
        in (result.stderr)
    )


def test_images_of_reads_every_container_of_every_pod_once() -> None:
    def pod(*images: str) -> dict[str, Any]:
        return {
            "initContainers": [{"name": "init", "image": images[0]}],
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        }

    objects: list[dict[str, Any]] = [
        {"kind": "ConfigMap", "data": {"image": "not/a-pod:1"}},
        {"kind": "Deployment", "spec": {"template": {"spec": pod("a:1", "b:1")}}},
        {"kind": "Pod", "spec": pod("c:1")},
        {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod("d:1")}}}}},
        {"kind": "DaemonSet", "spec": {"template": {"spec": pod("a:1")}}},
    ]
    assert images_of(objects) == ["a:1", "b:1", "c:1", "d:1"]


def test_two_apps_of_a_stack_cannot_share_a_namespace(tmp_path: Path) -> None:
    templates = make_project(tmp_path)
    shutil.copytree(templates / "apps/hello", templates / "apps/hello2")
    values = {**hello_values(), "namespace": "hello"}
    (templates / "apps/hello2/values.yaml").write_text(yaml.safe_dump(values))
    dev = load_spec("dev", REPO)
    (hello,) = dev.apps
    spec = dev.model_copy(update={"apps": [hello, hello.model_copy(update={"name": "hello2"})]})
    with pytest.raises(UserError) as info:
        render_stack_apps(spec, "dev", templates=templates)
    assert info.value.lines() == [
        "Pulumi.dev.yaml: apps hello and hello2 both render Namespace hello"
    ]
