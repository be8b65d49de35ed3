"""When the cluster's certificates expire: what `kubesmith certs` reports.

Read from the controller's PKI directory (the certificates the nodes were given). Leaf
certificates are reissued by `kubesmith provision` once fewer than ``RENEW_BEFORE`` remain;
one inside that window means the cluster has not been provisioned for a while.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from kubesmith.state.pki import RENEW_BEFORE


@dataclass(frozen=True)
class Expiry:
    path: Path  # relative to the PKI directory
    not_after: dt.datetime
    is_ca: bool

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days

    def due(self, now: dt.datetime) -> bool:
        """Expired, or a leaf inside the renewal window (CAs are never renewed on their own)."""
        left = self.not_after - now
        return left <= dt.timedelta(0) or (not self.is_ca and left < RENEW_BEFORE)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def expiries(pki_dir: Path) -> list[Expiry]:
    """Every certificate under ``pki_dir``, soonest expiry first."""
    found = []
    for path in sorted(pki_dir.rglob("*.crt")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        found.append(Expiry(path.relative_to(pki_dir), cert.not_valid_after_utc, _is_ca(cert)))
    return sorted(found, key=lambda e: (e.not_after, str(e.path)))
