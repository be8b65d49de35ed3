"""E2E (`make e2e`, never run on the project's machines): NetworkPolicy enforced by kube-router.

A 1+1 lab with the bridge CNI and `kubesmith:cluster.cni.networkPolicy: kube-router` is
provisioned with every binary; then, in a namespace of the test's own: a client pod reaches
a server pod over HTTP, a default-deny ingress policy stops exactly that traffic, and deleting
the policy lets it through again. This is the proof that the option enforces what docs/apps.md
promises; the project's machines lack the Kubernetes binaries and registry access, so there
it is skipped (tests/e2e/conftest.py) and the node side is what the integration tier checks
(tests/integration/test_network_policy.py). The agent's and the pods' images come from their
registries: the test needs KUBESMITH_E2E_ONLINE=1.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kubesmith import versions
from kubesmith.downloads import download, kube_binaries
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision.target import artifact_cache_dir
from tests.e2e.conftest import binaries_source
from tests.e2e.test_cluster_e2e import REPO, kubesmith
from tests.integration.conftest import LxdHost, unique_name

NAMESPACE = "kubesmith-e2e-netpol"
#: The smoke test's image: it serves HTTP on port 80 and ships curl.
IMAGE = versions.image("smoke")
DENY_ALL_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all-ingress", "namespace": NAMESPACE},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


def pod(name: str, command: list[str] | None = None) -> dict[str, object]:
    container: dict[str, object] = {"name": name, "image": IMAGE}
    if command:
        container["command"] = command
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"containers": [container]},
    }


def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(3)


def test_a_default_deny_policy_blocks_traffic_that_flows_without_it(
    lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if binaries_source() != "online":
        pytest.skip("kube-router's image comes from a registry: needs KUBESMITH_E2E_ONLINE=1")
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    name = unique_name()
    lab = create_lab(
        name, stack=lxd_ready.stack, socket=lxd_ready.socket, control_planes=1, workers=1
    )
    try:
        data = yaml.safe_load(lab.inventory_path.read_text(encoding="utf-8"))
        data["all"]["vars"]["kubesmith_cluster"]["cni"] = {
            "plugin": "bridge",
            "networkPolicy": "kube-router",
        }
        lab.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        inventory = str(lab.inventory_path)
        kubesmith("provision", "--inventory", inventory, "--source", "release")

        config = tmp_path / "admin.conf"
        kubesmith("kubeconfig", "--inventory", inventory, "-o", str(config))
        version = data["all"]["vars"]["kubesmith_cluster"]["kubernetesVersion"]
        tarball = download.server_tarball(version, "amd64", artifact_cache_dir())
        binary = str(kube_binaries.bin_dir(tarball) / "kubectl")

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [binary, "--kubeconfig", str(config), *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )

        def apply(obj: dict[str, object]) -> None:
            result = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj))
            assert result.returncode == 0, result.stderr

        # The agent runs on both nodes.
        rollout = kubectl("-n", "kube-router", "rollout", "status", "daemonset/kube-router")
        assert rollout.returncode == 0, rollout.stderr

        apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        apply(pod("server"))
        apply(pod("client", ["sleep", "infinity"]))
        for name_ in ("server", "client"):
            ready = kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{name_}")
            assert ready.returncode == 0, ready.stderr
        address = kubectl(
            "-n", NAMESPACE, "get", "pod", "server", "-o", "jsonpath={.status.podIP}"
        ).stdout

        def reaches() -> bool:
            probe = kubectl(
                "-n", NAMESPACE, "exec", "client", "--",
                "curl", "-s", "-o", "/dev/null", "-m", "3", f"http://{address}/",
            )  # fmt: skip
            return probe.returncode == 0

        # Without a policy the traffic flows ...
        eventually(reaches, 30, "client reaches server without a policy")
        # ... a default-deny ingress policy stops it ...
        apply(DENY_ALL_INGRESS)
        eventually(lambda: not reaches(), 60, "the default-deny policy blocks the client")
        # ... and deleting the policy lets it through again.
        deleted = kubectl("-n", NAMESPACE, "delete", "networkpolicy", "deny-all-ingress")
        assert deleted.returncode == 0, deleted.stderr
        eventually(reaches, 60, "client reaches server once the policy is gone")
    finally:
        destroy_lab(name, socket=lxd_ready.socket)
