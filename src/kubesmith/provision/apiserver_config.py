"""kube-apiserver's admission and authentication configuration files, built from the spec.

Both are data the control_plane role serialises to a root-only file on every control plane
(``--admission-control-config-file``, ``--authentication-config``); a changed file restarts
the apiserver like any other of its files.

- ``admission_configuration``: the PodSecurity plugin's cluster-wide defaults
  (``kubesmith:cluster.podSecurity``). No exemptions: the add-ons that need another level
  say so with their namespace's ``pod-security.kubernetes.io/*`` labels (docs/cluster.md,
  "Security").
- ``authentication_configuration``: one JWT authenticator for ``kubesmith:cluster.oidc``, or
  None without it. Structured authentication configuration is beta (on by default) in 1.30
  to 1.33, served as ``apiserver.config.k8s.io/v1beta1``, and GA in 1.34, which adds ``v1``.
"""

from __future__ import annotations

from typing import Any

from kubesmith.errors import ConfigError
from kubesmith.spec import CONFIG_KEY, ClusterSpec
from kubesmith.versions import minor_of

ADMISSION_API_VERSION = "apiserver.config.k8s.io/v1"
POD_SECURITY_API_VERSION = "pod-security.admission.config.k8s.io/v1"
#: The policy version each level is judged by: that of the running apiserver, whose minor
#: kubesmith pins (an upgrade rewrites the unit and restarts it anyway).
POD_SECURITY_VERSION = "latest"
#: The first minor serving AuthenticationConfiguration as v1 (v1beta1 before it).
AUTHENTICATION_V1_FROM = "1.34"


def admission_configuration(spec: ClusterSpec) -> dict[str, Any]:
    levels = spec.pod_security
    defaults: dict[str, str] = {}
    for mode in ("enforce", "audit", "warn"):
        defaults[mode] = getattr(levels, mode)
        defaults[f"{mode}-version"] = POD_SECURITY_VERSION
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": POD_SECURITY_API_VERSION,
                    "kind": "PodSecurityConfiguration",
                    "defaults": defaults,
                    "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": []},
                },
            }
        ],
    }


def authentication_api_version(minor: str) -> str:
    stage = "v1" if minor_of(minor) >= minor_of(AUTHENTICATION_V1_FROM) else "v1beta1"
    return f"apiserver.config.k8s.io/{stage}"


def authentication_configuration(spec: ClusterSpec) -> dict[str, Any] | None:
    """The AuthenticationConfiguration for the cluster's minor; the CA file's certificates are
    read now and carried inline (``issuer.certificateAuthority`` holds PEM text)."""
    oidc = spec.oidc
    if oidc is None:
        return None
    issuer: dict[str, Any] = {"url": oidc.issuer_url, "audiences": [oidc.client_id]}
    try:
        ca = oidc.ca_pem
    except ValueError as exc:  # checked when the spec was read; changed since
        raise ConfigError([f"{CONFIG_KEY}.oidc.caFile: {exc}"]) from None
    if ca is not None:
        issuer["certificateAuthority"] = ca
    return {
        "apiVersion": authentication_api_version(spec.kubernetes_minor),
        "kind": "AuthenticationConfiguration",
        "jwt": [
            {
                "issuer": issuer,
                "claimMappings": {
                    "username": {"claim": oidc.username_claim, "prefix": oidc.username_prefix},
                    "groups": {"claim": oidc.groups_claim, "prefix": oidc.groups_prefix},
                },
            }
        ],
    }
