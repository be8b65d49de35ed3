"""The Debian packages the roles install on nodes, and the whole set a node image can carry.

node_prep installs a host's packages in one apt transaction (missing ones only, probed with
dpkg-query): the node-base components whose artifacts source is ``distro`` (versions.yaml's
``distro.packages``) and the Kubernetes roles' packages below. A node image that already
carries every one of them (``lxd.imageNodeBase``) leaves node_prep no apt work at all.
"""

from __future__ import annotations

from kubesmith import versions
from kubesmith.spec import ClusterSpec

#: Debian packages the Kubernetes roles need, by inventory group (kube-proxy's iptables and
#: conntrack, the CNI reconciler's iptables). The roles install what is missing themselves
#: too, for runs limited to their tags.
PACKAGES_BY_GROUP = {"k8s_cluster": ("iptables", "conntrack")}
#: The local HA API proxy (api_proxy role) on nodes without an apiserver.
API_PROXY_PACKAGES = ("haproxy",)


def node_image_packages(spec: ClusterSpec) -> tuple[str, ...]:
    """Every package site.yml may install on some node of a cluster with ``spec``, sorted.

    Control planes and workers share one image, so it is the union over every role: a worker
    then also carries etcd's package, unused and not enabled.
    """
    components = versions.components().values()
    distro = [
        package
        for component in components
        if spec.artifact_source(component.name) == "distro"
        for package in component.distro_packages
    ]
    kubernetes = [package for names in PACKAGES_BY_GROUP.values() for package in names]
    return tuple(sorted({*distro, *kubernetes, *API_PROXY_PACKAGES}))
