"""Kubeconfigs as data: one shape for the nodes' files and for the admin kubeconfig.

On nodes a kubeconfig names the certificate files under /etc/kubernetes/pki (the roles build
it with the ``kubeconfig`` filter in playbooks/filter_plugins, which calls ``kubeconfig``
here), so a renewed certificate needs no new kubeconfig. The admin kubeconfig that leaves the
controller embeds its certificates (kubesmith.provision.admin): it must work on another
machine. This module imports nothing beyond the standard library: Ansible loads it in every
worker that renders a kubeconfig.
"""

from __future__ import annotations

import base64
from typing import Any


def kubeconfig(
    *,
    cluster: str,
    server: str,
    user: str,
    ca: str,
    cert: str,
    key: str,
    embed: bool = False,
) -> dict[str, Any]:
    """A one-context kubeconfig; with ``embed``, ``ca``/``cert``/``key`` are PEM text."""
    if embed:
        cluster_entry = {"certificate-authority-data": _b64(ca), "server": server}
        user_entry = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    else:
        cluster_entry = {"certificate-authority": ca, "server": server}
        user_entry = {"client-certificate": cert, "client-key": key}
    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode("ascii")).decode("ascii")
