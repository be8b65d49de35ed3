"""flannel as the pod network (kubesmith:cluster.cni.plugin flannel), checked at config level.

flannel itself cannot run on the project's machines (no Kubernetes binaries, no registry for
its images): these tests follow the choice from the stack config through the inventory and
`kubesmith.provision.kubernetes.prepare` to what Ansible renders from the roles' own variables
(a real ansible-playbook run on localhost that only evaluates them), and check the add-on's
manifests against the Kubernetes OpenAPI schemas of every pinned minor. Running flannel is
the e2e tier's job (docs/cluster.md, "What is verified where").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.apps import check_objects, render_addon
from kubesmith.cli import app
from kubesmith.errors import ConfigError, UserError
from kubesmith.provision import flags, kubernetes
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.target import Target, for_inventory
from kubesmith.provision.variables import cluster_variables
from kubesmith.state import records
from kubesmith.state.podcidr import ALLOCATIONS_FILE
from tests.clusterlab import air_project, listed_images, local_spec, write_inventory
from tests.conftest import REPO
from tests.roleeval import evaluate_in_play

ROLES = REPO / "playbooks" / "roles"
PINNED_MINORS = sorted({".".join(v.split(".")[:2]) for v in versions.kubernetes_versions()})
FLANNEL = {"plugin": "flannel"}
ADDON_VALUES = {
    "network": "10.244.0.0/16",
    "backend": "vxlan",
    "image": versions.image("flannel"),
    "cniPluginImage": versions.image("flannel_cni_plugin"),
    "cniBinDir": "/opt/cni/bin",
}


def by_kind(objects: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {o["kind"]: o for o in objects}


def no_probe(_target: Target, _hosts: Sequence[str]) -> dict[str, str]:
    raise AssertionError("nodes probed although no binary is needed")


def prepare(inventory: Inventory, source: str = "distro") -> dict[str, Any]:
    """What site.yml receives for ``inventory`` in a configuration-only run."""
    target = for_inventory(inventory.path, source)  # type: ignore[arg-type]
    off = {"kubesmith_kubernetes_binaries": False}
    prepared = kubernetes.prepare(target, {}, off, no_probe)
    return {
        **cluster_variables(target.inventory.cluster).extravars(),
        **prepared.variables.extravars(),
    }


def lab(directory: Path, workers: int = 1, **settings: object) -> Inventory:
    return write_inventory(directory, local_spec(1, workers, **settings))


def net_conf(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    data = json.loads(by_kind(objects)["ConfigMap"]["data"]["net-conf.json"])
    assert isinstance(data, dict)
    return data


# --- the add-on's manifests ----------------------------------------------------------------


@pytest.mark.parametrize("minor", PINNED_MINORS)
def test_the_addon_renders_and_validates_for_each_pinned_minor(minor: str) -> None:
    objects = render_addon("flannel", ADDON_VALUES, templates=REPO / "templates")
    # Apply order: the namespace before what lives in it, the DaemonSet after its config.
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ]
    assert check_objects(objects, f"{minor}.0") == []


def test_the_schema_check_would_catch_a_broken_daemonset() -> None:
    """The validation above is not vacuous: a misplaced field in the DaemonSet is reported."""
    objects = render_addon("flannel", ADDON_VALUES, templates=REPO / "templates")
    daemonset = by_kind(objects)["DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    pod["containers"][0]["hostNetwork"] = True
    problems = [str(p) for p in check_objects(objects, versions.default_kubernetes_version())]
    assert len(problems) == 1
    assert "hostNetwork" in problems[0]


def test_everything_lives_in_the_privileged_kube_flannel_namespace() -> None:
    objects = render_addon("flannel", ADDON_VALUES, templates=REPO / "templates")
    kinds = by_kind(objects)
    namespace = kinds["Namespace"]["metadata"]
    assert namespace["name"] == "kube-flannel"
    # flannel's pods use the host network, host paths and NET_ADMIN: only "privileged" allows.
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for obj in objects:
        if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "kube-flannel", obj["kind"]
    (subject,) = kinds["ClusterRoleBinding"]["subjects"]
    account = kinds["ServiceAccount"]["metadata"]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])
    assert (
        kinds["ClusterRoleBinding"]["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    )
    # flanneld patches its own node's status (annotations) and reads every node's podCIDR.
    rules = {(r["resources"][0], v) for r in kinds["ClusterRole"]["rules"] for v in r["verbs"]}
    assert {("nodes", "list"), ("nodes", "watch"), ("nodes/status", "patch")} <= rules
    # CoreDNS stays where it was: an add-on without a namespace value keeps kube-system.
    coredns = render_addon(
        "coredns",
        {"clusterDns": "10.96.0.10", "image": versions.image("coredns")},
        templates=REPO / "templates",
    )
    assert {o["metadata"].get("namespace") for o in coredns} == {"kube-system", None}


def test_the_daemonset_runs_flanneld_on_every_node_with_the_pinned_images() -> None:
    objects = render_addon("flannel", ADDON_VALUES, templates=REPO / "templates")
    kinds = by_kind(objects)
    daemonset = kinds["DaemonSet"]
    template = daemonset["spec"]["template"]
    pod = template["spec"]
    assert (
        daemonset["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    # Nodes are NotReady (tainted) until flannel runs there: it must tolerate that.
    assert {"operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["install-cni-plugin"]["image"] == versions.image("flannel_cni_plugin")
    assert init["install-cni"]["image"] == versions.image("flannel")
    (flanneld,) = pod["containers"]
    assert flanneld["image"] == versions.image("flannel")
    # Health endpoint flags: tests/test_addons_hardening.py.
    assert flanneld["args"][:2] == ["--ip-masq", "--kube-subnet-mgr"]
    security = flanneld["securityContext"]
    assert security["privileged"] is False
    assert set(security["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    # Every mount names a volume of the pod, the ConfigMap's among them (the schema cannot
    # see dangling names).
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in (*pod["initContainers"], flanneld):
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, (container["name"], mount["name"])
    assert volumes["flannel-cfg"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert volumes["flannel-cfg"]["configMap"]["defaultMode"] == 0o600  # CIS 1.1.9
    assert volumes["cni-plugin"]["hostPath"]["path"] == ADDON_VALUES["cniBinDir"]
    assert volumes["cni"]["hostPath"]["path"] == "/etc/cni/net.d"


def test_a_changed_network_configuration_rolls_the_pods() -> None:
    def checksum(**values: str) -> str:
        objects = render_addon("flannel", {**ADDON_VALUES, **values}, templates=REPO / "templates")
        template = by_kind(objects)["DaemonSet"]["spec"]["template"]
        return str(template["metadata"]["annotations"]["kubesmith.io/config-checksum"])

    assert checksum() == checksum()
    assert checksum(backend="host-gw") != checksum()
    assert checksum(network="10.50.0.0/16") != checksum()


def test_the_cni_configuration_delegates_to_the_plugins_the_nodes_have() -> None:
    objects = render_addon("flannel", ADDON_VALUES, templates=REPO / "templates")
    conf = json.loads(by_kind(objects)["ConfigMap"]["data"]["cni-conf.json"])
    assert [p["type"] for p in conf["plugins"]] == ["flannel", "portmap"]
    # flannel delegates to the bridge and host-local plugins: both come with the nodes' CNI
    # plugins (the release list kubesmith pins, and Debian's package).
    installed = set(versions.component("cni_plugins").binaries.values())
    assert {"bridge", "host-local", "portmap"} <= installed


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"network": "10.244.0.0/33"}, "network: '10.244.0.0/33' is not"),
        ({"backend": "udp"}, "backend:"),
        ({"cniBinDir": "opt/cni/bin"}, "cniBinDir:"),
        ({"image": None}, "image: is required"),
        ({"mtu": 1450}, "mtu: unknown key"),
    ],
)
def test_bad_addon_values_are_named(values: dict[str, Any], problem: str) -> None:
    merged = {k: v for k, v in {**ADDON_VALUES, **values}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        render_addon("flannel", merged, templates=REPO / "templates")
    (line,) = info.value.lines()
    assert line.startswith("flannel add-on values: ")
    assert problem in line


# --- from the stack config to what site.yml receives ---------------------------------------


@pytest.mark.parametrize("backend", [None, "vxlan", "host-gw"])
def test_net_conf_carries_the_stacks_pod_cidr_and_backend(tmp_path: Path, backend: str) -> None:
    cni = {**FLANNEL, **({"flannelBackend": backend} if backend else {})}
    extravars = prepare(lab(tmp_path, cni=cni, podCidr="10.50.0.0/16"))
    conf = net_conf(extravars["kubesmith_flannel_manifests"])
    assert conf == {"Network": "10.50.0.0/16", "Backend": {"Type": backend or "vxlan"}}
    assert extravars["kubesmith_cni_plugin"] == "flannel"


def test_flannel_gets_no_kubesmith_pod_ranges_and_bridge_no_flannel(tmp_path: Path) -> None:
    flannel = prepare(lab(tmp_path / "f", workers=2, cni=FLANNEL))
    # The controller-manager hands out the ranges: kubesmith neither passes nor keeps any.
    assert flannel["kubesmith_pod_cidrs"] == {}
    assert not (tmp_path / "f" / ALLOCATIONS_FILE).exists()
    bridge = prepare(lab(tmp_path / "b", workers=2))
    assert bridge["kubesmith_cni_plugin"] == "bridge"
    assert bridge["kubesmith_flannel_manifests"] == []
    assert set(bridge["kubesmith_pod_cidrs"]) == {"local-cp-1", "local-worker-1", "local-worker-2"}
    # Both hand out the same /24 per node (kubesmith's carving, the controller's mask size).
    assert flannel["kubesmith_node_cidr_mask_size"] == bridge["kubesmith_node_cidr_mask_size"]
    assert all(c.endswith("/24") for c in bridge["kubesmith_pod_cidrs"].values())


@pytest.mark.parametrize(
    ("source", "bin_dir"), [("distro", "/usr/lib/cni"), ("release", "/opt/cni/bin")]
)
def test_flannel_installs_its_plugin_where_containerd_looks(
    tmp_path: Path, source: str, bin_dir: str
) -> None:
    extravars = prepare(lab(tmp_path, cni=FLANNEL), source)
    pod = by_kind(extravars["kubesmith_flannel_manifests"])["DaemonSet"]["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["cni-plugin"]["hostPath"]["path"] == bin_dir
    # The containerd role's bin_dir for that source, as Ansible evaluates it.
    found = evaluate(
        tmp_path / "eval",
        {"containerd_cni_source": source},
        {"bin_dir": "__containerd_cni_bin_dir"},
        roles=("containerd",),
    )
    assert found["bin_dir"] == bin_dir


@pytest.mark.parametrize(
    ("first", "then", "recorded"),
    [
        ({}, {"cni": FLANNEL}, "bridge"),
        ({"cni": FLANNEL}, {}, "flannel vxlan"),
        ({"cni": FLANNEL}, {"cni": {**FLANNEL, "flannelBackend": "host-gw"}}, "flannel vxlan"),
    ],
)
def test_switching_the_pod_network_of_a_provisioned_cluster_is_refused(
    tmp_path: Path, first: dict[str, Any], then: dict[str, Any], recorded: str
) -> None:
    prepare(lab(tmp_path, **first))
    prepare(lab(tmp_path, **first))  # the same choice again is fine
    inventory = lab(tmp_path, **then)
    with pytest.raises(UserError) as info:
        prepare(inventory)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("kubesmith:cluster.cni: the cluster was provisioned with ")
    assert f"provisioned with {recorded}, " in message
    assert f"set cni back to {recorded}" in message


def test_a_cluster_from_before_the_choice_counts_as_bridge(tmp_path: Path) -> None:
    """Clusters provisioned before cni existed recorded their version only: they run bridge."""
    prepare(lab(tmp_path))
    (tmp_path / records.POD_NETWORK_FILE).unlink()
    with pytest.raises(UserError, match=r"provisioned with bridge, the config asks for flannel"):
        prepare(lab(tmp_path, cni=FLANNEL))
    prepare(lab(tmp_path))
    assert (tmp_path / records.POD_NETWORK_FILE).read_text() == "bridge\n"


@pytest.mark.parametrize(
    ("pod_cidr", "workers", "problem"),
    [
        (
            "10.244.0.0/25",
            0,
            "10.244.0.0/25 is smaller than one node's /24; use a /24 or larger network",
        ),
        (
            "10.244.0.0/23",
            2,
            "10.244.0.0/23 has room for 2 nodes (one /24 each), the inventory has 3",
        ),
    ],
)
def test_flannel_checks_the_pod_cidr_has_room_for_every_node(
    tmp_path: Path, pod_cidr: str, workers: int, problem: str
) -> None:
    inventory = lab(tmp_path, workers=workers, cni=FLANNEL, podCidr=pod_cidr)
    with pytest.raises(UserError, match=rf"^kubesmith:cluster.podCidr: {re.escape(problem)}$"):
        prepare(inventory)


@pytest.mark.parametrize(("key", "value"), [("plugin", "calico"), ("flannelBackend", "udp")])
def test_a_bad_choice_in_an_inventory_is_named(tmp_path: Path, key: str, value: str) -> None:
    inventory = lab(tmp_path, cni=FLANNEL)
    data = yaml.safe_load(inventory.path.read_text())
    data["all"]["vars"]["kubesmith_cluster"]["cni"][key] = value
    inventory.path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        UserError,
        match=rf"inventory.yml: all.vars.kubesmith_cluster: kubesmith:cluster.cni.{key}: .*{value}",
    ):
        for_inventory(inventory.path, "distro")


def test_an_inventory_whose_spec_names_no_pod_network_means_bridge(tmp_path: Path) -> None:
    inventory = lab(tmp_path)
    data = yaml.safe_load(inventory.path.read_text())
    del data["all"]["vars"]["kubesmith_cluster"]["cni"]
    inventory.path.write_text(yaml.safe_dump(data))
    spec = for_inventory(inventory.path, "distro").inventory.cluster.spec
    assert (spec.cni.plugin, spec.cni.backend) == ("bridge", "vxlan")


# --- what the roles make of it (Ansible evaluating the roles' own variables) ----------------


def site_bindings(roles: Sequence[str]) -> dict[str, Any]:
    """What site.yml passes ``roles`` (their inputs, bound from the kubesmith_* variables), with
    the plays' own variables those bindings use."""
    bound: dict[str, Any] = {}
    for play in yaml.safe_load((REPO / "playbooks" / "site.yml").read_text()):
        entries = [r for r in play.get("roles", []) if r["role"] in roles]
        if entries:
            bound.update(play.get("vars", {}))
        for entry in entries:
            bound.update(entry.get("vars", {}))
    return bound


def evaluate(
    directory: Path,
    variables: Mapping[str, Any],
    expressions: Mapping[str, str],
    roles: Sequence[str] = ("control_plane", "cni"),
) -> dict[str, Any]:
    """The values of Jinja ``expressions`` over ``roles``' defaults and vars, as ansible-playbook
    evaluates them for a host given ``variables`` and the inputs site.yml binds from them
    (``variables`` win, as extra variables do)."""
    directory.mkdir(parents=True, exist_ok=True)
    # The cni role's vars read its files/ with the file lookup, which a play resolves from
    # the playbook's own directory.
    (directory / "files").symlink_to(ROLES / "cni" / "files")
    return evaluate_in_play(
        directory,
        vars_files=[ROLES / r / part / "main.yml" for r in roles for part in ("defaults", "vars")],
        variables=variables,
        expressions=expressions,
        bindings=site_bindings(roles),
    )


def site_variables(inventory: Inventory, extravars: Mapping[str, Any], host: str) -> dict[str, Any]:
    """The variables a host sees in site.yml: inventory all.vars, its hostvars, the extravars."""
    return {**inventory.all_vars, **inventory.hostvars[host], **extravars}


ROLE_EXPRESSIONS = {
    "controller_manager": "__control_plane_units['kube-controller-manager'] | systemd_unit",
    "cni_files": "__cni_managed | map(attribute='dest') | list",
    "cni_foreign": "__cni_foreign_conflist",
    "cni_plugin": "cni_plugin",
}


@pytest.fixture(scope="module")
def role_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per plugin: the controller-manager's command line and the cni role's choices for the
    control plane of a 1+1 lab, from the stack config through prepare() and Ansible."""
    found = {}
    for plugin in ("bridge", "flannel"):
        directory = tmp_path_factory.mktemp(plugin)
        inventory = lab(directory / "lab", cni={"plugin": plugin}, podCidr="10.50.0.0/16")
        extravars = prepare(inventory)
        variables = site_variables(inventory, extravars, "local-cp-1")
        # The play runs on "localhost": it stands in for local-cp-1 in the pod range table.
        variables["cni_pod_cidrs"] = {"localhost": "10.50.0.0/24"}
        found[plugin] = evaluate(directory / "eval", variables, ROLE_EXPRESSIONS)
    return found


def test_the_controller_manager_allocates_node_ranges_only_with_flannel(
    role_values: dict[str, dict[str, Any]],
) -> None:
    _, flannel = flags.parse_exec_start(role_values["flannel"]["controller_manager"])
    _, bridge = flags.parse_exec_start(role_values["bridge"]["controller_manager"])
    assert flannel["allocate-node-cidrs"] == "true"
    assert flannel["cluster-cidr"] == "10.50.0.0/16"
    assert flannel["node-cidr-mask-size"] == "24"
    # With the bridge CNI kubesmith carves and routes the ranges itself.
    assert bridge["allocate-node-cidrs"] == "false"
    assert "node-cidr-mask-size" not in bridge
    assert {k: v for k, v in flannel.items() if "cidr" not in k} == {
        k: v for k, v in bridge.items() if "cidr" not in k
    }
    for minor in PINNED_MINORS:
        assert flags.problems("kube-controller-manager", minor, flannel) == []


def test_the_cni_role_writes_no_bridge_network_with_flannel(
    role_values: dict[str, dict[str, Any]],
) -> None:
    bridge, flannel = role_values["bridge"], role_values["flannel"]
    assert bridge["cni_plugin"] == "bridge"
    assert "/etc/cni/net.d/10-kubesmith.conflist" in bridge["cni_files"]
    assert "/etc/kubesmith/pod-routes" in bridge["cni_files"]
    assert flannel["cni_plugin"] == "flannel"
    assert flannel["cni_files"] == []
    # Each refuses a node that carries the other's CNI configuration.
    assert bridge["cni_foreign"] == "/etc/cni/net.d/10-flannel.conflist"
    assert flannel["cni_foreign"] == "/etc/cni/net.d/10-kubesmith.conflist"


def test_site_applies_flannel_after_the_nodes_and_before_coredns() -> None:
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    names = [p["name"] for p in plays]
    flannel = names.index("Pod network add-on (flannel)")
    assert names.index("Kubernetes nodes") < flannel < names.index("Cluster DNS")
    (task,) = plays[flannel]["tasks"]
    # include_role: with the bridge CNI the play costs one skipped task, not every task of it.
    assert task["ansible.builtin.include_role"] == {
        "name": "cni",
        "tasks_from": "flannel",
        "apply": {"tags": ["cni"]},
    }
    assert task["when"] == "kubesmith_cni_plugin == 'flannel'"
    assert task["vars"]["cni_flannel_manifests"] == "{{ kubesmith_flannel_manifests }}"


# --- air-gapped sites ----------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["bridge", "flannel"])
def test_artifacts_list_names_the_flannel_images_when_flannel_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    stack = air_project(tmp_path, monkeypatch, cni={"plugin": plugin})
    result = CliRunner().invoke(app, ["artifacts", "list", "-s", stack], terminal_width=400)
    assert result.exit_code == 0, result.output
    images = listed_images(result.output)
    assert images[versions.image("coredns")] == "coredns"
    flannel_images = {versions.image("flannel"), versions.image("flannel_cni_plugin")}
    # A bridge cluster pulls neither: listing them would send a site after images it never uses.
    assert flannel_images & set(images) == (flannel_images if plugin == "flannel" else set())


@pytest.mark.parametrize(("backend", "routed"), [("lxd", True), ("aws", False)])
def test_bridge_routes_through_other_nodes_except_on_aws(
    tmp_path: Path, backend: str, routed: bool
) -> None:
    """On AWS the VPC route table carries every node's range; a host route through a node in
    another zone's subnet would be refused (no direct next hop)."""
    ranges = {"localhost": "10.50.0.0/24", "peer-1": "10.50.1.0/24"}
    values = evaluate(
        tmp_path,
        {
            "kubesmith_backend": backend,
            "kubesmith_cni_plugin": "bridge",
            "kubesmith_pod_cidr": "10.50.0.0/16",
            "cni_pod_cidrs": ranges,
        },
        {"peers": "__cni_route_peers"},
        roles=("cni",),
    )
    assert values["peers"] == ({"peer-1": "10.50.1.0/24"} if routed else {})
