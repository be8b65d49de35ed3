"""Every variable the playbooks read, typed and produced in this one module.

The cluster (kubesmith.cluster.Cluster: the spec the inventory carries plus its API endpoint)
is the only description of what to build. This module turns it, the inventory's hosts and
groups, and what the controller prepared before the run (PKI bundles, verified downloads, pod
ranges, add-on manifests, Kubernetes binaries) into the `kubesmith_*` extra variables:

- ``ClusterVariables``: the cluster-wide facts every playbook may read;
- ``NodeBaseVariables``: what base.yml's roles install per host (packages, releases, PKI);
- ``KubernetesVariables``: what site.yml's Kubernetes plays read.

Each field becomes ``kubesmith_<field>``; no other module produces a kubesmith_* variable,
and roles never read one: the playbooks bind them into each role's argument_specs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

from kubesmith import versions
from kubesmith.cluster import CLUSTER_DOMAIN, Cluster
from kubesmith.downloads.download import Download
from kubesmith.errors import UserError
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.target import Target
from kubesmith.state.pki import Pki
from kubesmith.state.podcidr import NODE_PREFIX

PREFIX = "kubesmith_"
#: The extra variable that overrides kubesmith:cluster.artifacts.kubernetesBinaries for one run.
BINARIES_VAR = "kubesmith_kubernetes_binaries"
#: The inventory or extra variable that overrides how the binaries reach the nodes.
DELIVERY_VAR = "kubesmith_binaries_delivery"
#: How the Kubernetes binaries reach the nodes: ``mount`` (the controller's verified copy,
#: mounted read-only into each node), ``fetch`` (each node downloads the server tarball and
#: checks its pin), ``copy`` (the controller sends each node its binaries over SSH).
Delivery = Literal["mount", "fetch", "copy"]
#: Each backend's way: LXD nodes share the controller's file system, cloud machines do not.
DELIVERY_BY_BACKEND: Mapping[str, Delivery] = {"lxd": "mount", "aws": "fetch"}

#: Inventory groups whose members run each node-base component.
COMPONENT_GROUPS: Mapping[str, frozenset[str]] = {
    "etcd": frozenset({"etcd"}),
    "containerd": frozenset({"k8s_cluster"}),
    "runc": frozenset({"k8s_cluster"}),
    "cni_plugins": frozenset({"k8s_cluster"}),
    "crictl": frozenset({"k8s_cluster"}),
}
#: Where release binaries are linked; the CNI convention keeps plugins in /opt/cni/bin.
RELEASE_BIN_DIR = "/usr/local/bin"
#: Where the release role installs each release (its ``release_root``), for what is put in
#: place outside a run: the node image's Kubernetes binaries (kubesmith.local.image).
RELEASE_ROOT = "/opt/kubesmith"
RELEASE_BIN_DIRS: Mapping[str, str] = {"cni_plugins": "/opt/cni/bin"}


@dataclass(frozen=True)
class _Variables:
    def extravars(self) -> dict[str, Any]:
        """``kubesmith_<field>`` for every field: the playbooks' names, defined here only."""
        return {PREFIX + f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ClusterVariables(_Variables):
    cluster_name: str
    backend: str
    production: bool
    kubernetes_version: str
    kubernetes_minor: str
    pod_cidr: str
    service_cidr: str
    cluster_dns: str
    cluster_domain: str
    api_service_address: str
    api_endpoint: str
    #: Nodes without an apiserver reach the API through the local HA proxy (api_proxy role).
    api_proxy: bool
    cni_plugin: str
    flannel_backend: str
    #: The NetworkPolicy agent ("none" or "kube-router"): the cni role prepares its nodes.
    network_policy: str
    node_cidr_mask_size: int


def cluster_variables(cluster: Cluster) -> ClusterVariables:
    spec = cluster.spec
    return ClusterVariables(
        cluster_name=spec.name,
        backend=spec.backend,
        production=spec.production,
        kubernetes_version=spec.kubernetes_version,
        kubernetes_minor=spec.kubernetes_minor,
        pod_cidr=spec.pod_cidr,
        service_cidr=spec.service_cidr,
        cluster_dns=spec.dns_address,
        cluster_domain=CLUSTER_DOMAIN,
        api_service_address=spec.api_service_address,
        api_endpoint=cluster.api_endpoint,
        api_proxy=cluster.uses_local_api_proxy,
        cni_plugin=spec.cni.plugin,
        flannel_backend=spec.cni.backend,
        network_policy=spec.cni.network_policy,
        node_cidr_mask_size=NODE_PREFIX,
    )


@dataclass(frozen=True)
class NodeBaseVariables(_Variables):
    #: Component -> {source: distro|release}.
    components: dict[str, dict[str, str]]
    #: Host -> Debian packages for node_prep's one apt transaction.
    host_packages: dict[str, list[str]]
    #: Host -> release role items (verified archives on the controller).
    host_releases: dict[str, list[dict[str, Any]]]
    #: Host -> its PKI bundle {archive, files}.
    pki_bundles: dict[str, dict[str, Any]]
    sandbox_image: str


def components_for(inventory: Inventory, host: str) -> list[str]:
    groups = inventory.groups_of(host)
    return [name for name, needed_by in COMPONENT_GROUPS.items() if needed_by & groups]


def release_needs(target: Target) -> dict[str, list[str]]:
    """Host -> node-base components it installs from upstream releases."""
    needs = {}
    for host in target.inventory.hostvars:
        wanted = [
            c
            for c in components_for(target.inventory, host)
            if target.artifacts.source(c) == "release"
        ]
        if wanted:
            needs[host] = wanted
    return needs


def node_base_variables(
    target: Target,
    pki: Pki,
    releases: Mapping[tuple[str, str], Download],
    arch_of: Mapping[str, str],
    more_packages: Mapping[str, Sequence[str]] | None = None,
) -> NodeBaseVariables:
    """``releases`` maps (component, arch) to its verified download; ``arch_of`` host -> arch;
    ``more_packages`` (host -> Debian packages, e.g. the Kubernetes roles') join the host's one
    apt transaction."""
    components = versions.components()
    packages: dict[str, list[str]] = {}
    host_releases: dict[str, list[dict[str, Any]]] = {}
    for host in target.inventory.hostvars:
        for name in components_for(target.inventory, host):
            component = components[name]
            if target.artifacts.source(name) == "distro":
                packages.setdefault(host, []).extend(component.distro_packages)
                continue
            release = releases[(name, arch_of[host])]
            host_releases.setdefault(host, []).append(
                {
                    "name": name,
                    "version": component.version,
                    "archive": str(release.cache_path),
                    "format": component.format,
                    "binaries": component.installed_binaries(release.arch),
                    "bin_dir": RELEASE_BIN_DIRS.get(name, RELEASE_BIN_DIR),
                }
            )
    for host, names in (more_packages or {}).items():
        packages.setdefault(host, []).extend(names)
    bundles = {node.name: pki.node_bundle(node) for node in target.inventory.identities()}
    return NodeBaseVariables(
        components={name: {"source": target.artifacts.source(name)} for name in components},
        host_packages=packages,
        host_releases=host_releases,
        pki_bundles={
            host: {"archive": str(b.archive), "files": b.files} for host, b in bundles.items()
        },
        sandbox_image=versions.sandbox_image(),
    )


@dataclass(frozen=True)
class KubernetesVariables(_Variables):
    #: Install and start the Kubernetes binaries (false: configuration only).
    kubernetes_binaries: bool
    #: How the binaries reach the nodes (Delivery).
    binaries_delivery: str
    #: Host -> {binary: where the release role takes it from}: ``archive`` (the verified,
    #: unpacked file on the controller), ``sha256`` and ``mount`` (its read-only mount on the
    #: node) with mount and copy; ``url``, ``checksum`` and ``member`` with fetch.
    kubernetes_files: dict[str, dict[str, dict[str, str]]]
    #: The EncryptionConfiguration on the controller (0600).
    encryption_config: str
    #: Host -> its pod range (bridge CNI; empty with flannel).
    pod_cidrs: dict[str, str]
    #: Component -> {flag: value}: the user's extra flags, checked for the cluster's minor.
    extra_args: dict[str, dict[str, Any]]
    #: kube-apiserver's AdmissionConfiguration (PodSecurity defaults), as data.
    admission_configuration: dict[str, Any]
    #: kube-apiserver's AuthenticationConfiguration (OIDC), as data; empty without oidc.
    authentication_configuration: dict[str, Any]
    flannel_manifests: list[dict[str, Any]]
    #: The NetworkPolicy agent's add-on (templates/addons/kube-router); empty without one.
    network_policy_manifests: list[dict[str, Any]]
    rbac_manifests: list[dict[str, Any]]
    coredns_manifests: list[dict[str, Any]]


def binaries_enabled(inventory: Inventory, extravars: Mapping[str, Any]) -> bool:
    """Whether this run installs and starts the Kubernetes binaries: the extra variable when
    given (`provision --[no-]kubernetes-binaries`), else the stack's
    artifacts.kubernetesBinaries."""
    value = extravars.get(BINARIES_VAR, inventory.cluster.spec.artifacts.kubernetes_binaries)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def binaries_delivery(inventory: Inventory, extravars: Mapping[str, Any]) -> Delivery:
    """How this run's binaries reach the nodes: the extra or inventory variable when given,
    else the backend's way (copy for a backend with neither a shared file system nor a
    known way to fetch)."""
    value = extravars.get(DELIVERY_VAR, inventory.all_vars.get(DELIVERY_VAR))
    if value is None:
        return DELIVERY_BY_BACKEND.get(inventory.cluster.spec.backend, "copy")
    choices = get_args(Delivery)
    if value not in choices:
        raise UserError(
            f"{inventory.path}: {DELIVERY_VAR} must be one of {', '.join(choices)}, got {value!r}"
        )
    return cast("Delivery", value)
