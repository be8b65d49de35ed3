"""The cluster-wide settings the Kubernetes roles need, read from the inventory's all.vars.

Stacks and labs write the same variables (kubesmith.provision.inventory.cluster_vars), so everything
here works for `-s STACK` and `--inventory FILE` alike. A missing or malformed variable is
reported as one line naming the inventory file and the variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlsplit

from kubesmith.errors import UserError
from kubesmith.provision.inventory_file import Inventory
from kubesmith.spec import CniPlugin, FlannelBackend

#: The DNS domain of Services; kubelet, CoreDNS and the apiserver certificate agree on it.
CLUSTER_DOMAIN = "cluster.local"
#: Inventory variable that turns the Kubernetes binaries off (configuration-only runs).
BINARIES_VAR = "kubesmith_kubernetes_binaries"
#: The pod network choice (kubesmith:cluster.cni): variable -> (allowed values, the value an
#: inventory written before the choice existed means).
POD_NETWORK_VARS: dict[str, tuple[tuple[str, ...], str]] = {
    "kubesmith_cni_plugin": (get_args(CniPlugin), "bridge"),
    "kubesmith_flannel_backend": (get_args(FlannelBackend), "vxlan"),
}


@dataclass(frozen=True)
class ClusterFacts:
    name: str
    backend: str
    kubernetes_version: str
    pod_cidr: str
    service_cidr: str
    cluster_dns: str
    api_service_address: str
    api_endpoint: str
    cni_plugin: str = "bridge"
    flannel_backend: str = "vxlan"

    @property
    def minor(self) -> str:
        return ".".join(self.kubernetes_version.split(".")[:2])

    @property
    def api_host(self) -> str:
        return urlsplit(self.api_endpoint).hostname or ""

    @property
    def api_endpoint_is_loopback(self) -> bool:
        """True when every node reaches the API through a proxy on its own loopback."""
        try:
            return ipaddress.ip_address(self.api_host).is_loopback
        except ValueError:
            return self.api_host == "localhost"

    def uses_api_proxy(self, control_planes: int) -> bool:
        """Whether nodes without an apiserver reach the API through the local HA proxy
        (api_proxy role): several control planes behind an endpoint on the loopback."""
        return control_planes > 1 and self.api_endpoint_is_loopback

    def service_names(self) -> tuple[str, ...]:
        """DNS names of the in-cluster `kubernetes` Service (apiserver certificate SANs)."""
        return (
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
        )


def _require(all_vars: Mapping[str, Any], key: str, where: str) -> str:
    value = all_vars.get(key)
    if value in (None, ""):
        raise UserError(f"{where}: all.vars has no {key}")
    return str(value)


def _choice(all_vars: Mapping[str, Any], key: str, where: str) -> str:
    allowed, default = POD_NETWORK_VARS[key]
    value = all_vars.get(key, default)
    if value not in allowed:
        raise UserError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def cluster_facts(inventory: Inventory) -> ClusterFacts:
    where = str(inventory.path)
    all_vars = inventory.all_vars
    facts = ClusterFacts(
        name=_require(all_vars, "kubesmith_cluster_name", where),
        backend=_require(all_vars, "kubesmith_backend", where),
        kubernetes_version=_require(all_vars, "kubesmith_kubernetes_version", where),
        pod_cidr=_require(all_vars, "kubesmith_pod_cidr", where),
        service_cidr=_require(all_vars, "kubesmith_service_cidr", where),
        cluster_dns=_require(all_vars, "kubesmith_cluster_dns", where),
        api_service_address=_require(all_vars, "kubesmith_api_service_address", where),
        api_endpoint=_require(all_vars, "kubesmith_api_endpoint", where),
        cni_plugin=_choice(all_vars, "kubesmith_cni_plugin", where),
        flannel_backend=_choice(all_vars, "kubesmith_flannel_backend", where),
    )
    for key, value in (
        ("kubesmith_pod_cidr", facts.pod_cidr),
        ("kubesmith_service_cidr", facts.service_cidr),
    ):
        try:
            ipaddress.IPv4Network(value)
        except ValueError:
            raise UserError(f"{where}: {key} {value!r} is not an IPv4 CIDR") from None
    parts = urlsplit(facts.api_endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise UserError(
            f"{where}: kubesmith_api_endpoint {facts.api_endpoint!r} is not an https:// URL"
        )
    return facts


def binaries_enabled(inventory: Inventory, extravars: Mapping[str, Any]) -> bool:
    """Whether this run installs and starts the Kubernetes binaries (the default)."""
    value = extravars.get(BINARIES_VAR, inventory.all_vars.get(BINARIES_VAR, True))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
