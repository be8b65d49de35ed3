"""The inventory builder: the groups and variables every backend's nodes end up in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubesmith.nodes import Node, Role, node_name
from kubesmith.provision.inventory import GROUPS, api_endpoint, build_inventory, dump_inventory
from kubesmith.spec import ClusterSpec, parse_cluster


def spec(planes: int = 1, workers: int = 2, backend: str = "lxd") -> ClusterSpec:
    raw: dict[str, object] = {
        "name": "c1",
        "backend": backend,
        "controlPlanes": planes,
        "workers": workers,
    }
    if backend == "lxd":
        raw["lxd"] = {}
    else:
        raw["aws"] = {
            "region": "eu-west-1",
            "availabilityZones": ["eu-west-1a"],
            "adminCidrs": ["10.9.0.0/16"],
        }
    return parse_cluster(raw)


def nodes(planes: int, workers: int, public: bool = False) -> list[Node]:
    made: list[Node] = []
    counts: tuple[tuple[Role, int], ...] = (("control_plane", planes), ("worker", workers))
    for role, count in counts:
        for i in range(1, count + 1):
            made.append(
                Node(
                    name=node_name("c1", role, i),
                    role=role,
                    private_address=f"10.203.0.{len(made) + 10}",
                    public_address=f"198.51.100.{len(made) + 10}" if public else None,
                    ssh_user="admin" if public else "root",
                )
            )
    return made


def test_groups_hold_the_right_hosts() -> None:
    cluster = nodes(3, 2)
    inv = build_inventory(spec(3, 2), cluster, endpoint="https://lb:6443")
    children = inv["all"]["children"]
    assert set(children) == set(GROUPS)
    planes = ["c1-cp-1", "c1-cp-2", "c1-cp-3"]
    assert list(children["etcd"]["hosts"]) == planes
    assert list(children["kube_control_plane"]["hosts"]) == planes
    assert list(children["kube_node"]["hosts"]) == ["c1-worker-1", "c1-worker-2"]
    assert set(children["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node"}
    assert set(inv["all"]["hosts"]) == set(planes) | {"c1-worker-1", "c1-worker-2"}


def test_control_planes_run_pods_when_there_are_no_workers() -> None:
    inv = build_inventory(spec(1, 0), nodes(1, 0), endpoint="https://x:6443")
    assert list(inv["all"]["children"]["kube_node"]["hosts"]) == ["c1-cp-1"]


def test_host_and_cluster_variables() -> None:
    inv = build_inventory(
        spec(1, 1, backend="aws"),
        nodes(1, 1, public=True),
        endpoint="https://10.203.0.10:6443",
        ssh_private_key_file=Path("/k/id"),
        known_hosts_file=Path("/k/known_hosts"),
    )
    host = inv["all"]["hosts"]["c1-worker-1"]
    # The controller connects over the public address; the cluster talks over the private one.
    assert host["ansible_host"] == "198.51.100.11"
    assert host["kubesmith_node_ip"] == "10.203.0.11"
    assert host["ansible_become"] is True
    variables = inv["all"]["vars"]
    # The spec itself, not a flattened copy: it parses back to the same typed spec.
    assert parse_cluster(variables["kubesmith_cluster"]) == spec(1, 1, backend="aws")
    assert variables["kubesmith_api_endpoint"] == "https://10.203.0.10:6443"
    assert variables["ansible_ssh_private_key_file"] == "/k/id"
    assert "StrictHostKeyChecking=accept-new" in variables["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=/k/known_hosts" in variables["ansible_ssh_common_args"]


def test_root_nodes_need_no_become() -> None:
    inv = build_inventory(spec(), nodes(1, 2), endpoint="https://x:6443")
    assert "ansible_become" not in inv["all"]["hosts"]["c1-cp-1"]


def test_dump_is_ansible_yaml_that_round_trips() -> None:
    inv = build_inventory(spec(), nodes(1, 2), endpoint="https://x:6443")
    assert yaml.safe_load(dump_inventory(inv)) == inv


def test_duplicate_names_are_refused() -> None:
    twice = nodes(1, 0) * 2
    with pytest.raises(ValueError, match="unique"):
        build_inventory(spec(), twice, endpoint="https://x:6443")


def test_api_endpoint_prefers_the_load_balancer() -> None:
    assert api_endpoint(spec(3, 0, "aws"), nodes(3, 0), "nlb.example") == "https://nlb.example:6443"
    assert api_endpoint(spec(1, 0), nodes(1, 0)) == "https://10.203.0.10:6443"
    # Local HA: each node's own proxy in front of every apiserver.
    assert api_endpoint(spec(3, 0), nodes(3, 0)) == "https://127.0.0.1:6443"
    with pytest.raises(ValueError, match="control-plane"):
        api_endpoint(spec(), [])


def test_node_shape_round_trips() -> None:
    for node in nodes(1, 1, public=True) + nodes(1, 1):
        out = node.to_output()
        assert set(out) == {"name", "role", "privateAddress", "publicAddress", "sshUser"}
        assert Node.from_output(out) == node


def test_unknown_role_is_refused() -> None:
    out = nodes(1, 0)[0].to_output() | {"role": "master"}
    with pytest.raises(ValueError, match="unknown role 'master'"):
        Node.from_output(out)
