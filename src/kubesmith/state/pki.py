"""The cluster PKI, generated once on the controller and kept across runs.

Layout under the PKI directory (the stack's or lab's state dir, 0700):

    ca.crt ca.key                      Kubernetes CA
    etcd/ca.crt etcd/ca.key            etcd CA
    front-proxy-ca.{crt,key}           CA of the aggregation layer
    sa.key sa.pub                      service-account token signing key (never reissued)
    nodes/<node>/<path>.{crt,key}      leaf certificates, <path> as on the node under
                                       /etc/kubernetes/pki (kubeadm's layout)
    controller/admin.{crt,key}         the controller's own admin client certificate

What exists is reused. A CA is created only when neither of its files exists; a missing half
is an error, never a silent regeneration (every certificate would stop verifying). A leaf
certificate is issued when missing and reissued, with its existing key, only when its SANs
differ from what the inventory says, it no longer chains to its CA, or it expires within
``RENEW_BEFORE``; each issue is reported with its reason.

Every certificate is a row of one profile table (``CAS``, ``LEAVES``): who receives it (by
inventory group), who signs it, what it is called and how it may be used. Control-plane
leaves: apiserver (serving; node names plus the `kubernetes` Service names, its ClusterIP and
the API endpoint's host), apiserver-kubelet-client, front-proxy-client, apiserver-etcd-client
and the client certificates behind the controller-manager, scheduler, admin and super-admin
kubeconfigs. Every Kubernetes node: kubelet-client (system:node:<name>, the Node authorizer's
identity), kubelet-server and kube-proxy. etcd members: server, peer, healthcheck-client.

Who is who: super-admin is in system:masters (never revocable by RBAC, so it stays on the
control planes and only bootstraps RBAC); admin is in kubesmith:cluster-admins, bound to
cluster-admin by the rbac add-on, and is what people and the smoke test use.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import ipaddress
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubesmith.cluster import Cluster
from kubesmith.errors import KubesmithError
from kubesmith.state.files import atomic_write, check_private

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
#: Leaf certificates closer than this to expiry are reissued on the next run.
RENEW_BEFORE = dt.timedelta(days=90)
#: Backdating absorbs clock skew between controller and nodes.
_BACKDATE = dt.timedelta(minutes=5)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CaProfile:
    path: str  # "ca" -> ca.crt / ca.key
    common_name: str
    #: Inventory groups whose nodes receive the CA certificate (their trust anchor).
    cert_groups: frozenset[str]
    #: Inventory groups whose nodes receive the CA key too (kubeadm puts it on control planes).
    key_groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LeafProfile:
    path: str  # relative to /etc/kubernetes/pki, without suffix
    ca: str  # CaProfile.path of the signer
    common_name: str  # "{node}" is replaced by the node name
    groups: frozenset[str]  # inventory groups whose nodes get this certificate
    server: bool = False
    client: bool = False
    organization: str | None = None
    #: Whether the node's names and addresses go into subjectAltName (server certificates).
    node_sans: bool = False
    #: Whether the API's names go in too: the `kubernetes` Service's and the API endpoint's.
    api_sans: bool = False


_ETCD = frozenset({"etcd"})
CONTROL_PLANE = frozenset({"kube_control_plane"})
NODES = frozenset({"k8s_cluster"})
#: The controller (where kubesmith runs) is a pseudo-node of this group.
CONTROLLER_GROUP = "controller"
#: RBAC group of admin certificates; the rbac add-on binds it to cluster-admin.
ADMINS_GROUP = "kubesmith:cluster-admins"

CAS: tuple[CaProfile, ...] = (
    CaProfile("ca", "kubernetes", NODES | _ETCD, key_groups=CONTROL_PLANE),
    CaProfile("etcd/ca", "etcd-ca", _ETCD | CONTROL_PLANE),
    CaProfile("front-proxy-ca", "front-proxy-ca", CONTROL_PLANE),
)

APISERVER = LeafProfile(
    "apiserver", "ca", "kube-apiserver", CONTROL_PLANE, server=True, node_sans=True, api_sans=True
)
#: The apiserver towards kubelets; the rbac add-on grants this user the kubelet API.
APISERVER_KUBELET_CLIENT = LeafProfile(
    "apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", CONTROL_PLANE, client=True
)
ADMIN = LeafProfile(
    "admin", "ca", "kubesmith-admin", CONTROL_PLANE | {CONTROLLER_GROUP}, client=True,
    organization=ADMINS_GROUP,
)  # fmt: skip
LEAVES: tuple[LeafProfile, ...] = (
    LeafProfile("etcd/server", "etcd/ca", "{node}", _ETCD, server=True, client=True,
                node_sans=True),
    LeafProfile("etcd/peer", "etcd/ca", "{node}", _ETCD, server=True, client=True,
                node_sans=True),
    LeafProfile("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", _ETCD,
                client=True),
    LeafProfile("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", CONTROL_PLANE,
                client=True),
    APISERVER,
    APISERVER_KUBELET_CLIENT,
    LeafProfile("front-proxy-client", "front-proxy-ca", "front-proxy-client",
                CONTROL_PLANE, client=True),
    LeafProfile("controller-manager", "ca", "system:kube-controller-manager",
                CONTROL_PLANE, client=True),
    LeafProfile("scheduler", "ca", "system:kube-scheduler", CONTROL_PLANE, client=True),
    LeafProfile("super-admin", "ca", "kubernetes-super-admin", CONTROL_PLANE, client=True,
                organization="system:masters"),
    ADMIN,
    LeafProfile("kubelet-client", "ca", "system:node:{node}", NODES, client=True,
                organization="system:nodes"),
    LeafProfile("kubelet-server", "ca", "{node}", NODES, server=True, node_sans=True),
    LeafProfile("kube-proxy", "ca", "system:kube-proxy", NODES, client=True),
)  # fmt: skip

#: The service-account token signing key pair of the control planes (created once).
SERVICE_ACCOUNT_KEY = "sa.key"
SERVICE_ACCOUNT_PUB = "sa.pub"


@dataclass(frozen=True)
class NodeIdentity:
    """What a node's certificates must name, read from the inventory."""

    name: str
    groups: frozenset[str]
    addresses: tuple[Address, ...]
    dns_names: tuple[str, ...] = ()

    def sans(self) -> frozenset[x509.GeneralName]:
        names: set[x509.GeneralName] = {x509.DNSName(self.name), x509.DNSName("localhost")}
        names.update(x509.DNSName(d) for d in self.dns_names)
        names.update(x509.IPAddress(a) for a in self.addresses)
        names.update(x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1"))
        return frozenset(names)


#: The controller as a pseudo-node; "_" keeps it apart from any real node name (Kubernetes
#: node names are DNS-1123 and cannot hold one).
CONTROLLER = NodeIdentity("_controller", frozenset({CONTROLLER_GROUP}), ())


@dataclass(frozen=True)
class NodeFile:
    """One file to place on a node: controller path, path under /etc/kubernetes/pki, mode."""

    src: Path
    dest: str
    mode: str

    def as_var(self) -> dict[str, str]:
        return {"src": str(self.src), "dest": self.dest, "mode": self.mode}


@dataclass(frozen=True)
class NodeBundle:
    archive: Path
    files: list[str]


@dataclass
class PkiReport:
    #: (node or "-", file path, reason) for every certificate or key written by this run.
    issued: list[tuple[str, str, str]] = field(default_factory=list)


class Pki:
    """The whole cluster PKI in ``directory``; ``cluster`` gives the API's names (apiserver)."""

    def __init__(self, directory: Path, cluster: Cluster) -> None:
        self.directory = directory
        self.cluster = cluster

    # --- public -------------------------------------------------------------------------

    def ensure(self, nodes: Sequence[NodeIdentity], *, now: dt.datetime | None = None) -> PkiReport:
        """Create what is missing, reissue what is stale; return what was written and why."""
        now = now or dt.datetime.now(dt.UTC)
        report = PkiReport()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cas = {profile.path: self._ensure_ca(profile, now, report) for profile in CAS}
        for node in [*nodes, CONTROLLER]:
            for leaf in LEAVES:
                if leaf.groups & node.groups:
                    self._ensure_leaf(self._identity(node, leaf), leaf, cas[leaf.ca], now, report)
        self._ensure_service_account_key(report)
        return report

    def node_files(self, node: NodeIdentity) -> list[NodeFile]:
        """The files ``node`` receives, by its inventory groups (after ``ensure``)."""
        files: list[NodeFile] = []
        for ca in CAS:
            if ca.cert_groups & node.groups:
                files.append(NodeFile(self._ca_path(ca, ".crt"), f"{ca.path}.crt", "0644"))
            if ca.key_groups & node.groups:
                files.append(NodeFile(self._ca_path(ca, ".key"), f"{ca.path}.key", "0600"))
        if node.groups & CONTROL_PLANE:
            for name, mode in ((SERVICE_ACCOUNT_KEY, "0600"), (SERVICE_ACCOUNT_PUB, "0644")):
                files.append(NodeFile(self.directory / name, name, mode))
        for leaf in LEAVES:
            if leaf.groups & node.groups:
                base = self._leaf_base(node.name, leaf)
                files.append(NodeFile(base.with_suffix(".crt"), f"{leaf.path}.crt", "0644"))
                files.append(NodeFile(base.with_suffix(".key"), f"{leaf.path}.key", "0600"))
        return files

    def forget(self, node: str) -> list[Path]:
        """Delete ``node``'s leaf certificates and keys and its bundle (a node removed for
        good: one that comes back under its name gets new ones); what was deleted."""
        paths = (self.directory / "nodes" / node, self.directory / "bundles" / f"{node}.tar")
        gone = [path for path in paths if path.exists()]
        for path in gone:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return gone

    def controller_admin(self) -> tuple[Path, Path]:
        """The controller's admin certificate and key (after ``ensure``)."""
        base = self._leaf_base(CONTROLLER.name, ADMIN)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def node_bundle(self, node: NodeIdentity) -> NodeBundle:
        """Pack ``node``'s files into one tar (0600: it holds keys) and list them.

        The archive is deterministic (sorted, owner root, fixed mtime), so it is rewritten only
        when a file changed. The pki role reads it on the controller and writes to the node
        only the files whose checksum, mode or owner differ there.
        """
        files = sorted(self.node_files(node), key=lambda f: f.dest)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for directory in sorted({str(Path(f.dest).parent) for f in files} - {"."}):
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            for f in files:
                data = f.src.read_bytes()
                info = tarfile.TarInfo(f.dest)
                info.size, info.mode, info.mtime = len(data), int(f.mode, 8), 0
                tar.addfile(info, io.BytesIO(data))
        archive = self.directory / "bundles" / f"{node.name}.tar"
        content = buffer.getvalue()
        if not archive.is_file() or archive.read_bytes() != content:
            atomic_write(archive, content, 0o600)
        return NodeBundle(archive, [f.dest for f in files])

    # --- CAs ----------------------------------------------------------------------------

    def _ca_path(self, profile: CaProfile, suffix: str) -> Path:
        return self.directory / f"{profile.path}{suffix}"

    def _ensure_ca(
        self, profile: CaProfile, now: dt.datetime, report: PkiReport
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        crt_path, key_path = self._ca_path(profile, ".crt"), self._ca_path(profile, ".key")
        if crt_path.exists() and key_path.exists():
            cert, key = _load_cert(crt_path), load_key(key_path)
            if cert.public_key() != key.public_key():
                raise KubesmithError(f"{key_path}: does not belong to {crt_path}")
            if cert.not_valid_after_utc <= now:
                raise KubesmithError(
                    f"{crt_path}: the {profile.common_name} CA expired on "
                    f"{cert.not_valid_after_utc:%Y-%m-%d}; every certificate it signed is invalid",
                    hint="rotate the CA (new cluster PKI) deliberately; kubesmith never does it "
                    "on its own",
                )
            return cert, key
        if crt_path.exists() or key_path.exists():
            present, missing = (crt_path, key_path) if crt_path.exists() else (key_path, crt_path)
            raise KubesmithError(
                f"{missing}: missing while {present.name} exists; refusing to regenerate the "
                f"{profile.common_name} CA silently (it would invalidate every certificate)",
                hint=f"restore {missing.name} from a backup, or remove {present} to start over",
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, profile.common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_key(key_path, key)
        _write_cert(crt_path, cert)
        report.issued.append(("-", f"{profile.path}.crt", "new CA"))
        return cert, key

    # --- leaves -------------------------------------------------------------------------

    def _leaf_base(self, node: str, leaf: LeafProfile) -> Path:
        if node == CONTROLLER.name:
            return self.directory / "controller" / leaf.path
        return self.directory / "nodes" / node / leaf.path

    def _identity(self, node: NodeIdentity, leaf: LeafProfile) -> NodeIdentity:
        """What ``leaf`` names for ``node``: the node's names, plus the API's for api_sans."""
        if not leaf.api_sans:
            return node
        addresses = list(node.addresses)
        names = list(node.dns_names) + list(self.cluster.service_names())
        for value in (self.cluster.spec.api_service_address, self.cluster.api_host):
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                names.append(value)
                continue
            if address not in addresses:
                addresses.append(address)
        return dataclasses.replace(
            node,
            addresses=tuple(addresses),
            dns_names=tuple(dict.fromkeys(n for n in names if n != node.name)),
        )

    def _ensure_service_account_key(self, report: PkiReport) -> None:
        """sa.key is created once; sa.pub is always derived from it."""
        key_path = self.directory / SERVICE_ACCOUNT_KEY
        pub_path = self.directory / SERVICE_ACCOUNT_PUB
        if key_path.exists():
            key = load_key(key_path)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_key(key_path, key)
            report.issued.append(("-", SERVICE_ACCOUNT_KEY, "new service-account signing key"))
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not pub_path.exists() or pub_path.read_bytes() != public:
            atomic_write(pub_path, public, 0o644)

    def _ensure_leaf(
        self,
        node: NodeIdentity,
        leaf: LeafProfile,
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        now: dt.datetime,
        report: PkiReport,
    ) -> None:
        base = self._leaf_base(node.name, leaf)
        crt_path, key_path = base.with_suffix(".crt"), base.with_suffix(".key")
        wanted_sans = node.sans() if leaf.node_sans else frozenset()
        key = load_key(key_path) if key_path.exists() else None
        reason = "new"
        if key is not None and crt_path.exists():
            reason = _stale_reason(_load_cert(crt_path), key, ca[0], wanted_sans, now)
            if not reason:
                return
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_key(key_path, key)
        _write_cert(crt_path, _sign_leaf(node, leaf, key, ca, wanted_sans, now))
        report.issued.append((node.name, f"{leaf.path}.crt", reason))


def _stale_reason(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    wanted_sans: frozenset[x509.GeneralName],
    now: dt.datetime,
) -> str:
    """Why ``cert`` must be reissued, or "" when it is still right."""
    if cert.public_key() != key.public_key():
        return "key does not match the certificate"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if _sans_of(cert) != wanted_sans:
        return "names or addresses changed"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return ""


def _sans_of(cert: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(ext.value)


def _sign_leaf(
    node: NodeIdentity,
    leaf: LeafProfile,
    key: ec.EllipticCurvePrivateKey,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    sans: frozenset[x509.GeneralName],
    now: dt.datetime,
) -> x509.Certificate:
    ca_cert, ca_key = ca
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name.format(node=node.name))]
    if leaf.organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, leaf.organization))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if leaf.server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if leaf.client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sorted(sans, key=str)), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


# --- files ----------------------------------------------------------------------------------


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise KubesmithError(f"{path}: not a PEM certificate ({exc})") from None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    check_private(path, "private key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise KubesmithError(f"{path}: not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KubesmithError(f"{path}: expected an EC private key")
    return key


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    atomic_write(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
