"""A cluster as provisioning sees it: the typed spec plus what creating its machines decided.

The spec (kubesmith.spec.ClusterSpec) is the only description of a cluster. The inventory
carries it unchanged under ``kubesmith_cluster`` (Pulumi stacks and labs alike), together with
the one thing only the machines decide: the API endpoint (a load balancer, the only control
plane, or the local HA proxy). Every fact derived from the two lives here, each in exactly
one function, and every consumer (the playbook variables, the PKI, the admin kubeconfig, the
Pulumi program) asks here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubesmith.spec import ClusterSpec

#: The DNS domain of Services; kubelet, CoreDNS and the apiserver certificate agree on it.
CLUSTER_DOMAIN = "cluster.local"
#: The apiserver's port on every control plane (and on the load balancer or local proxy).
API_PORT = 6443
#: The address every node's local HA proxy listens on (api_proxy role).
LOCAL_PROXY_ADDRESS = "127.0.0.1"


def uses_local_api_proxy(spec: ClusterSpec) -> bool:
    """Whether nodes reach the API through a proxy on their own loopback (api_proxy role).

    HA clusters on LXD have no load balancer: every node without an apiserver runs a local
    TCP proxy in front of all of them, and the cluster's API endpoint is that proxy.
    """
    return spec.ha and spec.backend == "lxd"


@dataclass(frozen=True)
class Cluster:
    spec: ClusterSpec
    api_endpoint: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def api_host(self) -> str:
        return urlsplit(self.api_endpoint).hostname or ""

    @property
    def api_endpoint_is_loopback(self) -> bool:
        """True when the endpoint names the node's own loopback (the local HA proxy)."""
        try:
            return ipaddress.ip_address(self.api_host).is_loopback
        except ValueError:
            return self.api_host == "localhost"

    @property
    def uses_local_api_proxy(self) -> bool:
        return uses_local_api_proxy(self.spec)

    @property
    def pod_network_label(self) -> str:
        """The pod network as recorded for a provisioned cluster ("bridge", "flannel vxlan")."""
        if self.spec.cni.plugin == "flannel":
            return f"flannel {self.spec.cni.backend}"
        return self.spec.cni.plugin

    def service_names(self) -> tuple[str, ...]:
        """DNS names of the in-cluster `kubernetes` Service (apiserver certificate SANs)."""
        return (
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
        )
