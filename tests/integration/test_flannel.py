"""flannel chosen for a real LXD node, everything but what cannot run here.

Neither the Kubernetes binaries nor flannel's images can be obtained on the project's
machines, so flannel never starts here (the e2e tier runs it). One small lab (a single
control plane) is provisioned with `kubesmith provision --no-kubernetes-binaries` and
`cni.plugin: flannel` in the inventory's spec, and the test reads what site.yml left on the
node: no bridge
network of kubesmith's, the flannel add-on's manifest where the control plane applies it
from, and a controller-manager that hands out the nodes' pod ranges. Then both refusals of a
pod network switch: the controller's (from its record) and the node's (when that record is
gone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubesmith.apps import check_objects
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision import flags
from kubesmith.state import records
from tests.integration.conftest import REPO, LxdHost, kubesmith, unique_name
from tests.integration.test_cluster import Cluster

pytestmark = pytest.mark.integration

BRIDGE_FILES = (
    "/etc/cni/net.d/10-kubesmith.conflist",
    "/etc/kubesmith/pod-network.env",
    "/etc/kubesmith/pod-routes",
    "/usr/local/sbin/kubesmith-pod-network",
    "/etc/systemd/system/kubesmith-pod-network.service",
)
MANIFEST = "/etc/kubernetes/addons/flannel.yaml"
CONTROLLER_MANAGER = "/etc/systemd/system/kube-controller-manager.service"


def set_plugin(inventory: Path, plugin: str) -> None:
    data = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    data["all"]["vars"]["kubesmith_cluster"]["cni"] = {"plugin": plugin}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_flannel_on_a_real_node_and_the_refused_switch(
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
        set_plugin(inventory, "flannel")
        result = kubesmith("provision", "--inventory", str(inventory), "--no-kubernetes-binaries")
        assert result.returncode == 0, result.stdout + result.stderr
        lab = Cluster(inventory, made.directory, result.stdout)
        (host,) = lab.hosts
        pod_cidr = lab.vars["kubesmith_cluster"]["podCidr"]

        found = lab.snapshot(host, [*BRIDGE_FILES, MANIFEST, CONTROLLER_MANAGER])
        # No bridge network of kubesmith's: no configuration, routes, reconciler or its unit.
        assert [p for p in BRIDGE_FILES if p in found] == []
        routes = lab.run(host, "ip -4 route show proto 245").stdout
        assert routes.strip() == ""
        masquerade = lab.run(host, "iptables -t nat -S POSTROUTING", check=False).stdout
        assert "kubesmith-pod-masquerade" not in masquerade

        # The add-on's manifest, readable by root only, valid for the cluster's minor.
        assert (found[MANIFEST]["mode"], found[MANIFEST]["owner"]) == ("600", "root")
        manifest = yaml.safe_load(found[MANIFEST]["text"])
        objects = manifest["items"]
        assert check_objects(objects, lab.vars["kubesmith_cluster"]["kubernetesVersion"]) == []
        (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
        net_conf = json.loads(config["data"]["net-conf.json"])
        assert net_conf == {"Network": pod_cidr, "Backend": {"Type": "vxlan"}}

        # The controller-manager gives the node its range, as the unit on the node says.
        _, cm_flags = flags.parse_exec_start(found[CONTROLLER_MANAGER]["text"])
        assert cm_flags["allocate-node-cidrs"] == "true"
        assert cm_flags["cluster-cidr"] == pod_cidr
        assert cm_flags["node-cidr-mask-size"] == "24"

        # A second run of the pod network's roles (both plays tagged cni) changes nothing.
        again = kubesmith(
            "provision", "--inventory", str(inventory), "--no-kubernetes-binaries", "--tags", "cni"
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 hosts provisioned, 0 changes" in again.stdout, again.stdout

        # Switching back is refused by the controller before any node is touched.
        set_plugin(inventory, "bridge")
        refused = kubesmith("provision", "--inventory", str(inventory), "--no-kubernetes-binaries")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "kubesmith:cluster.cni: the cluster was provisioned with flannel vxlan" in (
            refused.stderr
        )
        assert "PLAY" not in refused.stdout + refused.stderr

        # Without the controller's record, the node refuses: it carries flannel's CNI
        # configuration (a stand-in for what flannel's install-cni container writes).
        for record in (records.POD_NETWORK_FILE, records.VERSION_FILE):
            (made.directory / record).unlink()
        lab.run(host, "echo '{}' > /etc/cni/net.d/10-flannel.conflist")
        node = kubesmith(
            "provision", "--inventory", str(inventory), "--no-kubernetes-binaries", "--tags", "cni"
        )
        output = node.stdout + node.stderr
        assert node.returncode != 0, output
        assert f"{host} has /etc/cni/net.d/10-flannel.conflist" in output
        assert "kubesmith does not switch the pod network" in output
        assert "10-kubesmith.conflist" not in lab.run(host, "ls /etc/cni/net.d").stdout
    finally:
        destroy_lab(name, socket=lxd_ready.socket)
