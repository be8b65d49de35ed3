"""The cluster spec: one typed, immutable description of a cluster, read from `kubesmith:cluster`.

Validation reports every problem at once, one line each, naming the key path the user wrote
(``kubesmith:cluster.lxd.subnet: ...``). Per-field rules live on the models; rules that relate
several fields (overlapping ranges, clusterDns inside serviceCidr, the section the backend
needs) run on the raw mapping with tolerant parsing, so they are reported even when other
fields are broken.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from kubesmith import versions
from kubesmith.errors import ConfigError

CONFIG_KEY = "kubesmith:cluster"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_MEMORY = re.compile(r"^[1-9][0-9]*(MiB|GiB|MB|GB)$")
_OPEN_TO_WORLD = ipaddress.ip_network("0.0.0.0/0")

Network = ipaddress.IPv4Network


def _parse_cidr(value: object) -> Network:
    """A strict IPv4 network (host bits must be zero), or ValueError with a short reason."""
    if not isinstance(value, str):
        raise ValueError(f"must be a CIDR string such as 10.0.0.0/16, got {value!r}")
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"must be an IPv4 CIDR such as 10.0.0.0/16, got {value!r} ({exc})"
        ) from exc


def _cidr_text(value: str) -> str:
    _parse_cidr(value)
    return value


#: A CIDR kept as the text the user wrote, validated strictly (no host bits).
Cidr = Annotated[StrictStr, AfterValidator(_cidr_text)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class LxdSpec(_Model):
    """The local backend: LXD system containers on a project-owned bridge."""

    network: StrictStr = "kubesmith0"
    subnet: StrictStr = "10.203.0.0/24"
    cpu: StrictInt = Field(default=2, ge=1, le=64)
    memory: StrictStr = "2GiB"
    storage_pool: StrictStr = "kubesmith"
    image: StrictStr = "kubesmith-node"
    #: Bake the node base's Debian packages (kubesmith.provision.packages) into the built
    #: image, so provisioning a node from it runs no apt transaction.
    image_node_base: StrictBool = True
    #: Also bake the Kubernetes binaries of ``kubernetesVersion`` into the built image (all six,
    #: verified like any download; needs the internet or ``artifacts.mirrorBaseUrl``), so
    #: provisioning finds them in place and installs none.
    image_kubernetes_binaries: StrictBool = False
    #: An image alias on a remote (``images:debian/12``) for users with internet access.
    remote_image: StrictStr | None = None

    @field_validator("network", "storage_pool")
    @classmethod
    def _lxd_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,14}", value):
            raise ValueError(
                "must be 1-15 lowercase letters, digits or '-', starting with a letter, "
                f"got {value!r}"
            )
        return value

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        net = _parse_cidr(value)
        if net.prefixlen > 29:
            raise ValueError(
                f"must hold at least 8 addresses (prefix /29 or shorter), got {value!r}"
            )
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.fullmatch(value):
            raise ValueError(f"must be a size such as 2GiB or 512MiB, got {value!r}")
        return value

    @property
    def subnet_network(self) -> Network:
        return ipaddress.IPv4Network(self.subnet)


class AwsSpec(_Model):
    """The AWS backend: one VPC, a subnet per availability zone, EC2 nodes, an NLB when HA."""

    region: StrictStr
    vpc_cidr: StrictStr = "10.0.0.0/16"
    availability_zones: list[StrictStr] = Field(min_length=1)
    control_plane_instance_type: StrictStr = "t3.medium"
    worker_instance_type: StrictStr = "t3.medium"
    #: Who may reach SSH (22) and the Kubernetes API (6443). No default: open nothing by accident.
    admin_cidrs: list[Cidr] = Field(min_length=1)
    root_volume_gib: StrictInt = Field(default=30, ge=10, le=16384)
    ssh_user: StrictStr = "admin"

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
            raise ValueError(f"must be an AWS region such as eu-west-1, got {value!r}")
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, value: str) -> str:
        net = _parse_cidr(value)
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"must be a /16 to /24 network (AWS VPC limits), got {value!r}")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat a zone, got {value!r}")
        return value

    @property
    def vpc_network(self) -> Network:
        return ipaddress.IPv4Network(self.vpc_cidr)


ArtifactSource = Literal["distro", "release"]


def mirror_problem(url: str) -> str | None:
    """Why ``url`` cannot be a mirror base, or None: a served mirror (http/https) or a
    directory on the controller (file:///DIR; `kubesmith artifacts fetch --dest DIR` fills
    either)."""
    if re.fullmatch(r"https?://[^/\s]+(/\S*)?|file:///\S*", url):
        return None
    return (
        "must be an http(s) URL such as https://mirror.example/files or a directory "
        f"as file:///srv/mirror, got {url!r}"
    )


class ArtifactsSpec(_Model):
    """Where node components (etcd, containerd, runc, CNI plugins, crictl) come from.

    ``release``: the upstream download pinned by sha256 in versions.yaml, fetched once to the
    controller's cache (from ``mirrorBaseUrl`` when set, for air-gapped sites). ``distro``:
    Debian packages. Unset, the backend decides: ``distro`` for lxd (works without internet
    access through the local bridge's NAT to the Debian archive), ``release`` for aws.

    ``kubernetesBinaries: false`` provisions everything but the Kubernetes binaries: every
    certificate, configuration, unit, CNI file and route is written, nothing is downloaded,
    installed or started (a configuration-only cluster, for machines that cannot download the
    server tarball; `kubesmith provision --kubernetes-binaries` overrides it for one run).
    """

    source: ArtifactSource | None = None
    mirror_base_url: StrictStr | None = None
    kubernetes_binaries: StrictBool = True
    #: Per-component override of ``source``, e.g. ``{etcd: release}``.
    components: dict[StrictStr, ArtifactSource] = Field(default_factory=dict)

    @field_validator("mirror_base_url")
    @classmethod
    def _mirror(cls, value: str | None) -> str | None:
        problem = None if value is None else mirror_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("components")
    @classmethod
    def _known_components(cls, value: dict[str, str]) -> dict[str, str]:
        pinned = versions.components()
        for name, source in value.items():
            if name not in pinned:
                raise ValueError(f"unknown component {name!r} (components: {', '.join(pinned)})")
            if source == "distro" and not pinned[name].distro_packages:
                raise ValueError(f"{name} is not packaged by Debian; use source release")
        return value


CniPlugin = Literal["bridge", "flannel"]
FlannelBackend = Literal["vxlan", "host-gw"]
NetworkPolicyAgent = Literal["none", "kube-router"]


class CniSpec(_Model):
    """The pod network: how pods on different nodes reach each other.

    ``bridge`` (the hard way): kubesmith carves a /24 of podCidr per node, puts the node's
    pods on a local bridge and routes every other node's /24 to it (no overlay, no daemon).
    ``flannel``: the flannel add-on; the controller-manager hands out the /24s and flannel
    carries pod traffic between nodes over ``flannelBackend``: ``vxlan`` (the default)
    encapsulates it, so it crosses subnets and zones; ``host-gw`` routes it unencapsulated,
    which needs every node on one layer-2 network.

    Neither plugin enforces NetworkPolicy. ``networkPolicy`` names the agent that does:
    ``none`` (the default: policies are stored by the API and ignored) or ``kube-router``
    (kube-router's network policy firewall alone, beside either plugin, as k3s embeds it).
    """

    plugin: CniPlugin = "bridge"
    flannel_backend: FlannelBackend | None = None
    network_policy: NetworkPolicyAgent = "none"

    @field_validator("flannel_backend")
    @classmethod
    def _backend_needs_flannel(
        cls, value: FlannelBackend | None, info: ValidationInfo
    ) -> FlannelBackend | None:
        # A broken plugin value is reported on its own key; judge only a valid one.
        plugin = info.data.get("plugin")
        if value is not None and plugin is not None and plugin != "flannel":
            raise ValueError(f"applies to plugin flannel only, plugin is {plugin!r}")
        return value

    @property
    def backend(self) -> FlannelBackend:
        """The flannel backend in effect (vxlan unless flannelBackend says otherwise)."""
        return self.flannel_backend or "vxlan"

    @property
    def enforces_network_policy(self) -> bool:
        """Whether anything on the cluster enforces NetworkPolicy objects."""
        return self.network_policy != "none"


class AppRef(_Model):
    """An application from templates/apps/ to deploy on the cluster, with stack-level values."""

    name: StrictStr
    values: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DNS1123_LABEL.fullmatch(value) or len(value) > 63:
            raise ValueError(f"must be a DNS-1123 label (lowercase, digits, '-'), got {value!r}")
        return value


PodSecurityLevel = Literal["privileged", "baseline", "restricted"]


class PodSecuritySpec(_Model):
    """The Pod Security Standards level kube-apiserver's PodSecurity admission applies to every
    namespace without its own ``pod-security.kubernetes.io/*`` labels: ``enforce`` refuses a
    pod that breaks it, ``warn`` tells the client, ``audit`` marks the audit event."""

    enforce: PodSecurityLevel = "baseline"
    warn: PodSecurityLevel = "restricted"
    audit: PodSecurityLevel = "restricted"


def issuer_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an OIDC issuer for kube-apiserver, or None: https, a host, no
    query, fragment or user info (the apiserver compares it with the tokens' ``iss``)."""
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
        or re.search(r"\s", url)
    ):
        return (
            "must be an https URL without query, fragment or user info, such as "
            f"https://login.example.com/realms/k8s, got {url!r}"
        )
    return None


def read_ca_bundle(path: str) -> str:
    """The PEM text of the certificates at ``path`` (a file on the controller, ``~`` expanded),
    or ValueError naming why it cannot be used: missing, unreadable, not PEM certificates."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        raise ValueError(f"must be an absolute path (or start with ~/), got {path!r}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates)


class OidcSpec(_Model):
    """OpenID Connect: kube-apiserver accepts ID tokens of one issuer for ``clientId``, the
    user named by ``usernameClaim`` (prefixed), in the groups of ``groupsClaim`` (prefixed).
    ``caFile``: the issuer's CA on the controller, for an issuer whose certificate the nodes'
    system CAs do not verify."""

    issuer_url: StrictStr
    client_id: StrictStr
    username_claim: StrictStr = "sub"
    username_prefix: StrictStr = "oidc:"
    groups_claim: StrictStr = "groups"
    groups_prefix: StrictStr = "oidc:"
    ca_file: StrictStr | None = None

    @field_validator("issuer_url")
    @classmethod
    def _issuer(cls, value: str) -> str:
        problem = issuer_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("client_id", "username_claim", "groups_claim")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError(f"must be a non-empty name without surrounding spaces, got {value!r}")
        return value

    @field_validator("username_prefix", "groups_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # Tokens must not name Kubernetes' own identities (system:masters, system:nodes, ...).
        if value.startswith("system:"):
            raise ValueError(f"must not start with 'system:' (reserved), got {value!r}")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None:
            read_ca_bundle(value)
        return value

    @property
    def ca_pem(self) -> str | None:
        """The issuer's CA certificates as PEM text (read from caFile now), or None."""
        return None if self.ca_file is None else read_ca_bundle(self.ca_file)


class UpgradeSpec(_Model):
    """How a Kubernetes version change rolls through the cluster (docs/runbooks/upgrade.md):
    control planes one at a time, then the other nodes ``maxUnavailable`` at a time, each
    batch drained before and uncordoned after."""

    max_unavailable: StrictInt = Field(default=1, ge=1, le=500)


class ClusterSpec(_Model):
    """Everything kubesmith needs to know about one cluster."""

    name: StrictStr
    backend: Literal["lxd", "aws"]
    production: StrictBool = False
    kubernetes_version: StrictStr = Field(default_factory=versions.default_kubernetes_version)
    control_planes: StrictInt = 1
    workers: StrictInt = Field(default=0, ge=0, le=500)
    pod_cidr: Cidr = "10.244.0.0/16"
    service_cidr: Cidr = "10.96.0.0/12"
    cluster_dns: StrictStr | None = None
    cni: CniSpec = Field(default_factory=CniSpec)
    lxd: LxdSpec | None = None
    aws: AwsSpec | None = None
    apps: list[AppRef] = Field(default_factory=list)
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    pod_security: PodSecuritySpec = Field(default_factory=PodSecuritySpec)
    oidc: OidcSpec | None = None
    upgrade: UpgradeSpec = Field(default_factory=UpgradeSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 40 or not _DNS1123_LABEL.fullmatch(value):
            raise ValueError(
                "must be a DNS-1123 label of at most 40 characters "
                f"(lowercase letters, digits, '-'), got {value!r}"
            )
        return value

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        pinned = versions.kubernetes_versions()
        if not _VERSION.fullmatch(value):
            raise ValueError(f"must be a version such as {pinned[0]}, got {value!r}")
        if value not in pinned:
            # Listed with kubelet/kubectl sums but no server tarball checksum: say so, since
            # that is the one thing missing before it could be installed.
            listed = value in versions.load()["kubernetes"]["versions"]
            why = (
                "has no published server tarball checksum pinned in versions.yaml"
                if listed
                else "is not pinned by kubesmith"
            )
            raise ValueError(f"{value} {why}; pick one of {', '.join(pinned)}")
        return value

    @field_validator("control_planes")
    @classmethod
    def _control_planes(cls, value: int) -> int:
        if value < 1 or value % 2 == 0 or value > 7:
            raise ValueError(f"must be 1 or an odd number >= 3 (at most 7), got {value}")
        return value

    @field_validator("cluster_dns")
    @classmethod
    def _dns(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError(f"must be an IPv4 address, got {value!r}") from None
        return value

    @field_validator("apps")
    @classmethod
    def _unique_apps(cls, value: list[AppRef]) -> list[AppRef]:
        names = [app.name for app in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"lists an app more than once: {', '.join(dupes)}")
        return value

    # Derived values: computed from the fields, never stored twice.

    @property
    def pod_network(self) -> Network:
        return ipaddress.IPv4Network(self.pod_cidr)

    @property
    def service_network(self) -> Network:
        return ipaddress.IPv4Network(self.service_cidr)

    @property
    def dns_address(self) -> str:
        """clusterDns, or the tenth address of serviceCidr (the kubeadm convention)."""
        return self.cluster_dns or str(self.service_network.network_address + 10)

    @property
    def api_service_address(self) -> str:
        """The first address of serviceCidr: the in-cluster `kubernetes` Service."""
        return str(self.service_network.network_address + 1)

    @property
    def ha(self) -> bool:
        return self.control_planes > 1

    @property
    def node_network(self) -> Network:
        if self.backend == "lxd":
            assert self.lxd is not None
            return self.lxd.subnet_network
        assert self.aws is not None
        return self.aws.vpc_network

    def artifact_source(self, component: str) -> ArtifactSource:
        """Where ``component`` comes from: its override, artifacts.source, or the backend's."""
        chosen = self.artifacts.components.get(component) or self.artifacts.source
        if chosen is None:
            chosen = "distro" if self.backend == "lxd" else "release"
        return chosen

    @property
    def kubernetes_minor(self) -> str:
        return "{}.{}".format(*versions.minor_of(self.kubernetes_version))


# --- validation ----------------------------------------------------------------------------

_MESSAGES = {
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "literal_error": "must be one of",
    "greater_than_equal": "must be >=",
    "less_than_equal": "must be <=",
    "too_short": "must not be empty",
}


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = CONFIG_KEY
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _model_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose fields are valid at ``loc`` (for did-you-mean hints)."""
    model: type[BaseModel] = ClusterSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if (f.alias or n) == part or n == part),
            None,
        )
        if field is None:
            return None
        nested = _nested_model(field.annotation)
        if nested is None:
            return None
        model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_for(loc[:-1])
        known = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
        return f"{_key_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{_key_path(loc)}: is required"
    if kind == "value_error":
        return f"{_key_path(loc)}: {error['ctx']['error']}"
    if kind == "literal_error":
        return f"{_key_path(loc)}: must be one of {error['ctx']['expected']}, got {got!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = error["ctx"].get("ge", error["ctx"].get("le"))
        return f"{_key_path(loc)}: {_MESSAGES[kind]} {bound}, got {got!r}"
    if kind == "too_short":
        return f"{_key_path(loc)}: must not be empty"
    message = _MESSAGES.get(kind, error["msg"].lower())
    return f"{_key_path(loc)}: {message}, got {got!r}"


def _maybe_cidr(raw: Mapping[str, Any], key: str) -> Network | None:
    try:
        return _parse_cidr(raw.get(key))
    except ValueError:
        return None


def _cidr_or_default(
    raw: Mapping[str, Any], key: str, model: type[BaseModel], field: str
) -> Network | None:
    """The network at ``key`` as written, the model's default when absent, None when malformed."""
    if key in raw:
        return _maybe_cidr(raw, key)
    return ipaddress.IPv4Network(model.model_fields[field].default)


def _cross_field_problems(raw: Mapping[str, Any]) -> Iterator[str]:
    backend = raw.get("backend")
    section = raw.get(backend) if isinstance(backend, str) else None
    if backend in ("lxd", "aws") and section is None:
        yield f"{_key_path((backend,))}: is required when backend is {backend!r}"
    section = section if isinstance(section, Mapping) else {}

    ranges: dict[str, Network | None] = {
        "podCidr": _cidr_or_default(raw, "podCidr", ClusterSpec, "pod_cidr"),
        "serviceCidr": _cidr_or_default(raw, "serviceCidr", ClusterSpec, "service_cidr"),
    }
    if backend == "lxd":
        ranges["lxd.subnet"] = _cidr_or_default(section, "subnet", LxdSpec, "subnet")
    elif backend == "aws":
        ranges["aws.vpcCidr"] = _cidr_or_default(section, "vpcCidr", AwsSpec, "vpc_cidr")
    names = list(ranges)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = ranges[first], ranges[second]
            if a is not None and b is not None and a.overlaps(b):
                yield f"{_key_path((first,))}: {a} overlaps {second} {b}"

    service = ranges["serviceCidr"]
    dns = raw.get("clusterDns")
    if service is not None and isinstance(dns, str):
        try:
            address = ipaddress.IPv4Address(dns)
        except ValueError:
            address = None
        if address is not None and address not in service:
            yield f"{_key_path(('clusterDns',))}: {dns} is outside serviceCidr {service}"
        elif address is not None and address in (
            service.network_address,
            service.network_address + 1,
        ):
            yield (
                f"{_key_path(('clusterDns',))}: {dns} is reserved (network address or the "
                "kubernetes Service)"
            )

    if backend == "aws" and raw.get("production") is True:
        for index, cidr in enumerate(section.get("adminCidrs") or []):
            if _maybe_cidr({"c": cidr}, "c") == _OPEN_TO_WORLD:
                yield (
                    f"{_key_path(('aws', 'adminCidrs', index))}: 0.0.0.0/0 opens SSH and the "
                    "API to the internet; not allowed when production is true"
                )
    zones = section.get("availabilityZones")
    cni = raw.get("cni")
    if (
        backend == "aws"
        and isinstance(cni, Mapping)
        and cni.get("flannelBackend") == "host-gw"
        and isinstance(zones, list)
        and len(zones) > 1
    ):
        # Each zone is its own subnet: a node in another zone is no direct next hop.
        yield (
            f"{_key_path(('cni', 'flannelBackend'))}: host-gw routes pods only between nodes "
            f"on one subnet, aws.availabilityZones has {len(zones)}; use vxlan"
        )
    planes = raw.get("controlPlanes", 1)
    if (
        backend == "aws"
        and raw.get("production") is True
        and isinstance(zones, list)
        and isinstance(planes, int)
        and planes > 1
        and len(zones) < 3
    ):
        yield (
            f"{_key_path(('aws', 'availabilityZones'))}: production with {planes} control planes "
            f"needs at least 3 zones, got {len(zones)}"
        )


def parse_cluster(raw: object) -> ClusterSpec:
    """Validate the `kubesmith:cluster` object; raise ConfigError listing every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [f"{CONFIG_KEY}: must be a mapping of settings, got {type(raw).__name__}"]
        )
    problems: list[str] = []
    spec: ClusterSpec | None = None
    try:
        spec = ClusterSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
    problems.extend(_cross_field_problems(raw))
    if problems or spec is None:
        raise ConfigError(dict.fromkeys(problems))
    return spec
