"""Inventory checks run before any host is contacted: one line naming file, group or host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesmith.errors import UserError
from kubesmith.nodes import Node
from kubesmith.provision.inventory import build_inventory, dump_inventory, load_inventory
from kubesmith.spec import parse_cluster


def lab_inventory(planes: int = 3, workers: int = 2) -> dict[str, Any]:
    spec = parse_cluster(
        {"name": "t1", "backend": "lxd", "controlPlanes": planes, "workers": workers, "lxd": {}}
    )
    nodes = [
        Node(f"t1-cp-{n}", "control_plane", f"10.203.0.{10 + n}", None, "root")
        for n in range(1, planes + 1)
    ]
    nodes += [
        Node(f"t1-worker-{n}", "worker", f"10.203.0.{20 + n}", None, "root")
        for n in range(1, workers + 1)
    ]
    return build_inventory(spec, nodes, endpoint="https://10.203.0.11:6443")


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(data if isinstance(data, str) else dump_inventory(data), encoding="utf-8")  # type: ignore[arg-type]
    return path


def test_groups_resolve_through_children(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, lab_inventory()))
    assert inventory.hosts_in("etcd") == ["t1-cp-1", "t1-cp-2", "t1-cp-3"]
    assert inventory.hosts_in("kube_node") == ["t1-worker-1", "t1-worker-2"]
    assert set(inventory.hosts_in("k8s_cluster")) == set(inventory.hostvars)
    assert inventory.groups_of("t1-worker-1") == {"all", "kube_node", "k8s_cluster"}
    assert inventory.path.is_absolute()


def test_identities_carry_node_address_and_groups(tmp_path: Path) -> None:
    data = lab_inventory(planes=1, workers=1)
    data["all"]["hosts"]["t1-cp-1"]["ansible_host"] = "cp1.example.test"
    identities = {i.name: i for i in load_inventory(write(tmp_path, data)).identities()}
    plane = identities["t1-cp-1"]
    assert [str(a) for a in plane.addresses] == ["10.203.0.11"]
    assert plane.dns_names == ("cp1.example.test",)
    assert "etcd" in plane.groups
    assert "etcd" not in identities["t1-worker-1"].groups


def _drop_group(group: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        del data["all"]["children"][group]

    return edit


def _set(path: tuple[str, ...], value: object) -> Any:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _drop_group("etcd"),
            "missing group 'etcd' "
            "(kubesmith needs etcd, kube_control_plane, kube_node, k8s_cluster)",
        ),
        (_set(("all", "children", "etcd", "hosts"), {}), "group 'etcd' has no hosts"),
        (
            _set(("all", "children", "etcd", "hosts"), {f"t1-cp-{i}": None for i in range(8)}),
            "group 'etcd' has 8 hosts; at most 7 (every write waits for a majority of them)",
        ),
        (
            _set(("all", "hosts", "t1-cp-2", "kubesmith_node_ip"), None),
            "host 't1-cp-2' has no kubesmith_node_ip (etcd listens on it)",
        ),
        (
            _set(("all", "hosts", "t1-cp-2", "kubesmith_node_ip"), "cp2"),
            "host 't1-cp-2': kubesmith_node_ip 'cp2' is not an IP address",
        ),
        (
            _set(("all", "hosts", "t1-worker-1", "ansible_host"), ""),
            "host 't1-worker-1' has no ansible_host",
        ),
        (
            _set(("all", "vars", "kubesmith_cluster"), None),
            "all.vars.kubesmith_cluster is missing: the inventory names no cluster "
            "(kubesmith writes it: kubesmith lab up, or kubesmith inventory -s STACK)",
        ),
        (
            _set(("all", "children", "etcd"), ["t1-cp-1"]),
            "group 'etcd' must be a mapping, got list",
        ),
    ],
)
def test_bad_inventories_fail_with_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    data = lab_inventory()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(UserError) as caught:
        load_inventory(path)
    assert (
        str(caught.value) == f"{path.resolve()}: {message}"
        or str(caught.value) == f"{path}: {message}"
    )
    assert "\n" not in str(caught.value)


def test_unparseable_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    a: [unclosed\n")
    with pytest.raises(UserError, match=r"inventory.yml:\d+: not a YAML inventory"):
        load_inventory(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope.yml: no such inventory file"):
        load_inventory(tmp_path / "nope.yml")


def test_kubesmith_inventory_round_trips_through_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, lab_inventory())
    assert yaml.safe_load(path.read_text())["all"]["vars"]["kubesmith_cluster"]["name"] == "t1"
