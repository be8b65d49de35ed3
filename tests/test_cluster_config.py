"""What the controller computes for the Kubernetes roles: the Secrets encryption key, pod
ranges, flag checks, kubeconfigs, the bootstrap RBAC and the CoreDNS manifests."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kubesmith import versions
from kubesmith.apps import check_objects
from kubesmith.errors import KubesmithError, UserError
from kubesmith.provision import flags
from kubesmith.provision.kubernetes import coredns_manifests, rbac_manifests
from kubesmith.state import encryption, podcidr
from kubesmith.state.kubeconfig import kubeconfig
from tests.clusterlab import local_spec, write_inventory
from tests.conftest import REPO, load_plugin

ROLES = REPO / "playbooks" / "roles"
PINNED_MINORS = sorted({".".join(v.split(".")[:2]) for v in versions.kubernetes_versions()})


def filters() -> ModuleType:
    """The playbooks' filter plugin."""
    return load_plugin(REPO / "playbooks" / "filter_plugins" / "kubesmith.py", "kubesmith_filters")


# --- encryption at rest -----------------------------------------------------------------


def test_encryption_config_is_created_once_with_a_random_key(tmp_path: Path) -> None:
    path, created = encryption.ensure_config(tmp_path)
    assert created
    assert path.stat().st_mode & 0o777 == 0o600
    data = yaml.safe_load(path.read_text())
    assert data["kind"] == "EncryptionConfiguration"
    (resource,) = data["resources"]
    assert resource["resources"] == ["secrets"]
    first, fallback = resource["providers"]
    # New writes use secretbox; reads of anything stored unencrypted still work.
    assert list(first) == ["secretbox"]
    assert fallback == {"identity": {}}
    (key,) = first["secretbox"]["keys"]
    assert len(base64.b64decode(key["secret"])) == 32

    text = path.read_text()
    again, created_again = encryption.ensure_config(tmp_path)
    assert (again, created_again) == (path, False)
    assert again.read_text() == text
    other, _ = encryption.ensure_config(tmp_path / "other")
    assert yaml.safe_load(other.read_text()) != data


def test_encryption_provider_cannot_switch_silently(tmp_path: Path) -> None:
    encryption.ensure_config(tmp_path, "aescbc")
    with pytest.raises(UserError, match=r"kubesmith_encryption_provider: .*aescbc.*secretbox"):
        encryption.ensure_config(tmp_path, "secretbox")
    with pytest.raises(UserError, match=r"'rot13' is not supported"):
        encryption.ensure_config(tmp_path / "x", "rot13")


def test_encryption_config_readable_by_others_is_refused(tmp_path: Path) -> None:
    path, _ = encryption.ensure_config(tmp_path)
    path.chmod(0o644)
    with pytest.raises(KubesmithError, match=r"readable by others \(mode 644\); run: chmod 600"):
        encryption.ensure_config(tmp_path)


# --- pod ranges ---------------------------------------------------------------------------


def test_pod_ranges_never_move_when_nodes_come_and_go(tmp_path: Path) -> None:
    first = podcidr.allocate("10.244.0.0/16", ["cp-1", "w-1", "w-2"], tmp_path)
    assert [str(c) for c in first.values()] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    # A control plane added in the middle of the inventory: existing ranges stay.
    grown = podcidr.allocate("10.244.0.0/16", ["cp-1", "cp-2", "w-1", "w-2"], tmp_path)
    assert {n: grown[n] for n in first} == first
    assert str(grown["cp-2"]) == "10.244.3.0/24"
    # A node leaves: its range is free again, the others keep theirs.
    shrunk = podcidr.allocate("10.244.0.0/16", ["cp-1", "cp-2", "w-2"], tmp_path)
    assert shrunk["w-2"] == first["w-2"]
    again = podcidr.allocate("10.244.0.0/16", ["cp-1", "cp-2", "w-2", "w-3"], tmp_path)
    assert str(again["w-3"]) == "10.244.1.0/24"
    assert len(set(again.values())) == 4
    assert all(c.subnet_of(ipaddress.IPv4Network("10.244.0.0/16")) for c in again.values())


def test_pod_ranges_follow_a_changed_pod_cidr(tmp_path: Path) -> None:
    podcidr.allocate("10.244.0.0/16", ["a", "b"], tmp_path)
    moved = podcidr.allocate("10.32.0.0/16", ["a", "b"], tmp_path)
    assert [str(c) for c in moved.values()] == ["10.32.0.0/24", "10.32.1.0/24"]


def test_a_range_two_nodes_claim_stays_with_the_first(tmp_path: Path) -> None:
    """A kept file that names one range twice (edited by hand) never gives two nodes one range,
    even when the network has exactly room for both."""
    (tmp_path / podcidr.ALLOCATIONS_FILE).write_text(
        "a: 10.244.0.0/24\nb: 10.244.0.0/24\n", encoding="utf-8"
    )
    ranges = podcidr.allocate("10.244.0.0/23", ["a", "b"], tmp_path)
    assert {node: str(c) for node, c in ranges.items()} == {
        "a": "10.244.0.0/24",
        "b": "10.244.1.0/24",
    }


def test_pod_cidr_too_small_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"podCidr: 10.244.0.0/23 has room for 2 nodes .* has 3"):
        podcidr.allocate("10.244.0.0/23", ["a", "b", "c"], tmp_path)
    with pytest.raises(UserError, match=r"podCidr: 10.244.0.0/25 is smaller than one node's /24"):
        podcidr.allocate("10.244.0.0/25", ["a"], tmp_path)


# --- component flags ----------------------------------------------------------------------


def role_vars(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("minor", PINNED_MINORS)
@pytest.mark.parametrize(
    ("component", "role", "var"),
    [
        ("kube-apiserver", "control_plane", "__control_plane_apiserver_flags"),
        ("kube-controller-manager", "control_plane", "__control_plane_controller_manager_flags"),
        ("kube-scheduler", "control_plane", "__control_plane_scheduler_flags"),
        ("kubelet", "kubelet", "__kubelet_flags"),
        ("kube-proxy", "kube_proxy", "__kube_proxy_flags"),
    ],
)
def test_every_flag_the_roles_pass_is_valid_for_each_pinned_minor(
    component: str, role: str, var: str, minor: str
) -> None:
    rendered = role_vars(role)[var]
    assert flags.problems(component, minor, rendered) == []


def test_removed_and_misspelled_flags_are_named() -> None:
    found = flags.problems("kube-apiserver", "1.35", ["insecure-port", "authorisation-mode"])
    assert found == [
        "kube-apiserver --insecure-port was removed in 1.24 "
        "(insecure serving was removed (kubernetes#106859))",
        "kube-apiserver --authorisation-mode is not a flag kubesmith knows for 1.35",
    ]


def test_extra_args_problems_name_the_inventory_and_the_key() -> None:
    problems = flags.extra_args_problems(
        {"kubelet": {"--container-runtime": "remote"}, "kube-dns": {"v": "2"}},
        "1.34",
        "lab/inventory.yml",
    )
    assert problems == [
        "lab/inventory.yml: kubesmith_extra_args.kubelet: kubelet --container-runtime was "
        "removed in 1.27 (only remote (CRI) runtimes remain)",
        "lab/inventory.yml: kubesmith_extra_args.kube-dns: not a component (kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kubelet, kube-proxy)",
    ]


def test_unit_command_line_round_trips_through_systemd_quoting() -> None:
    plugin = filters()
    values = {
        "authorization-mode": "Node,RBAC",
        "audit-policy-file": "/etc/kubernetes/audit policy.yaml",
        "anonymous-auth": False,
        "v": 2,
        "tls-cipher-suites": ["A", "B"],
        "odd": "100%$HOME",
    }
    command = plugin.systemd_command("/usr/local/bin/kube-apiserver", values)
    unit = plugin.systemd_unit({"Service": {"ExecStart": command}}, header="managed")
    binary, parsed = flags.parse_exec_start(unit)
    assert binary == "/usr/local/bin/kube-apiserver"
    assert parsed == {
        "anonymous-auth": "false",
        "audit-policy-file": "/etc/kubernetes/audit policy.yaml",
        "authorization-mode": "Node,RBAC",
        "odd": "100%$HOME",
        "tls-cipher-suites": "A,B",
        "v": "2",
    }
    # systemd would expand %H and $HOME: both are doubled in the unit.
    assert "100%%$$HOME" in unit
    assert unit.startswith("# managed\n\n[Service]\nExecStart=/usr/local/bin/kube-apiserver \\\n")


# --- kubeconfigs, RBAC, CoreDNS ------------------------------------------------------------


def test_node_kubeconfig_names_files_and_admin_kubeconfig_embeds_them() -> None:
    on_node = kubeconfig(
        cluster="c", server="https://127.0.0.1:6443", user="u", ca="/p/ca.crt",
        cert="/p/u.crt", key="/p/u.key",
    )  # fmt: skip
    assert on_node["clusters"][0]["cluster"] == {
        "certificate-authority": "/p/ca.crt",
        "server": "https://127.0.0.1:6443",
    }
    assert on_node["users"][0]["user"] == {
        "client-certificate": "/p/u.crt",
        "client-key": "/p/u.key",
    }
    embedded = kubeconfig(
        cluster="c", server="https://x:6443", user="u", ca="CA", cert="CERT", key="KEY",
        embed=True,
    )  # fmt: skip
    user = embedded["users"][0]["user"]
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    assert embedded["current-context"] == "u@c"


@pytest.mark.parametrize("minor", PINNED_MINORS)
def test_bootstrap_rbac_is_valid_for_each_pinned_minor(minor: str) -> None:
    objects = rbac_manifests()
    assert check_objects(objects, f"{minor}.0", "bootstrap RBAC") == []
    bindings = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRoleBinding"}
    to_kubelet = bindings["system:kube-apiserver-to-kubelet"]
    # The user is the apiserver's kubelet client certificate's CN.
    assert to_kubelet["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "kube-apiserver-kubelet-client",
        }
    ]
    assert bindings["kubesmith:cluster-admins"]["roleRef"]["name"] == "cluster-admin"


def test_coredns_comes_from_the_template_engine_with_the_cluster_dns(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, local_spec(1, 1, clusterDns="10.96.0.53"))
    objects = coredns_manifests(inventory.cluster)
    by_kind = {o["kind"]: o for o in objects}
    assert by_kind["Service"]["spec"]["clusterIP"] == "10.96.0.53"
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == versions.image("coredns")
    assert "cluster.local" in by_kind["ConfigMap"]["data"]["Corefile"]
    assert all(
        o["metadata"]["namespace"] == "kube-system"
        for o in objects
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    )


def test_kubeconfig_files_name_the_certificates() -> None:
    (entry,) = filters().kubeconfig_files(
        [{"file": "kubelet.conf", "user": "system:node:n1", "cert": "kubelet-client"}],
        "https://127.0.0.1:6443",
        "c",
        "/etc/kubernetes/pki",
        "/etc/kubernetes",
    )
    assert entry["dest"] == "/etc/kubernetes/kubelet.conf"
    assert entry["mode"] == "0600"
    config = yaml.safe_load(entry["content"])
    assert config["users"][0]["user"]["client-key"] == "/etc/kubernetes/pki/kubelet-client.key"
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"


def test_new_nodes_take_ranges_in_name_order_whatever_order_they_come_in(
    tmp_path: Path,
) -> None:
    # A preview passes the spec's node plan; the run passes the inventory's hosts, which
    # come back from Pulumi's serialisation in another order (worker-10 before worker-2).
    planned = ["cp-1", *(f"worker-{n}" for n in range(1, 12))]
    serialised = sorted(planned)
    assert serialised != planned
    preview = podcidr.allocate("10.244.0.0/16", planned, tmp_path / "preview")
    run = podcidr.allocate("10.244.0.0/16", serialised, tmp_path / "run")
    assert preview == run
    assert str(run["worker-2"]) == "10.244.2.0/24"
    assert str(run["worker-10"]) == "10.244.10.0/24"
    # The same for nodes added to a cluster that has ranges already.
    grown = [*planned, "worker-12", "worker-13"]
    kept = {name: str(cidr) for name, cidr in run.items()}
    assert podcidr.allocate("10.244.0.0/16", sorted(grown), tmp_path / "run") == (
        podcidr.allocate("10.244.0.0/16", grown, tmp_path / "preview")
    )
    assert {
        n: str(c)
        for n, c in podcidr.allocate("10.244.0.0/16", grown, tmp_path / "run").items()
        if n in kept
    } == kept
