"""The cluster spec: defaults, derived values, and the rules that relate several fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kubesmith import versions
from kubesmith.errors import ConfigError
from kubesmith.spec import ClusterSpec, parse_cluster
from tests.conftest import REPO


def stack_cluster(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(document["config"]["kubesmith:cluster"])


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_cluster(raw)
    return info.value.problems


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_shipped_stacks_are_valid(stack: str) -> None:
    spec = parse_cluster(stack_cluster(stack))
    assert spec.name == stack


def test_stack_shapes_match_the_environments() -> None:
    local, dev, prod = (parse_cluster(stack_cluster(s)) for s in ("local", "dev", "prod"))
    assert (local.backend, local.control_planes, local.workers) == ("lxd", 1, 2)
    assert (dev.backend, dev.control_planes, dev.workers, dev.production) == ("aws", 1, 2, False)
    assert (prod.backend, prod.control_planes, prod.workers, prod.production) == ("aws", 3, 3, True)
    assert prod.aws is not None
    assert len(prod.aws.availability_zones) == 3
    for spec in (dev, prod):
        assert spec.aws is not None
        assert "0.0.0.0/0" not in spec.aws.admin_cidrs


def test_defaults_are_filled_and_derived_values_follow_the_ranges() -> None:
    spec = parse_cluster(
        {"name": "c1", "backend": "lxd", "lxd": {}, "serviceCidr": "10.100.0.0/16"}
    )
    assert spec.kubernetes_version == versions.default_kubernetes_version()
    assert spec.control_planes == 1
    assert spec.workers == 0
    assert not spec.ha
    assert spec.dns_address == "10.100.0.10"
    assert spec.api_service_address == "10.100.0.1"
    assert spec.lxd is not None
    assert str(spec.node_network) == spec.lxd.subnet


def test_explicit_cluster_dns_wins() -> None:
    spec = parse_cluster({"name": "c1", "backend": "lxd", "lxd": {}, "clusterDns": "10.96.0.53"})
    assert spec.dns_address == "10.96.0.53"


def test_spec_is_immutable() -> None:
    spec = parse_cluster(stack_cluster("local"))
    with pytest.raises(ValueError, match="frozen"):
        spec.workers = 5  # type: ignore[misc]


def test_every_problem_is_reported_at_once() -> None:
    raw = stack_cluster("prod")
    raw["controlPlanes"] = 2
    raw["workers"] = -1
    raw["podCidr"] = "10.96.0.0/16"
    raw["aws"]["adminCidrs"] = ["0.0.0.0/0"]
    found = problems(raw)
    assert len(found) == 4, found
    joined = "\n".join(found)
    for key in ("controlPlanes", "workers", "podCidr", "aws.adminCidrs[0]"):
        assert f"kubesmith:cluster.{key}" in joined


def test_open_admin_cidr_is_allowed_outside_production() -> None:
    raw = stack_cluster("dev")
    raw["aws"]["adminCidrs"] = ["0.0.0.0/0"]
    assert parse_cluster(raw).aws is not None


def test_only_pinned_kubernetes_versions_are_accepted() -> None:
    for pinned in versions.kubernetes_versions():
        raw = stack_cluster("local")
        raw["kubernetesVersion"] = pinned
        assert parse_cluster(raw).kubernetes_version == pinned
    raw = stack_cluster("local")
    raw["kubernetesVersion"] = "1.20.0"
    (message,) = problems(raw)
    assert message == (
        "kubesmith:cluster.kubernetesVersion: 1.20.0 is not pinned by kubesmith; pick one of "
        + ", ".join(versions.kubernetes_versions())
    )


def test_a_version_listed_without_its_server_checksum_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kubelet/kubectl sums alone do not make a version installable: every binary comes
    from the server tarball, so without its published checksum nothing could be installed."""
    pinned = versions.kubernetes_versions()
    major, minor, patch = pinned[-1].split(".")
    newer = f"{major}.{minor}.{int(patch) + 1}"
    data = copy.deepcopy(versions.load())
    entry = data["kubernetes"]["versions"][pinned[-1]]
    data["kubernetes"]["versions"][newer] = {
        "kubelet": entry["kubelet"],
        "kubectl": entry["kubectl"],
    }
    monkeypatch.setattr(versions, "load", lambda: data)
    raw = stack_cluster("local")
    raw["kubernetesVersion"] = newer
    assert problems(raw) == [
        f"kubesmith:cluster.kubernetesVersion: {newer} has no published server tarball checksum "
        f"pinned in versions.yaml; pick one of {', '.join(pinned)}"
    ]


@pytest.mark.parametrize("planes", [1, 3, 5, 7])
def test_odd_control_plane_counts_are_accepted(planes: int) -> None:
    raw = stack_cluster("local")
    raw["controlPlanes"] = planes
    assert parse_cluster(raw).ha is (planes > 1)


def test_model_round_trips_through_its_aliases() -> None:
    spec = parse_cluster(stack_cluster("prod"))
    again = ClusterSpec.model_validate(spec.model_dump(by_alias=True))
    assert again == spec


# --- the pod network (cni) ------------------------------------------------------------------


def test_the_pod_network_defaults_to_the_bridge_cni() -> None:
    spec = parse_cluster(stack_cluster("local"))
    assert spec.cni.plugin == "bridge"
    assert spec.cni.flannel_backend is None


@pytest.mark.parametrize(("backend", "in_effect"), [(None, "vxlan"), ("host-gw", "host-gw")])
def test_flannel_backend_defaults_to_vxlan(backend: str | None, in_effect: str) -> None:
    raw = stack_cluster("local")
    raw["cni"] = {"plugin": "flannel", **({"flannelBackend": backend} if backend else {})}
    spec = parse_cluster(raw)
    assert (spec.cni.plugin, spec.cni.backend) == ("flannel", in_effect)
    # What a lab re-validates (kubesmith.local.lab.lab_spec) is the same choice.
    assert parse_cluster(spec.model_dump(by_alias=True, exclude_none=True)).cni == spec.cni


@pytest.mark.parametrize(
    ("cni", "message"),
    [
        (
            {"plugin": "calico"},
            "kubesmith:cluster.cni.plugin: must be one of 'bridge' or 'flannel', got 'calico'",
        ),
        (
            {"plugin": "flannel", "flannelBackend": "udp"},
            "kubesmith:cluster.cni.flannelBackend: must be one of 'vxlan' or 'host-gw', got 'udp'",
        ),
        (
            {"flannelBackend": "vxlan"},
            "kubesmith:cluster.cni.flannelBackend: applies to plugin flannel only, "
            "plugin is 'bridge'",
        ),
        ({"plugn": "flannel"}, "kubesmith:cluster.cni.plugn: unknown key (did you mean 'plugin'?)"),
        ("flannel", "kubesmith:cluster.cni: must be a mapping, got 'flannel'"),
    ],
)
def test_bad_pod_network_settings_are_one_line_each(cni: object, message: str) -> None:
    raw = stack_cluster("local")
    raw["cni"] = cni
    assert problems(raw) == [message]


def test_a_bad_plugin_is_not_also_blamed_on_the_backend() -> None:
    raw = stack_cluster("local")
    raw["cni"] = {"plugin": "calico", "flannelBackend": "vxlan"}
    (message,) = problems(raw)
    assert message.startswith("kubesmith:cluster.cni.plugin: ")


def test_host_gw_is_refused_across_aws_zones() -> None:
    """host-gw routes to the other node directly: in another zone (subnet) it is no next hop."""
    raw = stack_cluster("prod")
    raw["cni"] = {"plugin": "flannel", "flannelBackend": "host-gw"}
    zones = len(raw["aws"]["availabilityZones"])
    assert problems(raw) == [
        "kubesmith:cluster.cni.flannelBackend: host-gw routes pods only between nodes on one "
        f"subnet, aws.availabilityZones has {zones}; use vxlan"
    ]
    raw["cni"] = {"plugin": "flannel"}
    assert parse_cluster(raw).cni.backend == "vxlan"
    raw = stack_cluster("dev")
    raw["aws"]["availabilityZones"] = raw["aws"]["availabilityZones"][:1]
    raw["cni"] = {"plugin": "flannel", "flannelBackend": "host-gw"}
    assert parse_cluster(raw).cni.backend == "host-gw"


@pytest.mark.parametrize(
    ("mirror", "accepted"),
    [
        ("https://mirror.example/files", True),
        ("http://10.0.0.5:8080", True),
        ("file:///srv/kubesmith-mirror", True),
        ("file://srv/mirror", False),
        ("ftp://mirror.example/files", False),
        ("/srv/mirror", False),
    ],
)
def test_a_mirror_is_a_served_url_or_a_local_directory(mirror: str, accepted: bool) -> None:
    raw = stack_cluster("local")
    raw["artifacts"] = {"mirrorBaseUrl": mirror}
    if accepted:
        assert parse_cluster(raw).artifacts.mirror_base_url == mirror
    else:
        assert problems(raw) == [
            "kubesmith:cluster.artifacts.mirrorBaseUrl: must be an http(s) URL such as "
            "https://mirror.example/files or a directory as file:///srv/mirror, "
            f"got {mirror!r}"
        ]
