"""The cluster's admin kubeconfig, as the controller (and the Pulumi program) hands it out."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

import yaml

from kubesmith.cluster import API_PORT
from kubesmith.errors import UserError
from kubesmith.provision.target import Target, for_stack
from kubesmith.state.kubeconfig import kubeconfig
from kubesmith.state.pki import Pki


def controller_server(target: Target) -> str:
    """The API URL as the controller reaches it.

    Nodes may reach the API on their own loopback (the local HA proxy) or on a private
    address; the controller uses the first control plane's SSH address then, which the
    apiserver certificate carries like every node address.
    """
    cluster = target.inventory.cluster
    planes = target.inventory.hosts_in("kube_control_plane")
    first = target.inventory.hostvars[planes[0]]
    host = cluster.api_host
    private = {str(target.inventory.hostvars[p].get("kubesmith_node_ip")) for p in planes}
    if cluster.api_endpoint_is_loopback or host in private:
        reachable = str(first["ansible_host"])
        if ":" in reachable:
            reachable = f"[{ipaddress.ip_address(reachable)}]"
        port = urlsplit(cluster.api_endpoint).port or API_PORT
        return urlunsplit(("https", f"{reachable}:{port}", "", "", ""))
    return cluster.api_endpoint


def admin_kubeconfig(target: Target) -> str:
    """The admin kubeconfig of ``target``'s cluster as YAML text (certificates embedded).

    The certificate was issued by the last provisioning run; this renews nothing and never
    creates a CA, so it fails cleanly for a cluster that was not provisioned yet. The Pulumi
    program exports it as a secret output.
    """
    cluster = target.inventory.cluster
    pki = Pki(target.pki_dir, cluster)
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
        cluster=cluster.name,
        server=controller_server(target),
        user=f"kubesmith-admin@{cluster.name}",
        ca=ca.read_text(encoding="ascii"),
        cert=cert.read_text(encoding="ascii"),
        key=key.read_text(encoding="ascii"),
        embed=True,
    )
    return yaml.safe_dump(data, sort_keys=False)


def stack_admin_kubeconfig(stack: str) -> str:
    """``admin_kubeconfig`` of a stack, for the Pulumi program's secret output."""
    return admin_kubeconfig(for_stack(stack))
