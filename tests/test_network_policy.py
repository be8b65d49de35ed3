"""NetworkPolicy: who enforces it (kubesmith:cluster.cni.networkPolicy), and the warning when
nobody does.

kube-router's firewall cannot run here (no Kubernetes binaries, no registry for its image):
these tests follow the setting from the stack config through `config check`, the inventory and
`kubesmith.provision.kubernetes.prepare` to the add-on's objects, checked against the
Kubernetes schemas of every pinned minor. The node side runs on real LXD
(tests/integration/test_network_policy.py); the agent blocking traffic is the e2e tier's
(tests/e2e/test_network_policy.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.apps import check_objects, render_addon
from kubesmith.apps.policy import unenforced_policies
from kubesmith.cli import app
from kubesmith.errors import ConfigError
from kubesmith.provision import kubernetes
from kubesmith.provision.target import Target, for_inventory
from kubesmith.provision.variables import cluster_variables
from kubesmith.spec import parse_cluster
from tests.clusterlab import air_project, listed_images, local_spec, write_inventory
from tests.conftest import REPO

TEMPLATES = REPO / "templates"
PINNED = versions.kubernetes_versions()
VALUES = {"image": versions.image("kube_router"), "serviceCidr": "10.96.0.0/12"}
#: A NetworkPolicy the shipped hello app renders when its values ask for one.
POLICY_VALUES = {"networkPolicy": {"fromNamespaces": ["ingress"]}}


def by_kind(objects: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {o["kind"]: o for o in objects}


def raw_cluster(stack: str = "local", **cni: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    cluster: dict[str, Any] = document["config"]["kubesmith:cluster"]
    if cni:
        cluster["cni"] = cni
    return cluster


# --- the setting ----------------------------------------------------------------------------


def test_nothing_enforces_policies_unless_the_stack_names_an_agent() -> None:
    spec = parse_cluster(raw_cluster())
    assert spec.cni.network_policy == "none"
    assert spec.cni.enforces_network_policy is False
    for plugin in ("bridge", "flannel"):
        chosen = parse_cluster(raw_cluster(plugin=plugin, networkPolicy="kube-router"))
        assert (chosen.cni.plugin, chosen.cni.network_policy) == (plugin, "kube-router")
        assert chosen.cni.enforces_network_policy is True


def test_an_unknown_agent_is_named_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cluster(raw_cluster(networkPolicy="calico"))
    (line,) = caught.value.lines()
    assert line.startswith("kubesmith:cluster.cni.networkPolicy: ")
    assert "'none'" in line
    assert "'kube-router'" in line


# --- the warning ----------------------------------------------------------------------------


def project(root: Path, stack: str, cluster: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    (root / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": {"kubesmith:cluster": cluster}})
    )
    return root


def config_check(
    root: Path, stack: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[str], str]:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(root))
    result = CliRunner().invoke(app, ["config", "check", "-s", stack], terminal_width=100)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    return result.exit_code, warnings, result.stdout


@pytest.mark.parametrize("plugin", ["bridge", "flannel"])
def test_config_check_warns_of_a_policy_nothing_enforces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    cluster = raw_cluster("dev", plugin=plugin)
    cluster["apps"] = [{"name": "hello", "values": POLICY_VALUES}]
    root = project(tmp_path, "dev", cluster)
    code, warnings, stdout = config_check(root, "dev", monkeypatch)
    assert code == 0, stdout
    # One line (the console does not wrap it), naming the stack, the app and the fix.
    assert warnings == [
        "warning: Pulumi.dev.yaml: app hello enables NetworkPolicy hello, but nothing on this "
        "cluster enforces it (kubesmith:cluster.cni.networkPolicy is none, pod network "
        f"{plugin}): all traffic to the app is allowed; set "
        "kubesmith:cluster.cni.networkPolicy: kube-router to enforce it"
    ]
    assert "ok: Pulumi.dev.yaml is valid" in stdout


def test_no_warning_with_an_agent_or_without_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enforced = raw_cluster("dev", networkPolicy="kube-router")
    enforced["apps"] = [{"name": "hello", "values": POLICY_VALUES}]
    code, warnings, stdout = config_check(
        project(tmp_path / "a", "dev", enforced), "dev", monkeypatch
    )
    assert (code, warnings) == (0, []), stdout
    # The shipped stacks' apps enable no policy: nothing to warn about.
    plain = raw_cluster("dev")
    code, warnings, stdout = config_check(project(tmp_path / "b", "dev", plain), "dev", monkeypatch)
    assert (code, warnings) == (0, []), stdout


def test_config_check_fails_on_an_app_that_does_not_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's apps are rendered to find their policies, so their problems surface too."""
    cluster = raw_cluster("dev")
    cluster["apps"] = [{"name": "hello", "values": {"networkPolicy": {"fromCidrs": ["nope"]}}}]
    code, _, stdout = config_check(project(tmp_path, "dev", cluster), "dev", monkeypatch)
    assert code == 2
    assert "ok:" not in stdout


def test_the_warning_reads_rendered_objects_not_values() -> None:
    spec = parse_cluster(raw_cluster())
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "web"}}
    deployment = {"kind": "Deployment", "metadata": {"name": "web"}}
    rendered = {"web": [deployment, policy], "batch": [deployment]}
    (line,) = unenforced_policies(spec, "local", rendered)
    assert line.startswith("Pulumi.local.yaml: app web enables NetworkPolicy web, but nothing")
    enforced = parse_cluster(raw_cluster(networkPolicy="kube-router"))
    assert unenforced_policies(enforced, "local", rendered) == []


# --- the kube-router add-on -----------------------------------------------------------------


@pytest.mark.parametrize("version", PINNED)
def test_the_addon_renders_and_validates_for_each_pinned_minor(version: str) -> None:
    objects = render_addon("kube-router", VALUES, templates=TEMPLATES)
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ]
    assert check_objects(objects, version) == []


def test_the_agent_lives_in_its_own_privileged_namespace() -> None:
    objects = render_addon("kube-router", VALUES, templates=TEMPLATES)
    kinds = by_kind(objects)
    namespace = kinds["Namespace"]["metadata"]
    assert namespace["name"] == "kube-router"
    # Host network and NET_ADMIN: only the "privileged" level admits the agent's pods.
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for obj in objects:
        if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "kube-router", obj["kind"]
    (subject,) = kinds["ClusterRoleBinding"]["subjects"]
    account = kinds["ServiceAccount"]["metadata"]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]


def test_the_agent_may_read_what_its_firewall_watches_and_write_nothing() -> None:
    role = by_kind(render_addon("kube-router", VALUES, templates=TEMPLATES))["ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    watched = {
        ("", "pods"),
        ("", "namespaces"),
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
    }
    # Every informer kube-router starts lists and watches; it gets only its own Node.
    assert granted == {(g, r, v) for g, r in watched for v in ("list", "watch")} | {
        ("", "nodes", "get")
    }


def test_only_the_firewall_runs_beside_the_pod_network_and_kube_proxy() -> None:
    values = {**VALUES, "serviceCidr": "10.112.0.0/12"}
    daemonset = by_kind(render_addon("kube-router", values, templates=TEMPLATES))["DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert agent["image"] == versions.image("kube_router")
    args = dict(a.removeprefix("--").split("=", 1) for a in agent["args"])
    assert args["run-firewall"] == "true"
    assert args["run-router"] == "false"
    assert args["run-service-proxy"] == "false"
    assert args["run-loadbalancer"] == "false"
    assert args["service-cluster-ip-range"] == "10.112.0.0/12"
    assert pod["hostNetwork"] is True
    # Every node, control planes included: a policy may select a pod anywhere.
    assert {"operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in agent["volumeMounts"]:
        assert mount["name"] in volumes
    assert volumes["xtables-lock"]["hostPath"]["path"] == "/run/xtables.lock"


def test_the_agents_image_is_pinned_by_digest() -> None:
    image = versions.image("kube_router")
    assert image.startswith("docker.io/cloudnativelabs/kube-router:v2.")
    _, _, digest = image.partition("@sha256:")
    assert len(digest) == 64
    assert int(digest, 16) >= 0


# --- from the stack to the playbook ---------------------------------------------------------


def no_probe(_target: Target, _hosts: Sequence[str]) -> dict[str, str]:
    raise AssertionError("nodes probed although no binary is needed")


@pytest.mark.parametrize(("agent", "plugin"), [("none", "bridge"), ("kube-router", "flannel")])
def test_prepare_renders_the_agent_only_when_chosen(
    tmp_path: Path, agent: str, plugin: str
) -> None:
    settings = {"cni": {"plugin": plugin, "networkPolicy": agent}, "serviceCidr": "10.112.0.0/12"}
    inventory = write_inventory(tmp_path, local_spec(1, 1, **settings))
    target = for_inventory(inventory.path, "distro")
    prepared = kubernetes.prepare(target, {}, {"kubesmith_kubernetes_binaries": False}, no_probe)
    extravars = {
        **cluster_variables(target.inventory.cluster).extravars(),
        **prepared.variables.extravars(),
    }
    assert extravars["kubesmith_network_policy"] == agent
    manifests = extravars["kubesmith_network_policy_manifests"]
    if agent == "none":
        assert manifests == []
        return
    daemonset = by_kind(manifests)["DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert "--service-cluster-ip-range=10.112.0.0/12" in container["args"]


def test_site_applies_the_agent_after_the_pod_network_and_before_dns() -> None:
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    names = [p["name"] for p in plays]
    agent = names.index("NetworkPolicy agent add-on (kube-router)")
    assert names.index("Pod network add-on (flannel)") < agent < names.index("Cluster DNS")
    (task,) = plays[agent]["tasks"]
    assert task["ansible.builtin.include_role"]["tasks_from"] == "network_policy"
    assert task["when"] == "kubesmith_network_policy != 'none'"
    (nodes,) = [p for p in plays if p["name"] == "Kubernetes nodes"]
    (cni,) = [r for r in nodes["roles"] if r["role"] == "cni"]
    assert cni["vars"]["cni_network_policy"] == "{{ kubesmith_network_policy }}"


@pytest.mark.parametrize("agent", ["none", "kube-router"])
def test_artifacts_list_names_the_agents_image_when_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str
) -> None:
    stack = air_project(tmp_path, monkeypatch, cni={"plugin": "bridge", "networkPolicy": agent})
    result = CliRunner().invoke(app, ["artifacts", "list", "-s", stack], terminal_width=400)
    assert result.exit_code == 0, result.output
    listed = versions.image("kube_router") in listed_images(result.output)
    assert listed is (agent == "kube-router")
