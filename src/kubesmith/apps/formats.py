"""String formats that values schemas name with ``"format": ...``, checked in code.

JSON Schema ``pattern`` would do for most of these, but a failed pattern reports the whole
regular expression; a format reports what the value should look like. The regular expressions
live here once and the engine reuses them (the image tag becomes the version label).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from jsonschema import FormatChecker

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"

#: The distribution reference grammar (what containerd and Docker accept), written out:
#: ``[registry[:port]/]path[:tag][@algorithm:hex]``; the repository path is lowercase.
IMAGE_REFERENCE = re.compile(
    rf"(?:(?P<registry>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)/)?"
    rf"(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)
_MAX_NAME_LENGTH = 255

#: A Kubernetes resource quantity: 100m, 0.5, 128Mi, 1G, 1e3.
QUANTITY = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?"
)

#: An RFC 1123 subdomain (Ingress hosts, cluster domains); a leading ``*.`` is not accepted.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ImageReference:
    registry: str | None
    path: str
    tag: str | None
    digest: str | None


def parse_image(reference: str) -> ImageReference:
    """Split an image reference; ValueError says what is wrong with it."""
    match = IMAGE_REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(
            f"{reference!r} is not an image reference: expected [registry/]repository:tag or "
            "repository@sha256:digest, with a lowercase repository"
        )
    path = match["path"]
    name_length = len(path) + (len(match["registry"]) + 1 if match["registry"] else 0)
    if name_length > _MAX_NAME_LENGTH:
        raise ValueError(f"{reference!r} is not an image reference: name exceeds 255 characters")
    if match["tag"] is None and match["digest"] is None:
        # An implicit :latest makes a rollout depend on whatever the registry holds that day.
        raise ValueError(f"{reference!r} needs an explicit :tag or @digest")
    return ImageReference(match["registry"], path, match["tag"], match["digest"])


def version_label(reference: str) -> str:
    """The ``app.kubernetes.io/version`` value for an image: its tag, else its digest prefix."""
    image = parse_image(reference)
    if image.tag is not None:
        text = image.tag
    else:
        assert image.digest is not None
        text = image.digest.split(":", 1)[1][:12]
    # Label values are at most 63 characters and must end alphanumeric; tags may be longer.
    return _LABEL_VALUE_UNSAFE.sub("-", text)[:63].rstrip("-_.")


def _image_reference(value: object) -> bool:
    if isinstance(value, str):
        parse_image(value)
    return True


def _quantity(value: object) -> bool:
    if isinstance(value, str) and not QUANTITY.fullmatch(value):
        raise ValueError(f"{value!r} is not a quantity such as 250m, 0.5, 128Mi or 1Gi")
    return True


def _dns_subdomain(value: object) -> bool:
    if isinstance(value, str) and (len(value) > 253 or not DNS_SUBDOMAIN.fullmatch(value)):
        raise ValueError(
            f"{value!r} is not a DNS name (lowercase letters, digits, '-' and '.', "
            "such as hello.example.com)"
        )
    return True


def _ipv4_address(value: object) -> bool:
    if isinstance(value, str):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
    return True


def _ipv4_cidr(value: object) -> bool:
    if isinstance(value, str):
        try:
            ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 CIDR such as 10.0.0.0/8 ({exc})") from None
    return True


def format_checker() -> FormatChecker:
    """A checker knowing only kubesmith's formats: no format silently depends on extra packages."""
    checker = FormatChecker(formats=())
    checker.checks("image-reference", raises=ValueError)(_image_reference)
    checker.checks("quantity", raises=ValueError)(_quantity)
    checker.checks("dns-subdomain", raises=ValueError)(_dns_subdomain)
    checker.checks("ipv4-address", raises=ValueError)(_ipv4_address)
    checker.checks("ipv4-cidr", raises=ValueError)(_ipv4_cidr)
    return checker
