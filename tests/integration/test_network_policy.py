"""kube-router as the NetworkPolicy agent on a real LXD node, everything but what cannot run here.

kube-router needs the Kubernetes API, which cannot run on the project's machines (no
Kubernetes binaries, no registry for its image), so the agent never starts here; the e2e tier
runs it (tests/e2e/test_network_policy.py). What the node must give it can be checked: one
small lab (a single control plane: the cni role's node side is the same on every node, and
that node is also where the add-on is applied from) is provisioned with
`kubesmith provision --no-kubernetes-binaries` and `cni.networkPolicy: kube-router`, and the
test reads what site.yml left: the ipset tool, a kernel that takes the ipset types kube-router
creates and iptables' set match (checked again here, independently of the role), the add-on's
manifest where the control plane applies it from, nothing left behind by the role's check, no
change on a second run, and a failing check when the node cannot do what the agent needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubesmith import versions
from kubesmith.apps import check_objects
from kubesmith.local.lab import create_lab, destroy_lab
from tests.integration.conftest import REPO, LxdHost, kubesmith, unique_name
from tests.integration.test_cluster import Cluster

pytestmark = pytest.mark.integration

MANIFEST = "/etc/kubernetes/addons/kube-router.yaml"
#: What kube-router does on a node, in a set and chain of the test's own (removed after).
AGENT_LIKE = """
set -eu
ipset create kst-pods hash:ip timeout 0
ipset create kst-nets hash:net timeout 0
ipset add kst-pods 10.244.0.5
ipset add kst-nets 10.244.0.0/24
iptables -w -N KST-FW
iptables -w -A KST-FW -m set --match-set kst-pods src -m set ! --match-set kst-nets dst -j REJECT
iptables -w -S KST-FW
ipset test kst-pods 10.244.0.5
"""
CLEANUP = (
    "iptables -w -F KST-FW; iptables -w -X KST-FW; ipset destroy kst-pods; ipset destroy kst-nets"
)


def set_network_policy(inventory: Path, agent: str) -> None:
    data = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    data["all"]["vars"]["kubesmith_cluster"]["cni"] = {"networkPolicy": agent}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_the_node_side_of_kube_router_on_a_real_node(
    lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    name = unique_name()
    try:
        made = create_lab(
            name, stack=lxd_ready.stack, control_planes=1, workers=0, socket=lxd_ready.socket
        )
        inventory = made.inventory_path
        set_network_policy(inventory, "kube-router")
        result = kubesmith("provision", "--inventory", str(inventory), "--no-kubernetes-binaries")
        assert result.returncode == 0, result.stdout + result.stderr
        lab = Cluster(inventory, made.directory, result.stdout)
        (host,) = lab.hosts

        # The role installed the ipset tool and its check passed (else the run had failed).
        status = lab.run(host, "dpkg-query -W -f '${db:Status-Status}' ipset").stdout
        assert status == "installed"
        # The node does what the agent will, checked here apart from the role: both set
        # types with the timeout option, and a rule matching them.
        try:
            agent_like = lab.run(host, AGENT_LIKE)
        finally:
            lab.run(host, CLEANUP, check=False)
        assert "-m set --match-set kst-pods src -m set ! --match-set kst-nets dst" in (
            agent_like.stdout
        )
        # The role's own check left nothing behind.
        assert "KUBESMITH-SETCHECK" not in lab.run(host, "iptables -w -S").stdout
        assert "KUBESMITH-SETCHECK" not in lab.run(host, "ipset list -name").stdout

        # The add-on's manifest, readable by root only, valid for the cluster's minor.
        found = lab.snapshot(host, [MANIFEST])
        assert (found[MANIFEST]["mode"], found[MANIFEST]["owner"]) == ("600", "root")
        objects = yaml.safe_load(found[MANIFEST]["text"])["items"]
        assert check_objects(objects, lab.vars["kubesmith_cluster"]["kubernetesVersion"]) == []
        (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
        (agent,) = daemonset["spec"]["template"]["spec"]["containers"]
        assert agent["image"] == versions.image("kube_router")
        service_cidr = lab.vars["kubesmith_cluster"].get("serviceCidr", "10.96.0.0/12")
        assert f"--service-cluster-ip-range={service_cidr}" in agent["args"]

        # A second run of the pod network's plays (tagged cni) changes nothing.
        again = kubesmith(
            "provision", "--inventory", str(inventory), "--no-kubernetes-binaries", "--tags", "cni"
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 hosts provisioned, 0 changes" in again.stdout, again.stdout

        # A node whose ipsets do not work (an ipset that fails as a kernel without them makes
        # it) stops the run at the check, naming the host.
        lab.run(
            host,
            "mv /usr/sbin/ipset /usr/sbin/ipset.real && printf '%s\\n' '#!/bin/sh' "
            "'echo \"ipset: Kernel error received: set type not supported\" >&2' 'exit 1' "
            "> /usr/sbin/ipset && chmod 0755 /usr/sbin/ipset",
        )
        try:
            broken = kubesmith(
                "provision",
                "--inventory",
                str(inventory),
                "--no-kubernetes-binaries",
                "--tags",
                "cni",
            )
        finally:
            lab.run(host, "mv /usr/sbin/ipset.real /usr/sbin/ipset", check=False)
        output = broken.stdout + broken.stderr
        assert broken.returncode != 0, output
        assert host in output
        assert "check that the kernel takes ipsets" in output
    finally:
        destroy_lab(name, socket=lxd_ready.socket)
