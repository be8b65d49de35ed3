"""What the Kubernetes plays need from the controller, prepared before any node changes.

``prepare`` runs inside ``provisioner.provision`` after the PKI and the node-base downloads:
it checks the user's extra flags against the cluster's minor, refuses a version jump or a pod
network switch (kubesmith.state.records), creates (once) the Secrets encryption key,
allocates the nodes' pod ranges (bridge CNI) or checks their room (flannel), renders the
add-ons (RBAC, CoreDNS, flannel when chosen) from templates/addons, and, unless the
Kubernetes binaries are turned off, fetches and verifies the server tarball for every node
architecture and unpacks the binaries. The result is typed: kubesmith.provision.variables.

``kubesmith:cluster.artifacts.kubernetesBinaries: false`` (or the extra variable
``kubesmith_kubernetes_binaries`` for one run) turns off exactly the binaries: no download,
no install, no service start and no wait for an API.
Everything else (certificates, kubeconfigs, configuration files, units, CNI, routes, API
proxy) is still written, which is how the configuration is verified on machines that cannot
obtain the binaries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubesmith import versions
from kubesmith.apps.render import render_addon
from kubesmith.cluster import CLUSTER_DOMAIN, Cluster
from kubesmith.downloads import download, kube_binaries
from kubesmith.downloads.download import Download
from kubesmith.errors import UserError
from kubesmith.provision.flags import EXTRA_ARGS_VAR, extra_args_problems
from kubesmith.provision.packages import API_PROXY_PACKAGES, PACKAGES_BY_GROUP
from kubesmith.provision.target import Target
from kubesmith.provision.variables import (
    RELEASE_BIN_DIRS,
    KubernetesVariables,
    binaries_enabled,
)
from kubesmith.resources import templates_dir
from kubesmith.state import records
from kubesmith.state.encryption import PROVIDER_VAR, ensure_config
from kubesmith.state.pki import ADMINS_GROUP, APISERVER_KUBELET_CLIENT, Pki
from kubesmith.state.podcidr import allocate, check_room

#: Where Debian's containernetworking-plugins installs CNI plugins (the containerd role points
#: containerd there for source distro); releases go to RELEASE_BIN_DIRS["cni_plugins"].
DISTRO_CNI_BIN_DIR = "/usr/lib/cni"

#: Reads the release architecture of hosts (provisioner.probe_architectures).
Probe = Callable[[Target, Sequence[str]], dict[str, str]]


@dataclass(frozen=True)
class Prepared:
    variables: KubernetesVariables
    #: Host -> Debian packages for node_prep's apt transaction.
    packages: dict[str, list[str]]
    #: The server tarballs this run downloaded (not those already in the cache).
    downloaded: list[Download]


def cluster_pki(target: Target) -> Pki:
    return Pki(target.pki_dir, target.inventory.cluster)


def rbac_manifests() -> list[dict[str, Any]]:
    """The RBAC the control plane applies once the API answers (templates/addons/rbac)."""
    values = {
        "apiserverKubeletUser": APISERVER_KUBELET_CLIENT.common_name,
        "adminsGroup": ADMINS_GROUP,
    }
    return render_addon("rbac", values, templates=templates_dir())


def coredns_manifests(cluster: Cluster) -> list[dict[str, Any]]:
    """The CoreDNS add-on, rendered and validated by kubesmith.apps (templates/addons)."""
    values = {
        "clusterDns": cluster.spec.dns_address,
        "clusterDomain": CLUSTER_DOMAIN,
        "image": versions.image("coredns"),
    }
    return render_addon("coredns", values, templates=templates_dir())


def cni_bin_dir(target: Target) -> str:
    """The nodes' CNI plugin directory (containerd's bin_dir), where flannel adds its plugin."""
    if target.artifacts.source("cni_plugins") == "release":
        return RELEASE_BIN_DIRS["cni_plugins"]
    return DISTRO_CNI_BIN_DIR


def flannel_manifests(cluster: Cluster, cni_bin_dir: str) -> list[dict[str, Any]]:
    """The flannel add-on for the cluster's pod network and backend (templates/addons)."""
    values = {
        "network": cluster.spec.pod_cidr,
        "backend": cluster.spec.cni.backend,
        "image": versions.image("flannel"),
        "cniPluginImage": versions.image("flannel_cni_plugin"),
        "cniBinDir": cni_bin_dir,
    }
    return render_addon("flannel", values, templates=templates_dir())


def _extra_args(target: Target, cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The user's extra flags per component, checked against the cluster's minor."""
    extra = target.inventory.all_vars.get(EXTRA_ARGS_VAR) or {}
    where = str(target.inventory.path)
    if not isinstance(extra, Mapping):
        raise UserError(f"{where}: {EXTRA_ARGS_VAR} must map component names to flags")
    problems = extra_args_problems(extra, cluster.spec.kubernetes_minor, where)
    if problems:
        raise UserError("; ".join(problems))
    return {str(component): dict(flags) for component, flags in extra.items()}


def packages(target: Target, cluster: Cluster) -> dict[str, list[str]]:
    """Host -> the Debian packages its Kubernetes roles need (see site.yml's api_proxy play)."""
    inventory = target.inventory
    wanted: dict[str, list[str]] = {}
    for host in inventory.hosts_in("k8s_cluster"):
        groups = inventory.groups_of(host)
        names = [p for group in groups for p in PACKAGES_BY_GROUP.get(group, ())]
        if cluster.uses_local_api_proxy and "kube_control_plane" not in groups:
            names += API_PROXY_PACKAGES
        wanted[host] = sorted(set(names))
    return wanted


def _binaries(
    target: Target,
    arch_of: Mapping[str, str],
    probe: Probe,
    cluster: Cluster,
) -> tuple[dict[str, dict[str, str]], list[Download]]:
    """Host -> {binary: unpacked path on the controller}, and the tarballs that had to be
    downloaded (the cache holds the others)."""
    hosts = target.inventory.hosts_in("k8s_cluster")
    unknown = [h for h in hosts if h not in arch_of]
    arches = {**arch_of, **(probe(target, unknown) if unknown else {})}
    tarballs = {
        arch: download.server_tarball(
            cluster.spec.kubernetes_version,
            arch,
            target.cache_dir,
            target.artifacts.mirror_base_url,
        )
        for arch in sorted({arches[h] for h in hosts})
    }
    # Every tarball is verified before anything is unpacked or sent anywhere.
    downloaded = download.fetch_all(tarballs.values())
    unpacked = {arch: kube_binaries.unpack(t) for arch, t in tarballs.items()}
    files = {}
    for host in hosts:
        names = kube_binaries.binaries_for(target.inventory.groups_of(host))
        files[host] = {name: str(unpacked[arches[host]][name]) for name in names}
    return files, downloaded


def prepare(
    target: Target, arch_of: Mapping[str, str], extravars: Mapping[str, Any], probe: Probe
) -> Prepared:
    """Everything site.yml's Kubernetes plays read (see module doc).

    ``arch_of`` holds the architectures already probed for component downloads; ``probe``
    reads the others when binaries are needed.
    """
    cluster = target.inventory.cluster
    extra_args = _extra_args(target, cluster)
    records.check_upgrade(target.state_dir, cluster)
    records.check_pod_network(target.state_dir, cluster)
    provider = str(
        extravars.get(PROVIDER_VAR) or target.inventory.all_vars.get(PROVIDER_VAR) or "secretbox"
    )
    encryption_config, _ = ensure_config(target.pki_dir, provider)
    nodes = target.inventory.hosts_in("k8s_cluster")
    flannel = cluster.spec.cni.plugin == "flannel"
    # With flannel the controller-manager hands out the nodes' ranges; kubesmith keeps none.
    if flannel:
        check_room(cluster.spec.pod_cidr, len(nodes))
    pod_cidrs = {} if flannel else allocate(cluster.spec.pod_cidr, nodes, target.state_dir)
    enabled = binaries_enabled(target.inventory, extravars)
    files, downloaded = _binaries(target, arch_of, probe, cluster) if enabled else ({}, [])
    prepared = Prepared(
        variables=KubernetesVariables(
            kubernetes_binaries=enabled,
            kubernetes_files=files,
            encryption_config=str(encryption_config),
            pod_cidrs={host: str(cidr) for host, cidr in pod_cidrs.items()},
            extra_args=extra_args,
            flannel_manifests=(flannel_manifests(cluster, cni_bin_dir(target)) if flannel else []),
            rbac_manifests=rbac_manifests(),
            coredns_manifests=coredns_manifests(cluster),
        ),
        packages=packages(target, cluster),
        downloaded=downloaded,
    )
    records.record(target.state_dir, cluster)
    return prepared
