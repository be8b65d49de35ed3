"""Build the Ansible inventory from the node shape and the cluster spec.

The same builder serves the Pulumi stack output (`inventory`), the lab harness and the
provisioning glue, so a cluster provisioned from a lab and one from `pulumi up` see the same
groups and variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kubesmith.nodes import Node
from kubesmith.spec import ClusterSpec

API_PORT = 6443
GROUPS = ("etcd", "kube_control_plane", "kube_node", "k8s_cluster")


def api_endpoint(spec: ClusterSpec, nodes: Sequence[Node], load_balancer: str | None = None) -> str:
    """The URL kubeconfigs use: the load balancer when HA, else the only control plane."""
    if load_balancer:
        return f"https://{load_balancer}:{API_PORT}"
    planes = [n for n in nodes if n.role == "control_plane"]
    if not planes:
        raise ValueError("no control-plane node in the node list")
    if spec.ha and spec.backend == "lxd":
        # Every node runs a local proxy in front of all apiservers (see the control_plane role).
        return f"https://127.0.0.1:{API_PORT}"
    return f"https://{planes[0].private_address}:{API_PORT}"


def cluster_vars(spec: ClusterSpec, endpoint: str) -> dict[str, Any]:
    """Cluster-wide variables the roles read; prefixed so they never clash with role defaults."""
    return {
        "kubesmith_cluster_name": spec.name,
        "kubesmith_backend": spec.backend,
        "kubesmith_production": spec.production,
        "kubesmith_kubernetes_version": spec.kubernetes_version,
        "kubesmith_pod_cidr": spec.pod_cidr,
        "kubesmith_cni_plugin": spec.cni.plugin,
        "kubesmith_flannel_backend": spec.cni.backend,
        "kubesmith_service_cidr": spec.service_cidr,
        "kubesmith_cluster_dns": spec.dns_address,
        "kubesmith_api_service_address": spec.api_service_address,
        "kubesmith_api_endpoint": endpoint,
    }


def build_inventory(
    spec: ClusterSpec,
    nodes: Sequence[Node],
    *,
    endpoint: str,
    ssh_private_key_file: Path | None = None,
    known_hosts_file: Path | None = None,
) -> dict[str, Any]:
    if len({n.name for n in nodes}) != len(nodes):
        raise ValueError("node names must be unique")
    planes = [n for n in nodes if n.role == "control_plane"]
    workers = [n for n in nodes if n.role == "worker"]
    # Without workers the control planes run pods too, as on a single-node lab.
    schedulable = workers or planes

    hosts: dict[str, dict[str, Any]] = {}
    for node in nodes:
        hostvars: dict[str, Any] = {
            "ansible_host": node.address,
            "ansible_user": node.ssh_user,
            "kubesmith_node_ip": node.private_address,
            "kubesmith_node_role": node.role,
        }
        if node.ssh_user != "root":
            hostvars["ansible_become"] = True
        hosts[node.name] = hostvars

    all_vars = cluster_vars(spec, endpoint)
    if ssh_private_key_file is not None:
        all_vars["ansible_ssh_private_key_file"] = str(ssh_private_key_file)
    if known_hosts_file is not None:
        # Pinned host keys, learnt on first contact (accept-new), checked on every later one.
        all_vars["ansible_ssh_common_args"] = (
            f"-o UserKnownHostsFile={known_hosts_file} -o StrictHostKeyChecking=accept-new"
        )

    # Empty mappings, never nulls: Pulumi drops None values when it serialises resource
    # inputs, which would empty every group on its way to the Provisioning resource.
    def group(members: Sequence[Node]) -> dict[str, Any]:
        return {"hosts": {n.name: {} for n in members}}

    return {
        "all": {
            "vars": all_vars,
            "hosts": hosts,
            "children": {
                "etcd": group(planes),
                "kube_control_plane": group(planes),
                "kube_node": group(schedulable),
                "k8s_cluster": {"children": {"kube_control_plane": {}, "kube_node": {}}},
            },
        }
    }


def dump_inventory(inventory: dict[str, Any]) -> str:
    return yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)
