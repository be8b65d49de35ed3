"""The shipped workloads against the Pod Security Standards kube-apiserver enforces.

`pod_security_violations` is the Standards' "baseline" and "restricted" profiles
(kubernetes.io/docs/concepts/security/pod-security-standards, policy version 1.35) written
as checks of a pod spec, so a test can say which level a rendered workload meets without a
running apiserver (the e2e tier has one: tests/e2e). Every app under templates/apps/ in
every environment must meet "restricted" (their namespaces enforce it), so an app added
later that breaks it fails here; CoreDNS (kube-system, no label: the cluster default, which
a stack may raise to restricted) meets restricted too. flannel (kube-flannel, labelled
privileged) and the smoke test's nginx (kubesmith-smoke, labelled baseline) need their
namespaces' labels, and the checks say why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml

from kubesmith.apps import render_app
from kubesmith.apps.render import available, environments
from kubesmith.provision.kubernetes import coredns_manifests, flannel_manifests
from tests.clusterlab import local_spec, write_inventory
from tests.conftest import REPO

#: Capabilities a baseline container may add (the Standards' list).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
     "projected", "secret"}
)  # fmt: skip
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "Pod", "CronJob"}


def pod_spec_of(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    if workload["kind"] == "Pod":
        return workload["spec"]
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def containers_of(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def _baseline(pod: Mapping[str, Any]) -> Iterator[str]:
    pod_context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            yield f"{key} is true"
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            yield f"volume {volume['name']} is a hostPath"
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            yield f"sysctl {sysctl['name']} is not a safe sysctl"
    contexts = [("pod", pod_context)]
    for container in containers_of(pod):
        name = container["name"]
        context = container.get("securityContext") or {}
        contexts.append((name, context))
        if context.get("privileged"):
            yield f"{name}: privileged"
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            yield f"{name}: adds capabilities {sorted(added - BASELINE_CAPABILITIES)}"
        if any(port.get("hostPort") for port in container.get("ports") or []):
            yield f"{name}: uses a hostPort"
        if context.get("procMount", "Default") != "Default":
            yield f"{name}: procMount {context['procMount']}"
    for name, context in contexts:
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{name}: hostProcess"
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"{name}: seccomp Unconfined"
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            yield f"{name}: AppArmor Unconfined"
        selinux = context.get("seLinuxOptions") or {}
        if (
            selinux.get("type", "") not in SELINUX_TYPES
            or selinux.get("user")
            or selinux.get("role")
        ):
            yield f"{name}: seLinuxOptions {selinux}"


def _restricted(pod: Mapping[str, Any]) -> Iterator[str]:
    pod_context = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volume {volume['name']} is a {sorted(kinds)[0]} volume"
    if pod_context.get("runAsUser") == 0:
        yield "pod: runAsUser 0"
    for container in containers_of(pod):
        name = container["name"]
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"{name}: allowPrivilegeEscalation is not false"
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            yield f"{name}: runAsNonRoot is not true"
        if context.get("runAsUser") == 0:
            yield f"{name}: runAsUser 0"
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{name}: seccomp profile is {seccomp or 'unset'}, not RuntimeDefault/Localhost"
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{name}: does not drop ALL capabilities"
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            yield f"{name}: adds capabilities beyond NET_BIND_SERVICE"


def pod_security_violations(pod: Mapping[str, Any], level: str) -> list[str]:
    """What keeps ``pod`` (a pod spec) from meeting ``level`` of the Pod Security Standards."""
    if level == "privileged":
        return []
    found = list(_baseline(pod))
    if level == "restricted":
        found += _restricted(pod)
    return found


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


APP_CASES = [(app, env) for app in available("apps") for env in environments(app)]


def test_there_are_apps_to_check() -> None:
    assert APP_CASES


@pytest.mark.parametrize(("app", "env"), APP_CASES)
def test_every_shipped_app_meets_restricted_in_a_namespace_that_enforces_it(
    app: str, env: str
) -> None:
    objects = render_app(app, env)
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    found = workloads(objects)
    assert found, f"{app} in {env} renders no workload"
    for workload in found:
        assert pod_security_violations(pod_spec_of(workload), "restricted") == [], workload["kind"]


def hello_pod() -> dict[str, Any]:
    (workload, *_) = workloads(render_app("hello", "dev"))
    return copy.deepcopy(dict(pod_spec_of(workload)))


def _first(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["containers"][0]
    return container


#: One change per rule of the restricted profile; each must be caught.
BREAKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "root user": lambda pod: pod["securityContext"].update(runAsUser=0),
    "runAsNonRoot false": lambda pod: _first(pod)["securityContext"].update(runAsNonRoot=False),
    "privilege escalation": lambda pod: _first(pod)["securityContext"].update(
        allowPrivilegeEscalation=True
    ),
    "privileged": lambda pod: _first(pod)["securityContext"].update(privileged=True),
    "seccomp unset": lambda pod: pod["securityContext"].pop("seccompProfile"),
    "seccomp unconfined": lambda pod: pod["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "capabilities kept": lambda pod: _first(pod)["securityContext"].pop("capabilities"),
    "NET_RAW added": lambda pod: _first(pod)["securityContext"]["capabilities"].update(
        add=["NET_RAW"]
    ),
    "host network": lambda pod: pod.update(hostNetwork=True),
    "host PID": lambda pod: pod.update(hostPID=True),
    "host IPC": lambda pod: pod.update(hostIPC=True),
    "hostPath volume": lambda pod: pod.setdefault("volumes", []).append(
        {"name": "host", "hostPath": {"path": "/"}}
    ),
    "hostPort": lambda pod: _first(pod)["ports"][0].update(hostPort=8080),
    "nfs volume": lambda pod: pod.setdefault("volumes", []).append(
        {"name": "nfs", "nfs": {"server": "nfs.example", "path": "/"}}
    ),
    "unsafe sysctl": lambda pod: pod["securityContext"].update(
        sysctls=[{"name": "net.ipv4.ip_forward", "value": "1"}]
    ),
    "init container as root": lambda pod: pod.update(
        initContainers=[{"name": "init", "image": "x", "securityContext": {"runAsUser": 0}}]
    ),
}


def test_the_hello_app_is_a_fair_baseline_for_the_breaks() -> None:
    assert pod_security_violations(hello_pod(), "restricted") == []


@pytest.mark.parametrize("rule", list(BREAKS))
def test_an_app_that_breaks_a_rule_of_restricted_is_caught(rule: str) -> None:
    pod = hello_pod()
    BREAKS[rule](pod)
    assert pod_security_violations(pod, "restricted") != []


def test_adding_net_bind_service_alone_stays_restricted() -> None:
    pod = hello_pod()
    _first(pod)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert pod_security_violations(pod, "restricted") == []


def test_coredns_meets_restricted_so_kube_system_needs_no_exemption(tmp_path: Any) -> None:
    inventory = write_inventory(tmp_path, local_spec(1, 0))
    objects = coredns_manifests(inventory.cluster)
    (deployment,) = workloads(objects)
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert pod_security_violations(pod_spec_of(deployment), "restricted") == []
    # No add-on relabels kube-system: it keeps the cluster's levels.
    assert not [o for o in objects if o["kind"] == "Namespace"]


def test_flannel_needs_its_privileged_namespace(tmp_path: Any) -> None:
    inventory = write_inventory(tmp_path, local_spec(1, 0, cni={"plugin": "flannel"}))
    objects = flannel_manifests(inventory.cluster, "/usr/lib/cni")
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (daemonset,) = workloads(objects)
    assert daemonset["metadata"]["namespace"] == namespace["metadata"]["name"]
    problems = pod_security_violations(pod_spec_of(daemonset), "baseline")
    # Host network and host paths (CNI configuration and plugin directories, run/flannel).
    assert "hostNetwork is true" in problems
    assert any("hostPath" in p for p in problems)


def test_the_smoke_test_needs_its_baseline_namespace() -> None:
    (play,) = yaml.safe_load((REPO / "playbooks" / "smoke.yml").read_text())
    labels = play["vars"]["__smoke_pod_security"]
    assert {labels[f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "warn", "audit")} == {
        "baseline"
    }
    manifest = play["vars"]["__smoke_manifest"]["items"]
    (namespace,) = [o for o in manifest if o["kind"] == "Namespace"]
    assert "__smoke_pod_security" in namespace["metadata"]["labels"]
    (deployment,) = workloads(manifest)
    pod = pod_spec_of(deployment)
    # The stock nginx image runs as root on port 80: baseline, never restricted.
    assert pod_security_violations(pod, "baseline") == []
    assert pod_security_violations(pod, "restricted") != []
