"""The Kubernetes PKI on top of the etcd one: who gets which certificate, what each names,
which CA signs it, and what a re-run may change."""

from __future__ import annotations

import datetime as dt
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubesmith.provision.inventory import Inventory, load_inventory
from kubesmith.state.pki import LEAVES, Pki
from tests.clusterlab import local_spec, write_inventory

SERVER = {ExtendedKeyUsageOID.SERVER_AUTH}
CLIENT = {ExtendedKeyUsageOID.CLIENT_AUTH}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


def subject(cert: x509.Certificate) -> tuple[str, str | None]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(cn), str(orgs[0].value) if orgs else None


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def ha(tmp_path: Path) -> tuple[Inventory, Pki]:
    """Three control planes and a worker, the local HA shape (API on each node's loopback)."""
    inventory = write_inventory(tmp_path / "lab", local_spec(3, 1))
    pki = Pki(tmp_path / "pki", inventory.cluster)
    pki.ensure(inventory.identities())
    return inventory, pki


def leaf(pki: Pki, node: str, path: str) -> x509.Certificate:
    return load(pki.directory / "nodes" / node / f"{path}.crt")


def test_apiserver_certificate_names_every_way_clients_reach_the_api(
    ha: tuple[Inventory, Pki],
) -> None:
    inventory, pki = ha
    for host in inventory.hosts_in("kube_control_plane"):
        cert = leaf(pki, host, "apiserver")
        names = sans(cert)
        # The node itself, its address, the local HA proxy's loopback ...
        assert {host, inventory.hostvars[host]["kubesmith_node_ip"], "127.0.0.1"} <= names
        # ... and the in-cluster Service: ClusterIP (first of serviceCidr) and its DNS names.
        assert {
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        } <= names
        assert usages(cert) == SERVER
        assert subject(cert) == ("kube-apiserver", None)


def test_identities_are_what_the_authorizers_expect(ha: tuple[Inventory, Pki]) -> None:
    _, pki = ha
    cp, worker = "local-cp-1", "local-worker-1"
    expected = {
        (cp, "apiserver-kubelet-client"): ("kube-apiserver-kubelet-client", None),
        (cp, "controller-manager"): ("system:kube-controller-manager", None),
        (cp, "scheduler"): ("system:kube-scheduler", None),
        (cp, "super-admin"): ("kubernetes-super-admin", "system:masters"),
        (cp, "admin"): ("kubesmith-admin", "kubesmith:cluster-admins"),
        (cp, "front-proxy-client"): ("front-proxy-client", None),
        # Node authorizer: system:node:<name> in system:nodes, for each node.
        (worker, "kubelet-client"): ("system:node:local-worker-1", "system:nodes"),
        (cp, "kubelet-client"): ("system:node:local-cp-1", "system:nodes"),
        (worker, "kube-proxy"): ("system:kube-proxy", None),
    }
    for (node, path), identity in expected.items():
        cert = leaf(pki, node, path)
        assert subject(cert) == identity, path
        assert usages(cert) == CLIENT, path


def test_kubelet_serving_certificate_carries_the_node_address(
    ha: tuple[Inventory, Pki],
) -> None:
    inventory, pki = ha
    cert = leaf(pki, "local-worker-1", "kubelet-server")
    assert usages(cert) == SERVER
    # --kubelet-preferred-address-types starts with InternalIP: the apiserver dials the IP.
    assert inventory.hostvars["local-worker-1"]["kubesmith_node_ip"] in sans(cert)


def test_every_leaf_chains_to_its_own_ca_with_openssl(ha: tuple[Inventory, Pki]) -> None:
    _, pki = ha
    for node in ("local-cp-1", "local-worker-1"):
        for profile in LEAVES:
            path = pki.directory / "nodes" / node / f"{profile.path}.crt"
            if not path.exists():
                continue
            ca = pki.directory / f"{profile.ca}.crt"
            other = pki.directory / ("ca.crt" if profile.ca != "ca" else "front-proxy-ca.crt")
            ok = subprocess.run(
                ["openssl", "verify", "-CAfile", str(ca), str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert ok.returncode == 0, (profile.path, ok.stderr)
            # And only to it: the front proxy's client cannot pass as a cluster client.
            wrong = subprocess.run(
                ["openssl", "verify", "-CAfile", str(other), str(path)],
                capture_output=True,
                check=False,
            )
            assert wrong.returncode != 0, profile.path


def test_groups_decide_who_receives_what(ha: tuple[Inventory, Pki]) -> None:
    inventory, pki = ha
    identities = {i.name: i for i in inventory.identities()}
    cp = {f.dest: f.mode for f in pki.node_files(identities["local-cp-1"])}
    worker = {f.dest: f.mode for f in pki.node_files(identities["local-worker-1"])}
    for name in ("apiserver.key", "sa.key", "ca.key", "front-proxy-client.key", "super-admin.key"):
        assert cp[name] == "0600"
        assert name not in worker
    assert cp["sa.pub"] == cp["front-proxy-ca.crt"] == "0644"
    assert worker["kubelet-client.key"] == worker["kube-proxy.key"] == "0600"
    assert worker["ca.crt"] == "0644"
    assert "admin.crt" not in worker


def test_node_bundle_carries_the_kubernetes_files_with_their_modes(
    ha: tuple[Inventory, Pki],
) -> None:
    inventory, pki = ha
    node = next(i for i in inventory.identities() if i.name == "local-cp-1")
    bundle = pki.node_bundle(node)
    with tarfile.open(bundle.archive) as tar:
        modes = {m.name: m.mode for m in tar.getmembers() if m.isfile()}
    assert modes["apiserver.key"] == modes["sa.key"] == 0o600
    assert modes["apiserver.crt"] == 0o644
    assert bundle.archive.stat().st_mode & 0o777 == 0o600


def test_rerun_changes_nothing_and_keeps_the_service_account_key(
    ha: tuple[Inventory, Pki],
) -> None:
    inventory, pki = ha
    key_before = (pki.directory / "sa.key").read_bytes()
    report = pki.ensure(inventory.identities())
    assert report.issued == []
    assert (pki.directory / "sa.key").read_bytes() == key_before
    public = serialization.load_pem_private_key(key_before, None).public_key()
    assert (pki.directory / "sa.pub").read_bytes() == public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (pki.directory / "sa.key").stat().st_mode & 0o777 == 0o600


def with_endpoint(inventory: Inventory, url: str) -> Inventory:
    """The same inventory with another kubesmith_api_endpoint (e.g. an AWS NLB)."""
    text = inventory.path.read_text()
    old = inventory.all_vars["kubesmith_api_endpoint"]
    inventory.path.write_text(
        text.replace(f"kubesmith_api_endpoint: {old}", f"kubesmith_api_endpoint: {url}")
    )
    return load_inventory(inventory.path)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://api.example.internal:6443", "api.example.internal"),
        ("https://192.0.2.7:6443", "192.0.2.7"),
    ],
)
def test_a_new_api_endpoint_reissues_only_the_apiserver_certificates(
    tmp_path: Path, endpoint: str, expected: str
) -> None:
    inventory = write_inventory(tmp_path / "lab", local_spec(1, 1))
    directory = tmp_path / "pki"
    Pki(directory, inventory.cluster).ensure(inventory.identities())
    key = (directory / "nodes/local-cp-1/apiserver.key").read_bytes()

    moved = with_endpoint(inventory, endpoint)
    pki = Pki(directory, moved.cluster)
    report = pki.ensure(moved.identities())

    assert [(node, path, reason) for node, path, reason in report.issued] == [
        ("local-cp-1", "apiserver.crt", "names or addresses changed")
    ]
    assert expected in sans(leaf(pki, "local-cp-1", "apiserver"))
    # Reissued with the same key: nothing else on the node has to change.
    assert (directory / "nodes/local-cp-1/apiserver.key").read_bytes() == key


def test_certificates_close_to_expiry_are_renewed(ha: tuple[Inventory, Pki]) -> None:
    inventory, pki = ha
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    report = pki.ensure(inventory.identities(), now=later)
    renewed = {path for _, path, _ in report.issued}
    assert {"apiserver.crt", "kubelet-server.crt", "kubelet-client.crt", "admin.crt"} <= renewed
    assert all(reason.startswith("expires ") for *_, reason in report.issued)


def test_controller_admin_certificate_is_a_cluster_admin(
    ha: tuple[Inventory, Pki],
) -> None:
    _, pki = ha
    cert_path, key_path = pki.controller_admin()
    cert = load(cert_path)
    assert subject(cert) == ("kubesmith-admin", "kubesmith:cluster-admins")
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert cert_path.parent.name == "controller"
