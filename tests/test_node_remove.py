"""`kubesmith node remove` without nodes: its checks, the runs of the nodes that stay, what
the controller forgets, and the Pulumi provisioning update that runs it for removed hosts.

The node probe (kubesmith status's) and the playbook runs are replaced here by recorders:
they run for real on LXD nodes in tests/integration/test_node_remove.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import UserError
from kubesmith.nodes import Node, node_plan
from kubesmith.program import provisioning
from kubesmith.provision import removal, scope
from kubesmith.provision.inventory import build_inventory, dump_inventory
from kubesmith.provision.runner import HostStats, RunResult
from kubesmith.provision.status import ClusterStatus, NodeStatus
from kubesmith.provision.target import Target, for_inventory
from kubesmith.spec import parse_cluster
from kubesmith.state import podcidr
from kubesmith.state.knownhosts import KnownHosts
from kubesmith.state.pki import Pki
from tests.test_program_hostdiff import inputs, outputs
from tests.test_program_hostdiff import spec as stack_spec

CP1, CP2, CP3, W1 = "t-cp-1", "t-cp-2", "t-cp-3", "t-worker-1"


def write_lab(tmp_path: Path, control_planes: int = 3, workers: int = 1, **extra: Any) -> Target:
    spec = parse_cluster(
        {
            "name": "t",
            "backend": "lxd",
            "lxd": {},
            "controlPlanes": control_planes,
            "workers": workers,
            **extra,
        }
    )
    nodes = [
        Node(name, role, f"10.203.0.{10 + i}", None, "root")
        for i, (name, role) in enumerate(node_plan(spec))
    ]
    data = build_inventory(
        spec,
        nodes,
        endpoint="https://127.0.0.1:6443" if control_planes > 1 else "https://10.203.0.10:6443",
        known_hosts_file=tmp_path / "known_hosts",
    )
    path = tmp_path / "inventory.yml"
    path.write_text(dump_inventory(data), encoding="utf-8")
    return for_inventory(path)


def probe(
    target: Target,
    *,
    down: tuple[str, ...] = (),
    unhealthy: tuple[str, ...] = (),
    members: list[str] | None = None,
) -> removal.Probe:
    """kubesmith status's probe as it would find the nodes."""
    inventory = target.inventory
    listed = members if members is not None else inventory.hosts_in("etcd")

    def found(_target: Target) -> ClusterStatus:
        nodes = []
        for host in inventory.hostvars:
            groups = sorted(inventory.groups_of(host))
            if host in down:
                nodes.append(NodeStatus(host, groups, False, "ssh: connect timed out"))
                continue
            node = NodeStatus(host, groups, True)
            if "etcd" in groups:
                node.etcd_healthy = host not in unhealthy
                node.etcd_members = sorted(listed) if host not in unhealthy else []
            nodes.append(node)
        return ClusterStatus("t", nodes, False, None, None, [])

    return found


def refusal(target: Target, name: str, found: removal.Probe) -> str:
    with pytest.raises(UserError) as raised:
        removal.preflight(target, name, found)
    [line] = raised.value.lines()
    return line


# --- checks before anything changes -----------------------------------------------------------


def test_names_outside_the_inventory_and_the_last_control_plane_are_refused(
    tmp_path: Path,
) -> None:
    target = write_lab(tmp_path, control_planes=1, workers=1)
    found = probe(target)
    assert refusal(target, "t-cp-9", found) == (
        f"'t-cp-9' is no host of {target.label} (its hosts: {CP1}, {W1})"
    )
    assert refusal(target, CP1, found).startswith(
        f"refusing to remove {CP1}: the last control plane of {target.label}"
    )


def test_the_host_the_api_endpoint_names_is_refused(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    data = yaml.safe_load(target.inventory.path.read_text())
    data["all"]["vars"]["kubesmith_api_endpoint"] = "https://10.203.0.11:6443"
    target.inventory.path.write_text(yaml.safe_dump(data))
    target = for_inventory(target.inventory.path)
    assert refusal(target, CP2, probe(target)) == (
        f"refusing to remove {CP2}: the API endpoint https://10.203.0.11:6443 is its address "
        "(every kubeconfig of the cluster names it)"
    )


@pytest.mark.parametrize(
    ("members", "healthy", "name", "refused"),
    [
        # 3 members, the one removed is dead: 2 healthy of 2 left, a quorum.
        ([CP1, CP2, CP3], [CP1, CP2], CP3, None),
        # 3 members, another is dead: 1 healthy of 2, and 2 of 2 are needed.
        ([CP1, CP2, CP3], [CP1, CP3], CP3, "1 healthy of 2 members and a quorum of 2 needs 2"),
        # 5 members, two dead (one removed): 3 healthy of 4, a quorum of 4 is 3.
        (["a", "b", "c", "d", "e"], ["a", "b", "c"], "e", None),
        (["a", "b", "c", "d", "e"], ["a", "b"], "e", "2 healthy of 4 members and a quorum of 4"),
    ],
)
def test_etcd_keeps_a_quorum_of_the_members_after_the_removal(
    members: list[str], healthy: list[str], name: str, refused: str | None
) -> None:
    if refused is None:
        removal.check_quorum(name, members, healthy)
        return
    with pytest.raises(UserError, match=refused):
        removal.check_quorum(name, members, healthy)


def test_a_member_down_refuses_removing_a_healthy_one_in_one_line(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    found = probe(target, unhealthy=(CP2,))
    assert refusal(target, CP3, found) == (
        f"refusing to remove {CP3}: etcd would keep 1 healthy of 2 members and a quorum of 2 "
        f"needs 2 (not healthy: {CP2}); bring them back first"
    )


def test_a_dead_node_is_removed_without_being_reached(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    checked = removal.preflight(target, CP3, probe(target, down=(CP3,)))
    assert not checked.reachable
    assert checked.etcd_via == CP1
    assert checked.api_via == CP1
    assert checked.notes == (f"{CP3} does not answer (ssh: connect timed out): it is not reset",)


def test_a_member_removed_before_needs_no_quorum_check(tmp_path: Path) -> None:
    """A re-run after an interrupted removal: etcd no longer has a member of that name (the
    play still looks for one by peer URL: a member added but never started has no name)."""
    target = write_lab(tmp_path)
    checked = removal.preflight(target, CP3, probe(target, members=[CP1, CP2], unhealthy=(CP2,)))
    assert checked.etcd_via == CP1
    assert checked.notes == ()


def test_without_a_healthy_member_left_nothing_is_removed(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    found = probe(target, unhealthy=(CP1, CP2))
    assert refusal(target, CP3, found).startswith(
        f"refusing to remove {CP3}: no other etcd member answers healthy"
    )


# --- the nodes that stay --------------------------------------------------------------------


def test_the_remaining_inventory_is_written_beside_and_the_given_one_kept(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    given = target.inventory.path.read_text()
    after = removal.remaining_inventory(target, CP3)
    assert target.inventory.path.read_text() == given
    assert after.inventory.path == (tmp_path / f"inventory.without-{CP3}.yml").resolve()
    assert after.inventory.hosts_in("etcd") == [CP1, CP2]
    assert CP3 not in after.inventory.hostvars
    assert after.state_dir == target.state_dir


def test_removing_a_control_plane_runs_exactly_the_plays_that_read_it(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    after = removal.remaining_inventory(target, CP3)
    runs = removal.follower_runs(target.inventory, after.inventory, CP3)
    assert runs.full == ()
    assert runs.follow is not None
    assert runs.follow.hosts == (CP1, CP2, W1)
    assert set(runs.follow.tags) == {"cni", "api_proxy", "control_plane", "etcd"}
    assert runs.follow.reasons[W1] == (
        "pod routes to every node's range (bridge CNI)",
        "API proxy backends",
    )


def test_removing_a_worker_with_flannel_touches_nobody(tmp_path: Path) -> None:
    target = write_lab(tmp_path, workers=2, cni={"plugin": "flannel"})
    after = removal.remaining_inventory(target, "t-worker-2")
    runs = removal.follower_runs(target.inventory, after.inventory, "t-worker-2")
    assert runs == removal.FollowerRun((), None)


def test_without_the_last_worker_the_control_planes_run_pods(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    after = removal.remaining_inventory(target, W1)
    assert after.inventory.hosts_in("kube_node") == [CP1, CP2, CP3]
    runs = removal.follower_runs(target.inventory, after.inventory, W1)
    assert runs.full == (CP1, CP2, CP3)
    assert runs.follow is None


# --- forgetting -----------------------------------------------------------------------------


def test_the_controller_forgets_the_node_and_only_it(tmp_path: Path) -> None:
    target = write_lab(tmp_path)
    pki = Pki(target.pki_dir, target.inventory.cluster)
    pki.ensure(target.inventory.identities())
    for identity in target.inventory.identities():
        pki.node_bundle(identity)
    podcidr.allocate("10.244.0.0/16", [CP1, CP2, CP3, W1], target.state_dir)
    scope.record_run(target.state_dir, target.inventory, [CP1, CP2, CP3, W1])
    known = KnownHosts(tmp_path / "known_hosts")
    for address in ("10.203.0.11", "10.203.0.12"):
        known.learn(address, paramiko.Ed25519Key.from_private_key_file(_key(tmp_path)))
    checked = removal.Removal(
        CP3, frozenset({"etcd"}), "10.203.0.12", "10.203.0.12", True, None, None
    )

    assert removal.forget(target, checked) == [
        "its certificates",
        "its pod range",
        "its provisioning record",
        "its host key (10.203.0.12)",
    ]
    assert not (target.pki_dir / "nodes" / CP3).exists()
    assert not (target.pki_dir / "bundles" / f"{CP3}.tar").exists()
    assert (target.pki_dir / "nodes" / CP2).is_dir()
    ranges = yaml.safe_load((tmp_path / podcidr.ALLOCATIONS_FILE).read_text())
    assert set(ranges) == {CP1, CP2, W1}
    assert set(json.loads((tmp_path / scope.RECORD_FILE).read_text())) == {CP1, CP2, W1}
    assert "10.203.0.12" not in known.load()
    assert "10.203.0.11" in known.load()
    # A second time: nothing left to forget.
    assert removal.forget(target, checked) == []


def _key(tmp_path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "host_key"
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(key)
    return str(path)


# --- the command ----------------------------------------------------------------------------


def test_a_refusal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    target = write_lab(tmp_path, control_planes=1, workers=1)
    result = CliRunner().invoke(app, ["node", "remove", CP1, "-i", str(target.inventory.path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: refusing to remove {CP1}: the last control plane of {target.label} (a cluster "
        "needs one; kubesmith reset or destroy takes a whole cluster down)"
    ]


# --- the Pulumi path: lowering a count ------------------------------------------------------


def test_a_lower_count_removes_the_hosts_before_the_runs_and_forgets_them_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    olds = outputs(inputs(stack_spec(workers=2)))
    news = inputs(stack_spec(workers=1))
    calls: list[tuple[str, Any]] = []

    def preflight(target: Target, name: str) -> removal.Removal:
        calls.append(("preflight", (name, sorted(target.inventory.hostvars))))
        return removal.Removal(name, frozenset(), "a", "a", True, None, None)

    def leave(_target: Target, checked: removal.Removal) -> list[str]:
        calls.append(("leave", checked.name))
        return ["reset: 3 things undone"]

    def run(props: dict[str, Any], _planned: Any, runs: list[Any]) -> dict[str, Any]:
        calls.append(("run", [(o.tags, o.limit) for o in runs]))
        return dict(props)

    def forget(_target: Target, checked: removal.Removal) -> list[str]:
        calls.append(("forget", checked.name))
        return []

    monkeypatch.setattr(removal, "preflight", preflight)
    monkeypatch.setattr(removal, "leave", leave)
    monkeypatch.setattr(removal, "forget", forget)
    monkeypatch.setattr(provisioning, "_run", run)
    provisioning.ProvisioningProvider().update("id", olds, news)
    assert calls == [
        ("preflight", ("local-worker-2", ["local-cp-1", "local-worker-1", "local-worker-2"])),
        ("leave", "local-worker-2"),
        ("run", [(("cni",), "local-cp-1,local-worker-1")]),
        ("forget", "local-worker-2"),
    ]


def test_a_refused_removal_fails_the_update_before_any_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    olds = outputs(inputs(stack_spec(controlPlanes=3)))
    news = inputs(stack_spec(controlPlanes=1))
    ran: list[Any] = []

    def quorum(_target: Target, name: str) -> removal.Removal:
        raise UserError(f"refusing to remove {name}: etcd would keep 1 healthy of 2 members")

    monkeypatch.setattr(removal, "preflight", quorum)

    def run(*args: Any) -> dict[str, Any]:
        ran.append(args)
        return {}

    monkeypatch.setattr(provisioning, "_run", run)
    with pytest.raises(UserError, match="refusing to remove local-cp-2"):
        provisioning.ProvisioningProvider().update("id", olds, news)
    assert ran == []


def test_removing_every_control_plane_is_refused_before_the_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    olds = outputs(inputs(stack_spec(controlPlanes=3)))
    news = dict(olds, hosts={})
    monkeypatch.setattr(removal, "preflight", lambda *_: pytest.fail("probed"))
    with pytest.raises(UserError, match="the last control plane of stack local"):
        provisioning.ProvisioningProvider().update("id", olds, news)


def test_the_command_asks_then_runs_the_steps_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kubesmith node remove` at a terminal: the checks, the question (a "no" changes
    nothing), then leave, the runs of the nodes that stay, forget; the inventory untouched."""
    from kubesmith.cli import node as node_cli

    target = write_lab(tmp_path)
    path = str(target.inventory.path)
    given = target.inventory.path.read_text()
    steps: list[str] = []
    real_preflight = removal.preflight

    monkeypatch.setattr(
        removal, "preflight", lambda t, n: real_preflight(t, n, probe(t, down=(n,)))
    )

    def leave(_target: Target, checked: removal.Removal) -> list[str]:
        steps.append("leave")
        return list(checked.notes)

    monkeypatch.setattr(removal, "leave", leave)

    def run(after: Target, options: Any, _title: str) -> RunResult:
        steps.append(f"run {','.join(options.tags)} on {options.limit}")
        assert CP3 not in after.inventory.hostvars
        return RunResult("successful", 0, {h: HostStats(ok=1) for h in options.limit.split(",")})

    monkeypatch.setattr(node_cli, "_run", run)
    monkeypatch.setattr(node_cli, "_stdin_is_terminal", lambda: True)
    no = CliRunner().invoke(app, ["node", "remove", CP3, "-i", path], input="n\n")
    assert no.exit_code == 1
    assert f"Remove {CP3} from {path} for good" in " ".join(no.output.split())
    assert "node remove cancelled; nothing was changed" in no.stdout
    assert steps == []

    yes = CliRunner().invoke(app, ["node", "remove", CP3, "-i", path], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert steps == ["leave", f"run cni,api_proxy,control_plane,etcd on {CP1},{CP2},{W1}"]
    said = " ".join(yes.stdout.split())
    assert f"{CP3}: {CP3} does not answer (ssh: connect timed out): it is not reset" in said
    assert f"ok: {CP3} removed" in said
    assert f"delete {CP3} from {path}" in " ".join(yes.stderr.split())
    assert target.inventory.path.read_text() == given
