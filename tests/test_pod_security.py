"""Pod Security admission and OIDC authentication: what kube-apiserver is given.

The AdmissionConfiguration and AuthenticationConfiguration kubesmith builds are checked
against typed models of the upstream Go types (k8s.io/apiserver/pkg/apis/apiserver/v1 and
v1beta1, k8s.io/pod-security-admission/admission/api/v1; unknown fields refused) and the
rules kube-apiserver's own validation applies to them (https issuer without query or
fragment, at least one audience, a prefix beside every claim, a CA that parses). Neither
schema ships with the OpenAPI documents kubernetes-validate carries (they are files, not API
objects), hence the models here. The role's side (flags and files, as Ansible evaluates the
control_plane role's variables) and the extra-args refusals are checked too; on a real node
in tests/integration/test_pod_security.py.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubesmith import versions
from kubesmith.errors import ConfigError
from kubesmith.provision import flags
from kubesmith.provision.apiserver_config import (
    admission_configuration,
    authentication_configuration,
)
from kubesmith.spec import ClusterSpec
from tests.clusterlab import local_spec
from tests.test_flannel import PINNED_MINORS, evaluate, lab, prepare, site_variables

Level = Literal["privileged", "baseline", "restricted"]
POLICY_VERSION = re.compile(r"^(latest|v1\.\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


# --- k8s.io/pod-security-admission/admission/api/v1 and apiserver.config.k8s.io/v1 ---------


class PodSecurityDefaults(_Strict):
    enforce: Level
    enforce_version: str = Field(alias="enforce-version")
    audit: Level
    audit_version: str = Field(alias="audit-version")
    warn: Level
    warn_version: str = Field(alias="warn-version")

    @field_validator("enforce_version", "audit_version", "warn_version")
    @classmethod
    def _version(cls, value: str) -> str:
        assert POLICY_VERSION.fullmatch(value), value
        return value


class PodSecurityExemptions(_Strict):
    usernames: list[str] = []
    runtimeClasses: list[str] = []
    namespaces: list[str] = []


class PodSecurityConfiguration(_Strict):
    apiVersion: Literal["pod-security.admission.config.k8s.io/v1"]
    kind: Literal["PodSecurityConfiguration"]
    defaults: PodSecurityDefaults
    exemptions: PodSecurityExemptions = PodSecurityExemptions()


class AdmissionPlugin(_Strict):
    name: str
    path: str | None = None
    configuration: dict[str, Any] | None = None


class AdmissionConfiguration(_Strict):
    apiVersion: Literal["apiserver.config.k8s.io/v1"]
    kind: Literal["AdmissionConfiguration"]
    plugins: list[AdmissionPlugin]


def pod_security_of(document: dict[str, Any]) -> PodSecurityConfiguration:
    admission = AdmissionConfiguration.model_validate(document)
    (plugin,) = [p for p in admission.plugins if p.name == "PodSecurity"]
    assert plugin.path is None, "kubesmith embeds the configuration"
    return PodSecurityConfiguration.model_validate(plugin.configuration)


# --- apiserver.config.k8s.io/{v1beta1,v1} AuthenticationConfiguration -------------------------


class Issuer(_Strict):
    url: str
    discoveryURL: str | None = None
    certificateAuthority: str | None = None
    audiences: list[str] = Field(min_length=1)
    audienceMatchPolicy: Literal["MatchAny"] | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        assert re.fullmatch(r"https://[^/?#@\s]+(/[^?#\s]*)?", value), value
        return value

    @field_validator("audiences")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        assert all(value), value
        assert len(set(value)) == len(value), value
        return value

    @field_validator("certificateAuthority")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value is not None:
            assert x509.load_pem_x509_certificates(value.encode())
        return value


class PrefixedClaimOrExpression(_Strict):
    claim: str | None = None
    prefix: str | None = None
    expression: str | None = None

    def check(self) -> None:
        # kube-apiserver: claim or expression, not both; a claim needs an explicit prefix.
        assert (self.claim is None) != (self.expression is None)
        assert self.claim is None or self.prefix is not None


class ClaimMappings(_Strict):
    username: PrefixedClaimOrExpression
    groups: PrefixedClaimOrExpression | None = None
    uid: dict[str, str] | None = None
    extra: list[dict[str, str]] | None = None


class JWTAuthenticator(_Strict):
    issuer: Issuer
    claimValidationRules: list[dict[str, str]] | None = None
    claimMappings: ClaimMappings
    userValidationRules: list[dict[str, str]] | None = None


class AuthenticationConfiguration(_Strict):
    apiVersion: Literal["apiserver.config.k8s.io/v1beta1", "apiserver.config.k8s.io/v1"]
    kind: Literal["AuthenticationConfiguration"]
    jwt: list[JWTAuthenticator]
    anonymous: dict[str, Any] | None = None


def authentication_of(document: dict[str, Any] | None) -> AuthenticationConfiguration:
    assert document is not None
    parsed = AuthenticationConfiguration.model_validate(document)
    for authenticator in parsed.jwt:
        authenticator.claimMappings.username.check()
        if authenticator.claimMappings.groups is not None:
            authenticator.claimMappings.groups.check()
    return parsed


def issuer_ca(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    path.write_text(pem, encoding="utf-8")
    return pem


def version_of(minor: str) -> str:
    return next(v for v in versions.kubernetes_versions() if v.startswith(minor + "."))


OIDC = {"issuerUrl": "https://login.example.com/realms/k8s", "clientId": "kubernetes"}


# --- Pod Security admission ------------------------------------------------------------------


def test_by_default_baseline_is_enforced_and_restricted_warned_and_audited() -> None:
    config = pod_security_of(admission_configuration(local_spec()))
    defaults = config.defaults
    assert (defaults.enforce, defaults.warn, defaults.audit) == (
        "baseline",
        "restricted",
        "restricted",
    )
    assert {defaults.enforce_version, defaults.warn_version, defaults.audit_version} == {"latest"}
    # Add-ons that need another level say so with their namespace's labels: no exemption.
    assert config.exemptions == PodSecurityExemptions()


@pytest.mark.parametrize("level", ["privileged", "baseline", "restricted"])
def test_the_stack_chooses_each_level(level: str) -> None:
    spec = local_spec(podSecurity={"enforce": level, "warn": "baseline", "audit": level})
    defaults = pod_security_of(admission_configuration(spec)).defaults
    assert (defaults.enforce, defaults.warn, defaults.audit) == (level, "baseline", level)


def test_the_model_would_catch_a_broken_admission_configuration() -> None:
    document = admission_configuration(local_spec())
    document["plugins"][0]["configuration"]["defaults"]["enforce"] = "strict"
    with pytest.raises(ValueError, match="enforce"):
        pod_security_of(document)
    document = admission_configuration(local_spec())
    document["plugins"][0]["configuration"]["exemption"] = {}
    with pytest.raises(ValueError, match="exemption"):
        pod_security_of(document)


# --- OIDC ----------------------------------------------------------------------------------


def test_without_oidc_there_is_no_authentication_configuration() -> None:
    assert local_spec().oidc is None
    assert authentication_configuration(local_spec()) is None


@pytest.mark.parametrize("minor", PINNED_MINORS)
def test_each_pinned_minor_gets_the_api_version_it_serves(minor: str, tmp_path: Path) -> None:
    pem = issuer_ca(tmp_path / "ca.pem")
    spec = local_spec(
        kubernetesVersion=version_of(minor), oidc={**OIDC, "caFile": str(tmp_path / "ca.pem")}
    )
    parsed = authentication_of(authentication_configuration(spec))
    # Structured authentication configuration: v1beta1 (on by default) 1.30-1.33, v1 from 1.34.
    expected = "v1beta1" if minor == "1.33" else "v1"
    assert parsed.apiVersion == f"apiserver.config.k8s.io/{expected}"
    (jwt,) = parsed.jwt
    assert jwt.issuer.url == OIDC["issuerUrl"]
    assert jwt.issuer.audiences == ["kubernetes"]
    assert jwt.issuer.certificateAuthority == pem


def test_claims_and_prefixes_default_to_sub_and_groups_under_oidc() -> None:
    (jwt,) = authentication_of(authentication_configuration(local_spec(oidc=OIDC))).jwt
    assert jwt.issuer.certificateAuthority is None
    assert jwt.claimMappings.username == PrefixedClaimOrExpression(claim="sub", prefix="oidc:")
    assert jwt.claimMappings.groups == PrefixedClaimOrExpression(claim="groups", prefix="oidc:")


def test_an_empty_prefix_is_kept_as_the_explicit_choice() -> None:
    spec = local_spec(oidc={**OIDC, "usernameClaim": "email", "usernamePrefix": ""})
    (jwt,) = authentication_of(authentication_configuration(spec)).jwt
    assert jwt.claimMappings.username == PrefixedClaimOrExpression(claim="email", prefix="")


def test_only_the_certificates_of_the_ca_file_are_sent(tmp_path: Path) -> None:
    pem = issuer_ca(tmp_path / "ca.pem")
    # A bundle with a key in it (a mistake) and text around the certificate.
    (tmp_path / "bundle.pem").write_text(
        "issuer CA\n" + pem + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    spec = local_spec(oidc={**OIDC, "caFile": str(tmp_path / "bundle.pem")})
    (jwt,) = authentication_of(authentication_configuration(spec)).jwt
    assert jwt.issuer.certificateAuthority == pem


def test_a_ca_file_gone_after_the_spec_was_read_is_named(tmp_path: Path) -> None:
    issuer_ca(tmp_path / "ca.pem")
    spec = local_spec(oidc={**OIDC, "caFile": str(tmp_path / "ca.pem")})
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ConfigError) as info:
        authentication_configuration(spec)
    (line,) = info.value.problems
    assert line.startswith("kubesmith:cluster.oidc.caFile: cannot read ")


@pytest.mark.parametrize(
    ("oidc", "line"),
    [
        (
            {**OIDC, "issuerUrl": "https://login.example.com/?realm=k8s"},
            "kubesmith:cluster.oidc.issuerUrl: must be an https URL",
        ),
        (
            {**OIDC, "issuerUrl": "https://user@login.example.com"},
            "kubesmith:cluster.oidc.issuerUrl: must be an https URL",
        ),
        ({**OIDC, "clientId": " k "}, "kubesmith:cluster.oidc.clientId: must be a non-empty name"),
        (
            {**OIDC, "usernameClaim": ""},
            "kubesmith:cluster.oidc.usernameClaim: must be a non-empty",
        ),
        (
            {**OIDC, "usernamePrefix": "system:"},
            "kubesmith:cluster.oidc.usernamePrefix: must not start with 'system:'",
        ),
        ({**OIDC, "caFile": "ca.pem"}, "kubesmith:cluster.oidc.caFile: must be an absolute path"),
        (
            {**OIDC, "groupClaim": "g"},
            "kubesmith:cluster.oidc.groupClaim: unknown key (did you mean 'groupsClaim'?)",
        ),
        ({"clientId": "k"}, "kubesmith:cluster.oidc.issuerUrl: is required"),
    ],
)
def test_bad_oidc_settings_are_one_line_each(oidc: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as info:
        local_spec(oidc=oidc)
    (problem,) = info.value.problems
    assert problem.startswith(line), problem


def test_an_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        local_spec(oidc={**OIDC, "caFile": str(tmp_path / "ca.pem")})
    assert info.value.problems == [
        f"kubesmith:cluster.oidc.caFile: {tmp_path / 'ca.pem'} holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----)"
    ]
    with pytest.raises(ConfigError) as info:
        local_spec(oidc={**OIDC, "caFile": str(tmp_path)})
    (problem,) = info.value.problems
    assert problem.startswith(f"kubesmith:cluster.oidc.caFile: cannot read {tmp_path}: ")


# --- flags: the files are named; the flags that would bypass the settings are refused -----


@pytest.mark.parametrize("minor", PINNED_MINORS)
def test_the_file_flags_exist_in_every_pinned_minor(minor: str) -> None:
    known = flags.known_flags("kube-apiserver", minor)
    assert {"admission-control-config-file", "authentication-config"} <= known


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        ("oidc-issuer-url", "kubesmith:cluster.oidc"),
        ("oidc-client-id", "kubesmith:cluster.oidc"),
        ("--oidc-ca-file", "kubesmith:cluster.oidc"),
        ("authentication-config", "kubesmith:cluster.oidc"),
        ("admission-control-config-file", "kubesmith:cluster.podSecurity"),
    ],
)
def test_extra_args_that_bypass_the_settings_are_refused_naming_them(
    flag: str, setting: str
) -> None:
    (problem,) = flags.extra_args_problems({"kube-apiserver": {flag: "x"}}, "1.35", "lab.yml")
    assert problem.startswith(
        f"lab.yml: kubesmith_extra_args.kube-apiserver: --{flag.removeprefix('--')} is refused: "
    )
    assert setting in problem


# --- the control_plane role's side (Ansible evaluating the role's own variables) -------------

ROLE_EXPRESSIONS = {
    "apiserver": "__control_plane_units['kube-apiserver'] | systemd_unit",
    "files": "__control_plane_all_files | map(attribute='dest') | list",
    "apiserver_files": (
        "__control_plane_all_files | selectattr('service', 'equalto', 'kube-apiserver')"
        " | map(attribute='dest') | list"
    ),
    "modes": "__control_plane_all_files | items2dict(key_name='dest', value_name='mode')",
    "admission": "__control_plane_all_files | selectattr('dest', 'search', 'admission')"
    " | map(attribute='content') | first | from_yaml",
    "authentication": "__control_plane_all_files | selectattr('dest', 'search', 'authentication')"
    " | map(attribute='content') | list | map('from_yaml') | list",
}
ADMISSION = "/etc/kubernetes/admission-config.yaml"
AUTHENTICATION = "/etc/kubernetes/authentication-config.yaml"


def role_values(
    directory: Path, spec_settings: dict[str, Any]
) -> tuple[ClusterSpec, dict[str, Any]]:
    inventory = lab(directory / "lab", workers=0, **spec_settings)
    variables = site_variables(inventory, prepare(inventory), "local-cp-1")
    # The probe's result, as on a node where nothing is written yet.
    variables["__control_plane_probe"] = {"stdout": '{"paths": {}, "pki": "0", "services": {}}'}
    # The play runs on localhost, outside the inventory's groups.
    variables["control_plane_etcd_addresses"] = [variables["kubesmith_node_ip"]]
    return inventory.cluster.spec, evaluate(directory / "eval", variables, ROLE_EXPRESSIONS)


def test_the_role_writes_both_files_root_only_and_names_them_in_the_apiserver_flags(
    tmp_path: Path,
) -> None:
    issuer_ca(tmp_path / "ca.pem")
    settings = {
        "podSecurity": {"enforce": "restricted"},
        "oidc": {**OIDC, "caFile": str(tmp_path / "ca.pem")},
    }
    spec, values = role_values(tmp_path, settings)
    _, apiserver = flags.parse_exec_start(values["apiserver"])
    assert apiserver["admission-control-config-file"] == ADMISSION
    assert apiserver["authentication-config"] == AUTHENTICATION
    assert flags.problems("kube-apiserver", spec.kubernetes_minor, apiserver) == []
    # Both restart the apiserver when they change; both root-only.
    assert {ADMISSION, AUTHENTICATION} <= set(values["apiserver_files"])
    assert values["modes"][ADMISSION] == values["modes"][AUTHENTICATION] == "0600"
    # What the node gets is what kubesmith built, serialised without loss.
    assert values["admission"] == admission_configuration(spec)
    assert pod_security_of(values["admission"]).defaults.enforce == "restricted"
    assert values["authentication"] == [authentication_configuration(spec)]


def test_without_oidc_the_role_writes_no_authentication_file_nor_flag(tmp_path: Path) -> None:
    _, values = role_values(tmp_path, {})
    _, apiserver = flags.parse_exec_start(values["apiserver"])
    assert "authentication-config" not in apiserver
    assert AUTHENTICATION not in values["files"]
    assert apiserver["admission-control-config-file"] == ADMISSION
    assert pod_security_of(values["admission"]).defaults.enforce == "baseline"
