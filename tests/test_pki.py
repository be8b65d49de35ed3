"""The controller-side cluster PKI: layout, key usages, SANs, and what a re-run may change."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubesmith.cluster import Cluster
from kubesmith.errors import KubesmithError
from kubesmith.spec import parse_cluster
from kubesmith.state.pki import CAS, LEAVES, NodeIdentity, Pki

CLUSTER = Cluster(
    parse_cluster({"name": "t", "backend": "lxd", "lxd": {}}), "https://10.0.0.11:6443"
)

CP = frozenset({"etcd", "kube_control_plane", "kube_node", "k8s_cluster"})
WORKER = frozenset({"kube_node", "k8s_cluster"})


def node(name: str, ip: str, groups: frozenset[str] = CP) -> NodeIdentity:
    return NodeIdentity(name, groups, (ipaddress.ip_address(ip),))


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def eku(c: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki", CLUSTER)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_layout_modes_and_usages_follow_kubeadm(pki: Pki) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    d = pki.directory
    for key in d.rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    server = cert(d / "nodes/cp-1/etcd/server.crt")
    assert eku(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert sans(server) == {"cp-1", "localhost", "10.0.0.11", "127.0.0.1", "::1"}
    assert sans(cert(d / "nodes/cp-1/etcd/peer.crt")) == sans(server)
    health = cert(d / "nodes/cp-1/etcd/healthcheck-client.crt")
    assert eku(health) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    client = cert(d / "nodes/cp-1/apiserver-etcd-client.crt")
    assert eku(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "kube-apiserver-etcd-client"
    )
    etcd_ca = cert(d / "etcd/ca.crt")
    for leaf in (server, health, client):
        leaf.verify_directly_issued_by(etcd_ca)
    assert etcd_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert(d / "ca.crt").subject != etcd_ca.subject


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_accepts_the_chain_for_its_purpose(pki: Pki) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    d = pki.directory
    ok = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            d / "etcd/ca.crt",
            d / "nodes/cp-1/etcd/server.crt",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            d / "etcd/ca.crt",
            d / "nodes/cp-1/etcd/healthcheck-client.crt",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0, "a client certificate must not pass as a server"


def test_workers_get_the_ca_certificate_and_only_their_own_keys(pki: Pki) -> None:
    worker = node("w-1", "10.0.0.21", WORKER)
    plane = node("cp-1", "10.0.0.11")
    pki.ensure([plane, worker])
    worker_files = {f.dest: f.mode for f in pki.node_files(worker)}
    assert worker_files == {
        "ca.crt": "0644",
        **{f"{leaf}.crt": "0644" for leaf in ("kubelet-client", "kubelet-server", "kube-proxy")},
        **{f"{leaf}.key": "0600" for leaf in ("kubelet-client", "kubelet-server", "kube-proxy")},
    }
    # Keys a worker holds are its own (nodes/w-1/...): no CA key, nothing of etcd's.
    assert all(str(f.src).startswith(str(pki.directory / "nodes/w-1")) or f.dest == "ca.crt"
               for f in pki.node_files(worker))  # fmt: skip
    plane_files = {f.dest: f.mode for f in pki.node_files(plane)}
    assert plane_files["ca.key"] == "0600"  # control planes sign, as with kubeadm
    assert "etcd/ca.key" not in plane_files  # etcd certificates are issued here, not on nodes
    assert plane_files["etcd/server.key"] == "0600"
    assert plane_files["etcd/server.crt"] == "0644"
    assert not (pki.directory / "nodes/w-1/etcd").exists()


def test_second_run_changes_nothing(pki: Pki) -> None:
    nodes = [node("cp-1", "10.0.0.11"), node("cp-2", "10.0.0.12")]
    first = pki.ensure(nodes)
    # Every CA, every leaf of each node's groups, the controller's admin, the SA key: once.
    per_node = [leaf for leaf in LEAVES if leaf.groups & CP]
    assert len(first.issued) == len(CAS) + len(nodes) * len(per_node) + 1 + 1
    before = snapshot(pki.directory)
    assert pki.ensure(nodes).issued == []
    assert snapshot(pki.directory) == before


def test_adding_a_node_issues_only_its_certificates(pki: Pki) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    before = snapshot(pki.directory)
    report = pki.ensure([node("cp-1", "10.0.0.11"), node("cp-2", "10.0.0.12")])
    assert {n for n, _, _ in report.issued} == {"cp-2"}
    after = snapshot(pki.directory)
    assert {k: v for k, v in after.items() if k in before} == before


def test_changed_address_reissues_that_nodes_server_certificates_with_the_same_key(
    pki: Pki,
) -> None:
    pki.ensure([node("cp-1", "10.0.0.11"), node("cp-2", "10.0.0.12")])
    key_before = (pki.directory / "nodes/cp-1/etcd/server.key").read_bytes()
    other_before = snapshot(pki.directory / "nodes/cp-2")
    report = pki.ensure([node("cp-1", "10.0.0.99"), node("cp-2", "10.0.0.12")])
    # Exactly the certificates that carry the node's addresses: etcd's, the apiserver's and
    # the kubelet's serving certificates.
    assert sorted((n, p, r) for n, p, r in report.issued) == [
        ("cp-1", path, "names or addresses changed")
        for path in ("apiserver.crt", "etcd/peer.crt", "etcd/server.crt", "kubelet-server.crt")
    ]
    assert "10.0.0.99" in sans(cert(pki.directory / "nodes/cp-1/etcd/server.crt"))
    assert (pki.directory / "nodes/cp-1/etcd/server.key").read_bytes() == key_before
    assert snapshot(pki.directory / "nodes/cp-2") == other_before


def test_certificates_close_to_expiry_are_renewed_and_reported(pki: Pki) -> None:
    nodes = [node("cp-1", "10.0.0.11")]
    pki.ensure(nodes)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    report = pki.ensure(nodes, now=later)
    assert report.issued
    assert all(r.startswith("expires ") for _, _, r in report.issued)
    renewed = cert(pki.directory / "nodes/cp-1/etcd/server.crt")
    assert renewed.not_valid_after_utc > later + dt.timedelta(days=300)


def test_a_missing_ca_key_is_an_error_not_a_new_ca(pki: Pki) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    (pki.directory / "etcd/ca.key").unlink()
    ca_before = (pki.directory / "etcd/ca.crt").read_bytes()
    with pytest.raises(KubesmithError, match=r"etcd/ca.key: missing while ca.crt exists; refusing"):
        pki.ensure([node("cp-1", "10.0.0.11")])
    assert (pki.directory / "etcd/ca.crt").read_bytes() == ca_before


def test_a_readable_key_is_refused(pki: Pki) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    key = pki.directory / "nodes/cp-1/etcd/peer.key"
    key.chmod(0o644)
    with pytest.raises(KubesmithError, match=r"peer.key: private key is readable by others"):
        pki.ensure([node("cp-1", "10.0.0.11")])


def test_a_certificate_from_another_ca_is_reissued(pki: Pki, tmp_path: Path) -> None:
    pki.ensure([node("cp-1", "10.0.0.11")])
    foreign = Pki(tmp_path / "other", CLUSTER)
    foreign.ensure([node("cp-1", "10.0.0.11")])
    shutil.copy(
        foreign.directory / "nodes/cp-1/etcd/server.crt",
        pki.directory / "nodes/cp-1/etcd/server.crt",
    )
    report = pki.ensure([node("cp-1", "10.0.0.11")])
    reasons = {p: r for _, p, r in report.issued}
    assert reasons == {"etcd/server.crt": "key does not match the certificate"}


def test_bundle_is_deterministic_and_holds_the_node_files_with_their_modes(
    pki: Pki, tmp_path: Path
) -> None:
    plane = node("cp-1", "10.0.0.11")
    pki.ensure([plane])
    bundle = pki.node_bundle(plane)
    assert bundle.archive.stat().st_mode & 0o777 == 0o600
    first = bundle.archive.read_bytes()
    assert pki.node_bundle(plane).archive.read_bytes() == first
    target = tmp_path / "node-pki"
    target.mkdir()
    with tarfile.open(bundle.archive) as tar:
        tar.extractall(target, filter="tar")
    wanted = {f.dest: f for f in pki.node_files(plane)}
    assert sorted(wanted) == bundle.files
    for dest, spec in wanted.items():
        assert (target / dest).read_bytes() == spec.src.read_bytes()
        assert oct((target / dest).stat().st_mode & 0o777) == oct(int(spec.mode, 8))
