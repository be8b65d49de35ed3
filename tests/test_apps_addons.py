"""The CoreDNS add-on, rendered by the same engine for the control-plane step."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubesmith import versions
from kubesmith.apps import check_objects, render_addon
from kubesmith.errors import ConfigError, UserError
from kubesmith.stackfile import load_spec
from tests.conftest import REPO

TEMPLATES = REPO / "templates"
IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"


def coredns(**values: Any) -> dict[str, dict[str, Any]]:
    objects = render_addon("coredns", {"image": IMAGE, **values}, templates=TEMPLATES)
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_the_dns_service_sits_at_the_stacks_cluster_dns_address(stack: str) -> None:
    spec = load_spec(stack, REPO)
    objects = coredns(clusterDns=spec.dns_address)
    service = objects["Service"]
    assert service["metadata"]["name"] == "kube-dns"
    assert service["spec"]["clusterIP"] == spec.dns_address
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert {(53, "UDP"), (53, "TCP")} <= ports
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("version", versions.kubernetes_versions())
def test_coredns_renders_every_object_and_validates(version: str) -> None:
    objects = render_addon(
        "coredns", {"clusterDns": "10.96.0.10", "image": IMAGE}, templates=TEMPLATES
    )
    assert [o["kind"] for o in objects] == [
        "PodDisruptionBudget",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    ]
    assert check_objects(objects, version) == []
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "coredns"
        assert labels["app.kubernetes.io/version"] == "v1.12.1"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "kube-system"
        else:
            assert "namespace" not in obj["metadata"]


def test_the_corefile_serves_the_cluster_domain() -> None:
    default = coredns(clusterDns="10.96.0.10")["ConfigMap"]["data"]["Corefile"]
    assert re.search(r"^\s+kubernetes cluster\.local in-addr\.arpa ip6\.arpa \{$", default, re.M)
    custom = coredns(clusterDns="10.96.0.10", clusterDomain="k8s.internal")
    assert "kubernetes k8s.internal in-addr.arpa" in custom["ConfigMap"]["data"]["Corefile"]


def test_the_deployment_runs_the_replicas_asked_for_as_non_root() -> None:
    objects = coredns(clusterDns="10.96.0.10", replicas=3)
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    # Port 53 as non-root: the image's /coredns has the file capability cap_net_bind_service,
    # which the kernel refuses to exec unless the bounding set keeps NET_BIND_SERVICE.
    assert container["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_BIND_SERVICE"],
    }
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}
    ]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"clusterDns": "10.96.0.300"}, "coredns add-on values: clusterDns: '10.96.0.300' is not"),
        ({}, "coredns add-on values: clusterDns: is required"),
        ({"clusterDns": "10.96.0.10", "replicas": 0}, "replicas: 0 is less than the minimum"),
        ({"clusterDns": "10.96.0.10", "clusterDomain": "Cluster_Local"}, "clusterDomain:"),
        ({"clusterDns": "10.96.0.10", "upstream": "1.1.1.1"}, "upstream: unknown key"),
    ],
)
def test_bad_addon_values_are_named(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_addon("coredns", {"image": IMAGE, **values}, templates=TEMPLATES)
    (line,) = info.value.lines()
    assert problem in line


def test_the_image_must_be_passed_by_the_caller() -> None:
    # The pinned image lives in versions.yaml, which the caller reads; no default repeats it.
    with pytest.raises(ConfigError, match="coredns add-on values: image: is required"):
        render_addon("coredns", {"clusterDns": "10.96.0.10"}, templates=TEMPLATES)


def test_unknown_addon_is_named() -> None:
    with pytest.raises(UserError, match=r"no addon 'kube-proxy'.*known: coredns"):
        render_addon("kube-proxy", {}, templates=TEMPLATES)


def test_the_pinned_coredns_image_renders_and_validates() -> None:
    pinned = versions.image("coredns")
    objects = render_addon(
        "coredns", {"clusterDns": "10.96.0.10", "image": pinned}, templates=TEMPLATES
    )
    assert check_objects(objects, versions.default_kubernetes_version()) == []
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
