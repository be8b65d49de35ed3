"""Kubeconfigs as data: one shape for the nodes' files and for the admin kubeconfig.

On nodes a kubeconfig names the certificate files under /etc/kubernetes/pki (the roles build
it with the ``kubeconfig`` filter in playbooks/filter_plugins, which calls ``kubeconfig``
here), so a renewed certificate needs no new kubeconfig. The admin kubeconfig that leaves the
controller embeds its certificates (``admin_kubeconfig``): it must work on another machine.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from kubesmith.errors import UserError
from kubesmith.inventory import API_PORT
from kubesmith.provision.clusterfacts import cluster_facts
from kubesmith.provision.pki_kubernetes import KubernetesPki
from kubesmith.provision.target import Target


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


def controller_server(target: Target) -> str:
    """The API URL as the controller reaches it.

    Nodes may reach the API on their own loopback (the local HA proxy) or on a private
    address; the controller uses the first control plane's SSH address then, which the
    apiserver certificate carries like every node address.
    """
    facts = cluster_facts(target.inventory)
    planes = target.inventory.hosts_in("kube_control_plane")
    first = target.inventory.hostvars[planes[0]]
    host = facts.api_host
    private = {str(target.inventory.hostvars[p].get("kubesmith_node_ip")) for p in planes}
    if facts.api_endpoint_is_loopback or host in private:
        reachable = str(first["ansible_host"])
        if ":" in reachable:
            reachable = f"[{ipaddress.ip_address(reachable)}]"
        port = urlsplit(facts.api_endpoint).port or API_PORT
        return urlunsplit(("https", f"{reachable}:{port}", "", "", ""))
    return facts.api_endpoint


def admin_kubeconfig(target: Target) -> str:
    """The admin kubeconfig of ``target``'s cluster as YAML text (certificates embedded).

    The certificate was issued by the last provisioning run; this renews nothing and never
    creates a CA, so it fails cleanly for a cluster that was not provisioned yet. The Pulumi
    program exports it as a secret output.
    """
    facts = cluster_facts(target.inventory)
    pki = KubernetesPki(target.pki_dir, facts)
    cert, key = pki.controller_admin()
    ca = target.pki_dir / "ca.crt"
    missing = [p for p in (ca, cert, key) if not p.is_file()]
    if missing:
        raise UserError(
            f"{target.label}: no admin certificate yet ({missing[0]} is missing); "
            "provision the cluster first",
            hint="run: kubesmith provision -s STACK (or --inventory FILE)",
        )
    data = kubeconfig(
        cluster=facts.name,
        server=controller_server(target),
        user=f"kubesmith-admin@{facts.name}",
        ca=ca.read_text(encoding="ascii"),
        cert=cert.read_text(encoding="ascii"),
        key=key.read_text(encoding="ascii"),
        embed=True,
    )
    return yaml.safe_dump(data, sort_keys=False)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    tmp.replace(path)
