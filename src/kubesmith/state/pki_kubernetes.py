"""The Kubernetes part of the cluster PKI, on top of kubesmith.state.pki.

The etcd CA and certificates come from ``Pki``; this adds, with the same rules (created once,
reissued with the same key only when names change, the chain breaks or expiry is near):

    front-proxy-ca.{crt,key}              CA of the aggregation layer
    sa.key sa.pub                         service-account token signing key (never reissued)
    nodes/<node>/<path>.{crt,key}         the leaves below, as kubeadm names them on the node
    controller/admin.{crt,key}            the controller's own admin client certificate

Control-plane leaves: apiserver (serving; node names plus the `kubernetes` Service names, its
ClusterIP and the API endpoint's host), apiserver-kubelet-client, front-proxy-client, and the
client certificates behind the controller-manager, scheduler, admin and super-admin
kubeconfigs. Every Kubernetes node: kubelet-client (system:node:<name>, the Node authorizer's
identity), kubelet-server (what the apiserver verifies with --kubelet-certificate-authority)
and kube-proxy.

Who is who: super-admin is in system:masters (never revocable by RBAC, so it stays on the
control planes and only bootstraps RBAC); admin is in kubesmith:cluster-admins, bound to
cluster-admin by the control_plane role, and is what people and the smoke test use.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kubesmith.cluster import Cluster
from kubesmith.state.files import atomic_write

# The private file helpers are shared on purpose: one implementation of "0600, atomic, never
# wider" and of the key checks for the whole PKI.
from kubesmith.state.pki import (
    CAS,
    CaProfile,
    LeafProfile,
    NodeFile,
    NodeIdentity,
    Pki,
    PkiReport,
    load_key,
    write_key,
)

CONTROL_PLANE = frozenset({"kube_control_plane"})
NODES = frozenset({"k8s_cluster"})
#: The controller (where kubesmith runs) as a pseudo-node; "_" keeps it apart from any real
#: node name (Kubernetes node names are DNS-1123 and cannot hold one).
CONTROLLER = NodeIdentity("_controller", frozenset({"controller"}), ())
#: RBAC group of admin certificates; the control_plane role binds it to cluster-admin.
ADMINS_GROUP = "kubesmith:cluster-admins"

FRONT_PROXY_CA = CaProfile("front-proxy-ca", "front-proxy-ca")
KUBERNETES_CAS: tuple[CaProfile, ...] = (FRONT_PROXY_CA,)

APISERVER = LeafProfile(
    "apiserver", "ca", "kube-apiserver", CONTROL_PLANE, server=True, node_sans=True
)
ADMIN = LeafProfile(
    "admin", "ca", "kubesmith-admin", CONTROL_PLANE | CONTROLLER.groups, client=True,
    organization=ADMINS_GROUP,
)  # fmt: skip
#: The apiserver towards kubelets; the rbac add-on grants this user the kubelet API.
APISERVER_KUBELET_CLIENT = LeafProfile(
    "apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", CONTROL_PLANE, client=True
)
KUBERNETES_LEAVES: tuple[LeafProfile, ...] = (
    APISERVER,
    APISERVER_KUBELET_CLIENT,
    LeafProfile("front-proxy-client", "front-proxy-ca", "front-proxy-client",
                CONTROL_PLANE, client=True),
    LeafProfile("controller-manager", "ca", "system:kube-controller-manager",
                CONTROL_PLANE, client=True),
    LeafProfile("scheduler", "ca", "system:kube-scheduler", CONTROL_PLANE, client=True),
    LeafProfile("super-admin", "ca", "kubernetes-super-admin", CONTROL_PLANE, client=True,
                organization="system:masters"),
    ADMIN,
    LeafProfile("kubelet-client", "ca", "system:node:{node}", NODES, client=True,
                organization="system:nodes"),
    LeafProfile("kubelet-server", "ca", "{node}", NODES, server=True, node_sans=True),
    LeafProfile("kube-proxy", "ca", "system:kube-proxy", NODES, client=True),
)  # fmt: skip

SERVICE_ACCOUNT_KEY = "sa.key"
SERVICE_ACCOUNT_PUB = "sa.pub"
#: Files of the control planes that are not leaves: the front-proxy trust anchor, the SA keys.
_CP_FILES = (
    (f"{FRONT_PROXY_CA.path}.crt", "0644"),
    (SERVICE_ACCOUNT_KEY, "0600"),
    (SERVICE_ACCOUNT_PUB, "0644"),
)


def apiserver_identity(node: NodeIdentity, cluster: Cluster) -> NodeIdentity:
    """``node`` plus the names clients use for the API: the Service's and the endpoint's."""
    addresses = list(node.addresses)
    names = list(node.dns_names) + list(cluster.service_names())
    for value in (cluster.spec.api_service_address, cluster.api_host):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            names.append(value)
            continue
        if address not in addresses:
            addresses.append(address)
    return dataclasses.replace(
        node,
        addresses=tuple(addresses),
        dns_names=tuple(dict.fromkeys(n for n in names if n != node.name)),
    )


class KubernetesPki(Pki):
    """The whole cluster PKI: ``Pki``'s etcd part plus the Kubernetes CAs, leaves and keys."""

    def __init__(self, directory: Path, cluster: Cluster) -> None:
        super().__init__(directory)
        self.cluster = cluster

    def ensure(self, nodes: Sequence[NodeIdentity], *, now: dt.datetime | None = None) -> PkiReport:
        now = now or dt.datetime.now(dt.UTC)
        report = super().ensure(nodes, now=now)
        cas = {profile.path: self._ensure_ca(profile, now, report) for profile in CAS}
        cas.update({p.path: self._ensure_ca(p, now, report) for p in KUBERNETES_CAS})
        for node in [*nodes, CONTROLLER]:
            for leaf in KUBERNETES_LEAVES:
                if leaf.groups & node.groups:
                    self._ensure_leaf(self._identity(node, leaf), leaf, cas[leaf.ca], now, report)
        self._ensure_service_account_key(report)
        return report

    def node_files(self, node: NodeIdentity) -> list[NodeFile]:
        files = super().node_files(node)
        if node.groups & CONTROL_PLANE:
            files += [NodeFile(self.directory / name, name, mode) for name, mode in _CP_FILES]
        for leaf in KUBERNETES_LEAVES:
            if leaf.groups & node.groups:
                base = self._leaf_base(node.name, leaf)
                files.append(NodeFile(base.with_suffix(".crt"), f"{leaf.path}.crt", "0644"))
                files.append(NodeFile(base.with_suffix(".key"), f"{leaf.path}.key", "0600"))
        return files

    def controller_admin(self) -> tuple[Path, Path]:
        """The controller's admin certificate and key (after ``ensure``)."""
        base = self._leaf_base(CONTROLLER.name, ADMIN)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    # --- internals ----------------------------------------------------------------------

    def _leaf_base(self, node: str, leaf: LeafProfile) -> Path:
        if node == CONTROLLER.name:
            return self.directory / "controller" / leaf.path
        return super()._leaf_base(node, leaf)

    def _identity(self, node: NodeIdentity, leaf: LeafProfile) -> NodeIdentity:
        if leaf is APISERVER:
            # The apiserver's SANs are the node's plus the cluster's: reuse node_sans for both.
            return apiserver_identity(node, self.cluster)
        return node

    def _ensure_service_account_key(self, report: PkiReport) -> None:
        """sa.key is created once; sa.pub is always derived from it."""
        key_path = self.directory / SERVICE_ACCOUNT_KEY
        pub_path = self.directory / SERVICE_ACCOUNT_PUB
        if key_path.exists():
            key = load_key(key_path)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_key(key_path, key)
            report.issued.append(("-", SERVICE_ACCOUNT_KEY, "new service-account signing key"))
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not pub_path.exists() or pub_path.read_bytes() != public:
            atomic_write(pub_path, public, 0o644)
