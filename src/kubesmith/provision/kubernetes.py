"""What the Kubernetes plays need from the controller, prepared before any node changes.

``prepare`` runs inside ``provisioner.provision`` after the PKI and the node-base downloads:
it checks the user's extra flags against the cluster's minor, refuses a version jump or a pod
network switch (kubesmith.state.records), creates (once) the Secrets encryption key,
allocates the nodes' pod ranges (bridge CNI) or checks their room (flannel), renders the
add-ons (RBAC, CoreDNS, flannel and kube-router when chosen) from templates/addons, and,
unless the Kubernetes binaries are turned off, plans how the binaries reach the nodes (the
backend's ``Delivery``, kubesmith.provision.variables):

- ``mount`` (LXD): the controller fetches and verifies the server tarball for every node
  architecture and unpacks it once; each node gets that one directory as a read-only mount
  (``Mount``, attached by the caller's ``Attach``, kubesmith.local.shares) and installs from it
  after checking each binary's sha256. Without the mount the role copies over SSH instead.
- ``fetch`` (AWS): no download on the controller; each node downloads the server tarball from
  the release URL (or the mirror) itself, checks the pinned sha512 and unpacks what it needs.
- ``copy``: the controller fetches, verifies and unpacks, then copies each node's binaries.

The result is typed: kubesmith.provision.variables.

``kubesmith:cluster.artifacts.kubernetesBinaries: false`` (or the extra variable
``kubesmith_kubernetes_binaries`` for one run) turns off exactly the binaries: no download,
no install, no service start and no wait for an API.
Everything else (certificates, kubeconfigs, configuration files, units, CNI, routes, API
proxy) is still written, which is how the configuration is verified on machines that cannot
obtain the binaries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubesmith import versions
from kubesmith.apps.render import render_addon
from kubesmith.cluster import CLUSTER_DOMAIN, Cluster
from kubesmith.downloads import download, kube_binaries
from kubesmith.downloads.download import Download
from kubesmith.errors import UserError
from kubesmith.provision.apiserver_config import (
    admission_configuration,
    authentication_configuration,
)
from kubesmith.provision.flags import EXTRA_ARGS_VAR, extra_args_problems
from kubesmith.provision.packages import API_PROXY_PACKAGES, PACKAGES_BY_GROUP
from kubesmith.provision.target import Target
from kubesmith.provision.variables import (
    RELEASE_BIN_DIRS,
    Delivery,
    KubernetesVariables,
    binaries_delivery,
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

#: Names of the nodes' binaries mounts (LXD devices), one per release: this prefix + version.
MOUNT_DEVICE_PREFIX = "kubesmith-kubernetes-"

#: Reads the release architecture of hosts (provisioner.probe_architectures).
Probe = Callable[[Target, Sequence[str]], dict[str, str]]

#: Where a node sees the controller's verified binaries of a version (``mount`` delivery):
#: <NODE_RELEASES_DIR>/<version>/<binary>, read-only.
NODE_RELEASES_DIR = "/var/lib/kubesmith/releases/kubernetes"


@dataclass(frozen=True)
class Mount:
    """One read-only directory of the controller that a node sees at ``path``."""

    host: str
    #: The device's name on the node: one per release, so an upgrade adds one beside it.
    name: str
    source: Path
    path: str


#: Gives nodes their mounts before the playbook runs (kubesmith.local.shares for LXD).
Attach = Callable[[Sequence[Mount]], None]


@dataclass(frozen=True)
class Prepared:
    variables: KubernetesVariables
    #: Host -> Debian packages for node_prep's apt transaction.
    packages: dict[str, list[str]]
    #: The server tarballs this run downloaded (not those already in the cache).
    downloaded: list[Download]
    #: The read-only mounts the nodes install their binaries from (``mount`` delivery).
    mounts: list[Mount] = field(default_factory=list)


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


def network_policy_manifests(cluster: Cluster) -> list[dict[str, Any]]:
    """The NetworkPolicy agent's add-on (templates/addons/<agent>), none without one."""
    agent = cluster.spec.cni.network_policy
    if agent == "none":
        return []
    values = {"image": versions.image("kube_router"), "serviceCidr": cluster.spec.service_cidr}
    return render_addon(agent, values, templates=templates_dir())


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


@dataclass(frozen=True)
class Binaries:
    """Host -> {binary: release role source}, the tarballs downloaded, the mounts to attach."""

    files: dict[str, dict[str, dict[str, str]]]
    downloaded: list[Download]
    mounts: list[Mount]


def mount_of(host: str, tarball: Download) -> Mount:
    """The node's read-only view of the verified, unpacked binaries (and nothing else)."""
    return Mount(
        host=host,
        name=MOUNT_DEVICE_PREFIX + tarball.version.replace(".", "-"),
        source=kube_binaries.bin_dir(tarball),
        path=f"{NODE_RELEASES_DIR}/{tarball.version}",
    )


def _binaries(
    target: Target,
    arch_of: Mapping[str, str],
    probe: Probe,
    cluster: Cluster,
    delivery: Delivery,
) -> Binaries:
    """Where each host takes its binaries from (see the module doc for each delivery)."""
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
    wanted = {h: kube_binaries.binaries_for(target.inventory.groups_of(h)) for h in hosts}
    if delivery == "fetch":
        return Binaries({h: fetched_by_node(tarballs[arches[h]], wanted[h]) for h in hosts}, [], [])
    # Every tarball is verified before anything is unpacked or sent anywhere.
    downloaded = download.fetch_all(tarballs.values())
    unpacked = {arch: kube_binaries.unpack(t) for arch, t in tarballs.items()}
    sums = {arch: kube_binaries.sha256_of_unpacked(t) for arch, t in tarballs.items()}
    mounts = [mount_of(h, tarballs[arches[h]]) for h in hosts] if delivery == "mount" else []
    mount_dirs = {m.host: m.path for m in mounts}
    files = {}
    for host in hosts:
        arch = arches[host]
        files[host] = {
            name: {"archive": str(unpacked[arch][name]), "sha256": sums[arch][name]}
            | ({"mount": f"{mount_dirs[host]}/{name}"} if host in mount_dirs else {})
            for name in wanted[host]
        }
    return Binaries(files, downloaded, mounts)


def fetched_by_node(tarball: Download, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """What a node needs to download ``tarball`` itself, check its pin and unpack ``names``."""
    release = versions.kubernetes_release(tarball.version)
    return {
        name: {
            "url": tarball.url,
            "checksum": f"{tarball.algorithm}:{tarball.checksum}",
            "member": release.member_prefix + name,
        }
        for name in names
    }


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
    delivery = binaries_delivery(target.inventory, extravars)
    binaries = (
        _binaries(target, arch_of, probe, cluster, delivery) if enabled else Binaries({}, [], [])
    )
    prepared = Prepared(
        variables=KubernetesVariables(
            kubernetes_binaries=enabled,
            binaries_delivery=delivery,
            kubernetes_files=binaries.files,
            encryption_config=str(encryption_config),
            pod_cidrs={host: str(cidr) for host, cidr in pod_cidrs.items()},
            extra_args=extra_args,
            admission_configuration=admission_configuration(cluster.spec),
            authentication_configuration=authentication_configuration(cluster.spec) or {},
            flannel_manifests=(flannel_manifests(cluster, cni_bin_dir(target)) if flannel else []),
            network_policy_manifests=network_policy_manifests(cluster),
            rbac_manifests=rbac_manifests(),
            coredns_manifests=coredns_manifests(cluster),
        ),
        packages=packages(target, cluster),
        downloaded=binaries.downloaded,
        mounts=binaries.mounts,
    )
    records.record(target.state_dir, cluster)
    return prepared
