"""The variables site.yml reads, computed per host from the inventory groups.

Which components a host needs follows from its groups (``COMPONENT_GROUPS``); whether each
comes as Debian packages or as a verified upstream release follows from the target's
artifact settings. The roles stay free of that logic: they receive plain lists per host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubesmith import versions
from kubesmith.downloads.artifacts import Artifact
from kubesmith.provision.target import Target
from kubesmith.state.pki import Pki

#: Inventory groups whose members run each component.
COMPONENT_GROUPS: Mapping[str, frozenset[str]] = {
    "etcd": frozenset({"etcd"}),
    "containerd": frozenset({"k8s_cluster"}),
    "runc": frozenset({"k8s_cluster"}),
    "cni_plugins": frozenset({"k8s_cluster"}),
    "crictl": frozenset({"k8s_cluster"}),
}
#: Where release binaries are linked; the CNI convention keeps plugins in /opt/cni/bin.
#: The containerd and etcd roles read the same directories (containerd_release_bin_dir ...).
RELEASE_BIN_DIR = "/usr/local/bin"
RELEASE_BIN_DIRS: Mapping[str, str] = {"cni_plugins": "/opt/cni/bin"}


def components_for(target: Target, host: str) -> list[str]:
    groups = target.inventory.groups_of(host)
    return [name for name, needed_by in COMPONENT_GROUPS.items() if needed_by & groups]


def release_needs(target: Target) -> dict[str, list[str]]:
    """Host -> components it installs from upstream releases."""
    needs = {}
    for host in target.inventory.hostvars:
        wanted = [
            c for c in components_for(target, host) if target.artifacts.source(c) == "release"
        ]
        if wanted:
            needs[host] = wanted
    return needs


def build_extravars(
    target: Target,
    pki: Pki,
    releases: Mapping[tuple[str, str], Artifact],
    arch_of: Mapping[str, str],
) -> dict[str, Any]:
    """``releases`` maps (component, arch) to its verified artifact; ``arch_of`` host -> arch."""
    components = versions.components()
    packages: dict[str, list[str]] = {}
    host_releases: dict[str, list[dict[str, Any]]] = {}
    for host in target.inventory.hostvars:
        for name in components_for(target, host):
            component = components[name]
            if target.artifacts.source(name) == "distro":
                packages.setdefault(host, []).extend(component.distro_packages)
                continue
            artifact = releases[(name, arch_of[host])]
            host_releases.setdefault(host, []).append(
                {
                    "name": name,
                    "version": component.version,
                    "archive": str(artifact.path),
                    "format": component.format,
                    "binaries": component.installed_binaries(artifact.arch),
                    "bin_dir": RELEASE_BIN_DIRS.get(name, RELEASE_BIN_DIR),
                }
            )
    bundles = {node.name: pki.node_bundle(node) for node in target.inventory.identities()}
    pki_bundles = {
        host: {"archive": str(b.archive), "files": b.files, "manifest": b.manifest}
        for host, b in bundles.items()
    }
    return {
        "kubesmith_components": {
            name: {"source": target.artifacts.source(name)} for name in components
        },
        "kubesmith_host_packages": packages,
        "kubesmith_host_releases": host_releases,
        "kubesmith_pki_bundles": pki_bundles,
        "kubesmith_sandbox_image": versions.sandbox_image(),
    }
