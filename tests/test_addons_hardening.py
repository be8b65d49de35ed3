"""The add-ons' pods are hardened as docs/cluster.md#add-ons says, read from the rendered objects.

One checker (``weaknesses``) judges a pod template against the hardening every add-on gets
(no privilege escalation, capabilities dropped to what the component needs, the
RuntimeDefault seccomp profile, resources on every container, init containers included) and
each add-on's own promises (health probes on loopback, read-only root, non-root). Each
property is then removed from a rendered object in turn to prove the checker notices: a
template that loses one fails here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from kubesmith import versions
from kubesmith.apps import check_objects, render_addon
from tests.conftest import REPO

TEMPLATES = REPO / "templates"
NETWORK_CAPS = {"NET_ADMIN", "NET_RAW"}


def flannel() -> list[dict[str, Any]]:
    values = {
        "network": "10.244.0.0/16",
        "backend": "vxlan",
        "image": versions.image("flannel"),
        "cniPluginImage": versions.image("flannel_cni_plugin"),
        "cniBinDir": "/opt/cni/bin",
    }
    return render_addon("flannel", values, templates=TEMPLATES)


def coredns(replicas: int = 2) -> list[dict[str, Any]]:
    values = {"clusterDns": "10.96.0.10", "image": versions.image("coredns"), "replicas": replicas}
    return render_addon("coredns", values, templates=TEMPLATES)


def kube_router() -> list[dict[str, Any]]:
    values = {"image": versions.image("kube_router"), "serviceCidr": "10.96.0.0/12"}
    return render_addon("kube-router", values, templates=TEMPLATES)


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] in ("DaemonSet", "Deployment")]
    return found


def pod_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = workload(objects)["spec"]["template"]["spec"]
    return spec


def weaknesses(pod: Mapping[str, Any], allowed_caps: Mapping[str, set[str]]) -> list[str]:
    """What the pod lacks of the common hardening; ``allowed_caps``: container -> caps it adds."""
    found = []
    pod_seccomp = (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type")
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for container in containers:
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        caps = security.get("capabilities") or {}
        if caps.get("drop") != ["ALL"]:
            found.append(f"{name}: capabilities not dropped to ALL")
        extra = set(caps.get("add") or ()) - allowed_caps.get(name, set())
        if extra:
            found.append(f"{name}: adds {sorted(extra)}")
        seccomp = security.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp != "RuntimeDefault":
            found.append(f"{name}: seccomp {seccomp}")
        resources = container.get("resources") or {}
        if not {"cpu", "memory"} <= set(resources.get("requests") or {}):
            found.append(f"{name}: no cpu and memory requests")
        if "memory" not in (resources.get("limits") or {}):
            found.append(f"{name}: no memory limit")
    return found


def loopback_probe(container: Mapping[str, Any], kind: str, path: str, port: int) -> bool:
    get = (container.get(kind) or {}).get("httpGet") or {}
    return (get.get("host"), get.get("path"), get.get("port")) == ("127.0.0.1", path, port)


def flag(container: Mapping[str, Any], name: str) -> str | None:
    for arg in container.get("args", []):
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    return None


# --- flannel --------------------------------------------------------------------------------


def flannel_weaknesses(objects: list[dict[str, Any]]) -> list[str]:
    pod = pod_of(objects)
    found = weaknesses(pod, {"kube-flannel": NETWORK_CAPS})
    (flanneld,) = pod["containers"]
    port = 8081
    # The health endpoint on the node's loopback only (the pod shares the node's network).
    if flag(flanneld, "healthz-ip") != "127.0.0.1" or flag(flanneld, "healthz-port") != str(port):
        found.append("flanneld: health endpoint not on 127.0.0.1:8081")
    for kind in ("livenessProbe", "readinessProbe"):
        if not loopback_probe(flanneld, kind, "/healthz", port):
            found.append(f"flanneld: no {kind} on its health endpoint")
    return found


def test_flannel_is_hardened_as_far_as_it_allows() -> None:
    objects = flannel()
    assert flannel_weaknesses(objects) == []
    pod = pod_of(objects)
    (flanneld,) = pod["containers"]
    # What it keeps, as upstream: exactly NET_ADMIN and NET_RAW, the host network, root.
    assert set(flanneld["securityContext"]["capabilities"]["add"]) == NETWORK_CAPS
    assert pod["hostNetwork"] is True
    # The init containers only copy files: no capability at all.
    for init in pod["initContainers"]:
        assert "add" not in init["securityContext"]["capabilities"], init["name"]
    assert check_objects(objects, versions.default_kubernetes_version()) == []


def test_the_flannel_health_port_is_a_value() -> None:
    values = {
        "network": "10.244.0.0/16",
        "backend": "vxlan",
        "image": versions.image("flannel"),
        "cniPluginImage": versions.image("flannel_cni_plugin"),
        "cniBinDir": "/opt/cni/bin",
        "healthzPort": 9091,
    }
    (flanneld,) = pod_of(render_addon("flannel", values, templates=TEMPLATES))["containers"]
    assert flag(flanneld, "healthz-port") == "9091"
    assert loopback_probe(flanneld, "livenessProbe", "/healthz", 9091)


# --- CoreDNS --------------------------------------------------------------------------------


def coredns_weaknesses(objects: list[dict[str, Any]]) -> list[str]:
    pod = pod_of(objects)
    found = weaknesses(pod, {"coredns": {"NET_BIND_SERVICE"}})
    (container,) = pod["containers"]
    security = container["securityContext"]
    # The image's /coredns carries cap_net_bind_service+ep: without it in the bounding set
    # the kernel refuses the exec, so it must be added back (and nothing else).
    if security.get("capabilities", {}).get("add") != ["NET_BIND_SERVICE"]:
        found.append("coredns: NET_BIND_SERVICE not added")
    if security.get("readOnlyRootFilesystem") is not True:
        found.append("coredns: root file system writable")
    pod_security = pod.get("securityContext") or {}
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    if pod_security.get("runAsNonRoot") is not True or not user:
        found.append("coredns: may run as root")
    get = container.get("livenessProbe", {}).get("httpGet", {})
    if (get.get("path"), get.get("port")) != ("/health", 8080):
        found.append("coredns: no liveness probe on the health plugin")
    get = container.get("readinessProbe", {}).get("httpGet", {})
    if (get.get("path"), get.get("port")) != ("/ready", 8181):
        found.append("coredns: no readiness probe on the ready plugin")
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    replicas = workload(objects)["spec"]["replicas"]
    if replicas > 1 and [b["spec"].get("maxUnavailable") for b in budgets] != [1]:
        found.append("coredns: no PodDisruptionBudget of maxUnavailable 1")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in terms):
        found.append("coredns: replicas not spread over nodes")
    return found


def test_coredns_is_hardened() -> None:
    objects = coredns()
    assert coredns_weaknesses(objects) == []
    corefile = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["Corefile"]
    # The probes' endpoints are the Corefile's plugins on their default ports (no address).
    assert re.search(r"^\s+health \{$", corefile, re.M)
    assert re.search(r"^\s+ready$", corefile, re.M)
    budget = next(o for o in objects if o["kind"] == "PodDisruptionBudget")
    labels = workload(objects)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert check_objects(objects, versions.default_kubernetes_version()) == []


def test_a_single_coredns_replica_gets_no_budget_that_would_block_drains() -> None:
    objects = coredns(replicas=1)
    assert "PodDisruptionBudget" not in [o["kind"] for o in objects]
    assert coredns_weaknesses(objects) == []


# --- kube-router ----------------------------------------------------------------------------


def kube_router_weaknesses(objects: list[dict[str, Any]]) -> list[str]:
    pod = pod_of(objects)
    found = weaknesses(pod, {"kube-router": NETWORK_CAPS})
    (agent,) = pod["containers"]
    if flag(agent, "health-addr") != "127.0.0.1":
        found.append("kube-router: health endpoint not on 127.0.0.1")
    if not loopback_probe(agent, "livenessProbe", "/healthz", int(flag(agent, "health-port") or 0)):
        found.append("kube-router: no liveness probe on its health endpoint")
    if pod.get("hostPID"):
        found.append("kube-router: host PID namespace")
    return found


def test_kube_router_is_hardened_as_far_as_it_allows() -> None:
    objects = kube_router()
    assert kube_router_weaknesses(objects) == []


# --- the checks are not vacuous -------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def container(objects: list[dict[str, Any]], index: int = 0, init: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = pod_of(objects)["initContainers" if init else "containers"][index]
    return found


def drop(mapping: dict[str, Any], *path: str) -> None:
    for key in path[:-1]:
        mapping = mapping[key]
    del mapping[path[-1]]


MUTATIONS: dict[
    str, tuple[Callable[[], list[dict[str, Any]]], Callable[..., list[str]], Mutation]
] = {
    "flannel escalation": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o), "securityContext", "allowPrivilegeEscalation"),
    ),
    "flannel drop ALL": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o), "securityContext", "capabilities", "drop"),
    ),
    "flannel SYS_ADMIN": (
        flannel,
        flannel_weaknesses,
        lambda o: container(o)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN"),
    ),
    "flannel seccomp": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(pod_of(o), "securityContext", "seccompProfile"),
    ),
    "flannel init securityContext": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o, 0, init=True), "securityContext"),
    ),
    "flannel init resources": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o, 1, init=True), "resources"),
    ),
    "flannel liveness": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o), "livenessProbe"),
    ),
    "flannel readiness": (
        flannel,
        flannel_weaknesses,
        lambda o: drop(container(o), "readinessProbe"),
    ),
    "flannel healthz on every address": (
        flannel,
        flannel_weaknesses,
        lambda o: container(o)["args"].remove("--healthz-ip=127.0.0.1"),
    ),
    "coredns read-only root": (
        coredns,
        coredns_weaknesses,
        lambda o: drop(container(o), "securityContext", "readOnlyRootFilesystem"),
    ),
    "coredns non-root": (
        coredns,
        coredns_weaknesses,
        lambda o: drop(pod_of(o), "securityContext", "runAsNonRoot"),
    ),
    "coredns NET_BIND_SERVICE": (
        coredns,
        coredns_weaknesses,
        lambda o: drop(container(o), "securityContext", "capabilities", "add"),
    ),
    "coredns readiness": (
        coredns,
        coredns_weaknesses,
        lambda o: drop(container(o), "readinessProbe"),
    ),
    "coredns budget": (
        coredns,
        coredns_weaknesses,
        lambda o: o.remove(next(x for x in o if x["kind"] == "PodDisruptionBudget")),
    ),
    "coredns anti-affinity": (coredns, coredns_weaknesses, lambda o: drop(pod_of(o), "affinity")),
    "kube-router privileged": (
        kube_router,
        kube_router_weaknesses,
        lambda o: container(o)["securityContext"].update(privileged=True),
    ),
    "kube-router memory limit": (
        kube_router,
        kube_router_weaknesses,
        lambda o: drop(container(o), "resources", "limits"),
    ),
    "kube-router liveness": (
        kube_router,
        kube_router_weaknesses,
        lambda o: drop(container(o), "livenessProbe"),
    ),
    "kube-router host PID": (
        kube_router,
        kube_router_weaknesses,
        lambda o: pod_of(o).update(hostPID=True),
    ),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_removing_a_hardening_property_is_noticed(case: str) -> None:
    render, check, mutate = MUTATIONS[case]
    objects = copy.deepcopy(render())
    assert check(objects) == []
    mutate(objects)
    assert check(objects) != [], case
