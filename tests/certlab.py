"""Certificates made due on purpose: a leaf of the controller's PKI reissued by its real CA
(same key, subject and extensions) with a validity that ends in a few days, as a cluster left
alone for nine months would have it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from kubesmith.state.pki import CAS, CONTROLLER, LEAVES, load_key


def leaf_file(pki_dir: Path, node: str, leaf: str) -> Path:
    if node == CONTROLLER.name:
        return pki_dir / "controller" / f"{leaf}.crt"
    return pki_dir / "nodes" / node / f"{leaf}.crt"


def make_due(pki_dir: Path, node: str, leaf: str, days: int) -> x509.Certificate:
    """Reissue ``node``'s ``leaf`` so that it expires in ``days`` days; return it."""
    (profile,) = [p for p in LEAVES if p.path == leaf]
    ca_cert = x509.load_pem_x509_certificate((pki_dir / f"{profile.ca}.crt").read_bytes())
    ca_key = load_key(pki_dir / f"{profile.ca}.key")
    path = leaf_file(pki_dir, node, leaf)
    old = x509.load_pem_x509_certificate(path.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365 - days))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def make_ca_due(pki_dir: Path, ca: str, days: int) -> None:
    """Re-sign CA ``ca`` (self-signed, same key) so that it expires in ``days`` days."""
    assert ca in {p.path for p in CAS}
    path, key = pki_dir / f"{ca}.crt", load_key(pki_dir / f"{ca}.key")
    old = x509.load_pem_x509_certificate(path.read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(old.serial_number)
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def read(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
