"""What the Kubernetes roles need from the controller, computed before any node changes.

``prepare`` runs inside ``provisioner.provision`` after the PKI and the component downloads:
it checks the user's extra flags against the cluster's minor, creates (once) the Secrets
encryption key, allocates the nodes' pod ranges (bridge CNI) or refuses a pod network switch,
renders the add-ons (flannel when chosen, CoreDNS) through the project's template engine and
the RBAC the control plane bootstraps, and, unless the
Kubernetes binaries are turned off, fetches and verifies the server tarball for every node
architecture and unpacks the binaries. The result is a set of extra variables for site.yml.

``kubesmith_kubernetes_binaries: false`` (an extra variable or an inventory variable) turns
off exactly the binaries: no download, no install, no service start and no wait for an API.
Everything else (certificates, kubeconfigs, configuration files, units, CNI, routes, API
proxy) is still written, which is how the configuration is verified on machines that cannot
obtain the binaries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubesmith import versions
from kubesmith.apps.render import render_addon, templates_dir
from kubesmith.downloads import kube_binaries
from kubesmith.downloads.kube_binaries import ServerTarball
from kubesmith.errors import UserError
from kubesmith.provision.clusterfacts import (
    BINARIES_VAR,
    CLUSTER_DOMAIN,
    ClusterFacts,
    binaries_enabled,
    cluster_facts,
)
from kubesmith.provision.flags import EXTRA_ARGS_VAR, extra_args_problems
from kubesmith.provision.hostvars import RELEASE_BIN_DIRS
from kubesmith.provision.runner import playbooks_dir
from kubesmith.provision.target import Target
from kubesmith.state.encryption import PROVIDER_VAR, ensure_config
from kubesmith.state.pki_kubernetes import ADMINS_GROUP, KubernetesPki
from kubesmith.state.podcidr import NODE_PREFIX, allocate

#: The user the apiserver authenticates as towards kubelets (apiserver-kubelet-client.crt).
APISERVER_KUBELET_USER = "kube-apiserver-kubelet-client"
#: Labels of what kubesmith applies, so `kubectl get -l` finds it.
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "kubesmith"}

#: The Kubernetes version the cluster was last provisioned with (upgrades go one minor at a time).
VERSION_FILE = "kubernetes-version"
#: The pod network the cluster was provisioned with ("bridge", "flannel vxlan", ...).
POD_NETWORK_FILE = "pod-network"
#: Where Debian's containernetworking-plugins installs CNI plugins (the containerd role points
#: containerd there for source distro); releases go to RELEASE_BIN_DIRS["cni_plugins"].
DISTRO_CNI_BIN_DIR = "/usr/lib/cni"

#: Reads the release architecture of hosts (provisioner.probe_architectures).
Probe = Callable[[Target, Sequence[str]], dict[str, str]]


#: Debian packages the Kubernetes roles need, by inventory group (kube-proxy's iptables and
#: conntrack, the CNI reconciler's iptables). The roles install what is missing themselves
#: too, for runs limited to their tags.
PACKAGES_BY_GROUP = {"k8s_cluster": ("iptables", "conntrack")}
#: The local HA API proxy (api_proxy role) on nodes without an apiserver.
API_PROXY_PACKAGES = ("haproxy",)


@dataclass
class Prepared:
    extravars: dict[str, Any]
    #: Host -> Debian packages for node_prep's apt transaction.
    packages: dict[str, list[str]] = field(default_factory=dict)
    tarballs: list[ServerTarball] = field(default_factory=list)
    downloaded: list[ServerTarball] = field(default_factory=list)


def cluster_pki(target: Target) -> KubernetesPki:
    return KubernetesPki(target.pki_dir, cluster_facts(target.inventory))


def bootstrap_rbac() -> list[dict[str, Any]]:
    """RBAC the control plane applies once the API answers.

    - the apiserver may reach kubelets' API (logs, exec, port-forward, metrics): the hard way's
      system:kube-apiserver-to-kubelet role bound to the apiserver's client certificate user;
    - admin certificates (group kubesmith:cluster-admins) are cluster admins; unlike
      system:masters this binding can be revoked;
    - kubelets may renew their own client certificates (rotateCertificates), auto-approved by
      the controller-manager, as kubeadm sets it up.
    """
    meta = {"labels": dict(MANAGED_LABELS)}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:kube-apiserver-to-kubelet", **meta},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": [
                        "nodes/proxy",
                        "nodes/stats",
                        "nodes/log",
                        "nodes/spec",
                        "nodes/metrics",
                        "nodes/pods",
                        "nodes/healthz",
                        "nodes/configz",
                    ],
                    "verbs": ["*"],
                }
            ],
        },
        _binding(
            "system:kube-apiserver-to-kubelet",
            "system:kube-apiserver-to-kubelet",
            {"kind": "User", "name": APISERVER_KUBELET_USER},
        ),
        _binding(
            "kubesmith:cluster-admins", "cluster-admin", {"kind": "Group", "name": ADMINS_GROUP}
        ),
        _binding(
            "kubesmith:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            {"kind": "Group", "name": "system:nodes"},
        ),
    ]


def _binding(name: str, role: str, subject: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(MANAGED_LABELS)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **subject}],
    }


def coredns_manifests(facts: ClusterFacts) -> list[dict[str, Any]]:
    """The CoreDNS add-on, rendered and validated by kubesmith.apps (templates/addons)."""
    values = {
        "clusterDns": facts.cluster_dns,
        "clusterDomain": CLUSTER_DOMAIN,
        "image": versions.image("coredns"),
    }
    return render_addon("coredns", values, templates=templates_dir(playbooks_dir().parent))


def cni_bin_dir(target: Target) -> str:
    """The nodes' CNI plugin directory (containerd's bin_dir), where flannel adds its plugin."""
    if target.artifacts.source("cni_plugins") == "release":
        return RELEASE_BIN_DIRS["cni_plugins"]
    return DISTRO_CNI_BIN_DIR


def flannel_manifests(facts: ClusterFacts, cni_bin_dir: str) -> list[dict[str, Any]]:
    """The flannel add-on for the cluster's pod network and backend (templates/addons)."""
    values = {
        "network": facts.pod_cidr,
        "backend": facts.flannel_backend,
        "image": versions.image("flannel"),
        "cniPluginImage": versions.image("flannel_cni_plugin"),
        "cniBinDir": cni_bin_dir,
    }
    return render_addon("flannel", values, templates=templates_dir(playbooks_dir().parent))


def _pod_network(facts: ClusterFacts) -> str:
    if facts.cni_plugin == "flannel":
        return f"flannel {facts.flannel_backend}"
    return facts.cni_plugin


def check_pod_network(target: Target, facts: ClusterFacts) -> None:
    """Refuse to change the pod network of a cluster that has one.

    Switching would leave running pods with addresses, routes and CNI files of the old
    network on every node (and flannel's backend must not change under a running flannel).
    A cluster provisioned before the choice existed recorded only its version: bridge.
    """
    path = target.state_dir / POD_NETWORK_FILE
    if path.is_file():
        current = path.read_text(encoding="ascii").strip()
    elif (target.state_dir / VERSION_FILE).is_file():
        current = "bridge"
    else:
        return
    wanted = _pod_network(facts)
    if current != wanted:
        raise UserError(
            f"kubesmith:cluster.cni: the cluster was provisioned with {current}, the config asks "
            f"for {wanted}; kubesmith does not switch the pod network of a provisioned cluster "
            f"(set cni back to {current}, or recreate the cluster)",
            hint="see docs/cluster.md#pod-network",
        )


def record_pod_network(target: Target, facts: ClusterFacts) -> None:
    target.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = target.state_dir / POD_NETWORK_FILE
    path.write_text(_pod_network(facts) + "\n", encoding="ascii")


def _check_room_for_nodes(facts: ClusterFacts, nodes: Sequence[str]) -> None:
    """What podcidr.allocate checks for the bridge CNI, for ranges the controller hands out."""
    network = ipaddress.IPv4Network(facts.pod_cidr)
    if network.prefixlen > NODE_PREFIX:
        raise UserError(
            f"kubesmith:cluster.podCidr: {network} is smaller than one node's /{NODE_PREFIX}; "
            f"use a /{NODE_PREFIX} or larger network"
        )
    room = 2 ** (NODE_PREFIX - network.prefixlen)
    if len(nodes) > room:
        raise UserError(
            f"kubesmith:cluster.podCidr: {network} has room for {room} nodes "
            f"(one /{NODE_PREFIX} each), the inventory has {len(nodes)}"
        )


def _check_extra_args(target: Target, facts: ClusterFacts) -> dict[str, Any]:
    """The user's extra flags per component, checked against the cluster's minor."""
    extra = target.inventory.all_vars.get(EXTRA_ARGS_VAR) or {}
    where = str(target.inventory.path)
    if not isinstance(extra, Mapping):
        raise UserError(f"{where}: {EXTRA_ARGS_VAR} must map component names to flags")
    problems = extra_args_problems(extra, facts.minor, where)
    if problems:
        raise UserError("; ".join(problems))
    return {str(component): dict(flags) for component, flags in extra.items()}


def _minor_of(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_upgrade(target: Target, facts: ClusterFacts) -> None:
    """Refuse a version change Kubernetes does not support.

    The control plane moves one minor at a time (1.33 -> 1.34 -> 1.35) and never back; a
    patch release within a minor may go either way. The version is recorded by
    ``record_version`` once everything the run needs was fetched.
    """
    path = target.state_dir / VERSION_FILE
    wanted = facts.kubernetes_version
    if path.is_file():
        current = path.read_text(encoding="ascii").strip()
        old, new = _minor_of(current), _minor_of(wanted)
        if new[0] != old[0] or new[1] > old[1] + 1:
            step = f"{old[0]}.{old[1] + 1}"
            raise UserError(
                f"kubesmith:cluster.kubernetesVersion: {current} -> {wanted} skips a minor; "
                f"Kubernetes upgrades one minor at a time: go to a pinned {step}.x first",
                hint="see docs/runbooks/upgrade.md",
            )
        if new < old:
            raise UserError(
                f"kubesmith:cluster.kubernetesVersion: {current} -> {wanted} is a downgrade of "
                "the control plane, which Kubernetes does not support",
                hint="restore the etcd snapshot taken before the upgrade instead "
                "(docs/runbooks/etcd-backup-restore.md)",
            )


def record_version(target: Target, facts: ClusterFacts) -> None:
    target.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (target.state_dir / VERSION_FILE).write_text(facts.kubernetes_version + "\n", encoding="ascii")


def packages(target: Target, facts: ClusterFacts) -> dict[str, list[str]]:
    """Host -> the Debian packages its Kubernetes roles need (see site.yml's api_proxy play)."""
    inventory = target.inventory
    proxied = facts.uses_api_proxy(len(inventory.hosts_in("kube_control_plane")))
    wanted: dict[str, list[str]] = {}
    for host in inventory.hosts_in("k8s_cluster"):
        groups = inventory.groups_of(host)
        names = [p for group in groups for p in PACKAGES_BY_GROUP.get(group, ())]
        if proxied and "kube_control_plane" not in groups:
            names += API_PROXY_PACKAGES
        wanted[host] = sorted(set(names))
    return wanted


def _binaries(
    target: Target,
    arch_of: Mapping[str, str],
    probe: Probe,
    facts: ClusterFacts,
    prepared: Prepared,
) -> dict[str, dict[str, str]]:
    """Host -> {binary: unpacked path on the controller}; fetches what the cache lacks."""
    hosts = target.inventory.hosts_in("k8s_cluster")
    unknown = [h for h in hosts if h not in arch_of]
    arches = {**arch_of, **(probe(target, unknown) if unknown else {})}
    tarballs = {
        arch: kube_binaries.plan(
            facts.kubernetes_version, arch, target.cache_dir, target.artifacts.mirror_base_url
        )
        for arch in sorted({arches[h] for h in hosts})
    }
    prepared.tarballs = list(tarballs.values())
    # Every tarball is verified before anything is unpacked or sent anywhere.
    prepared.downloaded = [t for t in tarballs.values() if kube_binaries.fetch(t)]
    unpacked = {arch: kube_binaries.unpack(t) for arch, t in tarballs.items()}
    files = {}
    for host in hosts:
        names = kube_binaries.binaries_for(target.inventory.groups_of(host))
        files[host] = {name: str(unpacked[arches[host]][name]) for name in names}
    return files


def prepare(
    target: Target, arch_of: Mapping[str, str], extravars: Mapping[str, Any], probe: Probe
) -> Prepared:
    """Everything site.yml's Kubernetes plays read, as extra variables (see module doc).

    ``arch_of`` holds the architectures already probed for component downloads; ``probe``
    reads the others when binaries are needed.
    """
    facts = cluster_facts(target.inventory)
    extra_args = _check_extra_args(target, facts)
    check_upgrade(target, facts)
    check_pod_network(target, facts)
    provider = str(
        extravars.get(PROVIDER_VAR) or target.inventory.all_vars.get(PROVIDER_VAR) or "secretbox"
    )
    encryption_config, _ = ensure_config(target.pki_dir, provider)
    nodes = target.inventory.hosts_in("k8s_cluster")
    flannel = facts.cni_plugin == "flannel"
    # With flannel the controller-manager hands out the nodes' ranges; kubesmith keeps none.
    if flannel:
        _check_room_for_nodes(facts, nodes)
    pod_cidrs = {} if flannel else allocate(facts.pod_cidr, nodes, target.state_dir)
    enabled = binaries_enabled(target.inventory, extravars)
    prepared = Prepared(
        extravars={
            BINARIES_VAR: enabled,
            "kubesmith_cluster_domain": CLUSTER_DOMAIN,
            "kubesmith_encryption_config": str(encryption_config),
            "kubesmith_cni_plugin": facts.cni_plugin,
            "kubesmith_api_proxy": facts.uses_api_proxy(
                len(target.inventory.hosts_in("kube_control_plane"))
            ),
            "kubesmith_node_cidr_mask_size": NODE_PREFIX,
            EXTRA_ARGS_VAR: extra_args,
            "kubesmith_pod_cidrs": {host: str(cidr) for host, cidr in pod_cidrs.items()},
            "kubesmith_flannel_manifests": (
                flannel_manifests(facts, cni_bin_dir(target)) if flannel else []
            ),
            "kubesmith_rbac_manifests": bootstrap_rbac(),
            "kubesmith_coredns_manifests": coredns_manifests(facts),
            "kubesmith_kubernetes_files": {},
        },
        packages=packages(target, facts),
    )
    if enabled:
        prepared.extravars["kubesmith_kubernetes_files"] = _binaries(
            target, arch_of, probe, facts, prepared
        )
    record_version(target, facts)
    record_pod_network(target, facts)
    return prepared
