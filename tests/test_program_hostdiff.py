"""The Provisioning resource's per-host diff: which hosts an update runs on, and why.

The inputs are the ones the program registers (run under Pulumi's mocks, as
tests/test_program_provisioning.py does); the last outputs are those inputs plus what a run
reported, as the engine keeps them. The diff is the provider's own `diff`, the runs what its
`update` would start. The same provider runs for real through the SDK's provider server in
tests/integration/test_pulumi_up.py (a worker added to a provisioned LXD cluster).
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from kubesmith.nodes import Node, node_plan
from kubesmith.program import hostdiff
from kubesmith.program.provisioning import (
    POD_CIDRS_KEY,
    PROVISIONED_KEY,
    RECAP_KEY,
    ProvisioningProvider,
    runs_for,
)
from kubesmith.provision.inventory import build_inventory
from kubesmith.provision.provisioner import Options
from kubesmith.spec import ClusterSpec, parse_cluster
from tests.test_program_provisioning import register

CP, W1, W2, W3 = "local-cp-1", "local-worker-1", "local-worker-2", "local-worker-3"


def spec(**extra: Any) -> ClusterSpec:
    return parse_cluster({"name": "local", "backend": "lxd", "lxd": {}, **extra})


def inputs(the_spec: ClusterSpec, addresses: dict[str, str] | None = None) -> dict[str, Any]:
    """The Provisioning resource's inputs as the program registers them for ``the_spec``."""
    addresses = addresses or {}
    nodes = [
        Node(name, role, addresses.get(name, f"10.203.0.{10 + i}"), None, "root")
        for i, (name, role) in enumerate(node_plan(the_spec))
    ]
    data = build_inventory(the_spec, nodes, endpoint=f"https://{nodes[0].private_address}:6443")
    [resource] = register("local", the_spec, data)
    return {key: value for key, value in resource.inputs.items() if key != "__provider"}


def outputs(props: dict[str, Any]) -> dict[str, Any]:
    """The last outputs of a run on ``props``: the engine's olds in diff and update."""
    hosts = props[hostdiff.HOSTS_KEY]
    return {**props, RECAP_KEY: {h: {"ok": 1} for h in hosts}, PROVISIONED_KEY: {}}


def diff(olds: dict[str, Any], news: dict[str, Any]) -> tuple[Any, hostdiff.Plan]:
    return ProvisioningProvider().diff("id", olds, news), hostdiff.plan(olds, news)


def test_each_host_is_its_own_input_and_the_settings_are_named() -> None:
    props = inputs(spec(workers=1))
    hosts = props[hostdiff.HOSTS_KEY]
    assert set(hosts) == {CP, W1}
    assert hosts[W1] == {
        "address": "10.203.0.11",
        "user": "root",
        "nodeIp": "10.203.0.11",
        "role": "worker",
        "groups": ["k8s_cluster", "kube_node"],
    }
    assert hosts[CP]["groups"] == ["etcd", "k8s_cluster", "kube_control_plane"]
    cluster = props[hostdiff.CLUSTER_KEY]
    assert cluster["kubernetesVersion"] == spec().kubernetes_version
    assert cluster["cni"] == {"plugin": "bridge", "networkPolicy": "none"}
    assert cluster["apiEndpoint"] == "https://10.203.0.10:6443"
    assert {"versions", "playbooks"} <= set(cluster)
    # The counts show as hosts coming and going, not as a cluster-wide change.
    assert not {"workers", "controlPlanes"} & set(cluster)


def test_no_change_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    props = inputs(spec(workers=2))
    result, planned = diff(outputs(props), inputs(spec(workers=2)))
    assert not result.changes
    assert planned.lines() == []
    assert runs_for(planned) == []
    assert capsys.readouterr().err == ""


def test_a_new_worker_is_the_only_new_node_and_others_only_learn_its_route(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result, planned = diff(outputs(inputs(spec(workers=2))), inputs(spec(workers=3)))
    assert result.changes
    assert result.replaces == []
    assert [h for h, why in planned.reasons.items() if why == hostdiff.NEW_NODE] == [W3]
    routes = "only cni: pod routes to every node's range (bridge CNI)"
    assert planned.reasons == {CP: routes, W1: routes, W2: routes, W3: "new node"}
    # worker-3 gets everything; the others the cni plays alone (no restart of anything else).
    assert runs_for(planned) == [
        Options(limit=W3),
        Options(tags=("cni",), limit=f"{CP},{W1},{W2}"),
    ]
    # The diff says so on stderr, which the engine shows in `pulumi preview` and `up`.
    assert f"will provision {W3}: new node" in capsys.readouterr().err.splitlines()


def test_with_flannel_a_new_worker_touches_no_other_host() -> None:
    flannel = {"cni": {"plugin": "flannel"}}
    _result, planned = diff(
        outputs(inputs(spec(workers=1, **flannel))), inputs(spec(workers=2, **flannel))
    )
    assert planned.reasons == {W2: "new node"}
    assert runs_for(planned) == [Options(limit=W2)]


def test_a_removed_worker_is_named_and_the_others_drop_its_route() -> None:
    _result, planned = diff(outputs(inputs(spec(workers=2))), inputs(spec(workers=1)))
    assert planned.removed == (W2,)
    assert f"{W2}: removed (no longer provisioned)" in planned.lines()
    assert runs_for(planned) == [Options(tags=("cni",), limit=f"{CP},{W1}")]


def test_a_changed_address_names_the_host_and_what_changed() -> None:
    before = inputs(spec(workers=2))
    after = inputs(spec(workers=2), {W1: "10.203.0.99"})
    result, planned = diff(outputs(before), after)
    assert result.changes
    assert result.replaces == []
    assert planned.reasons[W1] == "its inputs changed: address, nodeIp"
    assert planned.reasons[CP].startswith("only cni:")
    assert runs_for(planned)[0] == Options(limit=W1)


def test_a_changed_control_plane_runs_everything() -> None:
    before = inputs(spec(workers=1))
    after = inputs(spec(workers=1), {CP: "10.203.0.77"})
    _result, planned = diff(outputs(before), after)
    assert planned.full
    assert planned.reasons[CP] == "its inputs changed: address, nodeIp"
    # The endpoint moved with it: a setting every host reads.
    assert planned.reasons[W1] == "cluster-wide change: apiEndpoint"
    assert runs_for(planned) == [Options()]


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"kubernetesVersion": "1.34.4"}, "kubernetesVersion"),
        ({"cni": {"plugin": "bridge", "networkPolicy": "kube-router"}}, "cni"),
        ({"serviceCidr": "10.100.0.0/16"}, "serviceCidr"),
    ],
)
def test_a_cluster_wide_setting_runs_every_host_naming_it(
    change: dict[str, Any], setting: str
) -> None:
    result, planned = diff(outputs(inputs(spec(workers=2))), inputs(spec(workers=2, **change)))
    assert result.changes
    assert result.replaces == []
    assert planned.full
    assert planned.reasons == dict.fromkeys([CP, W1, W2], f"cluster-wide change: {setting}")
    assert runs_for(planned) == [Options()]


def test_any_other_cluster_wide_input_runs_every_host() -> None:
    """The digest over everything the trigger covers but the hosts (a file the spec names by
    path, say): it moves, every host runs; it stays put when only nodes come and go."""
    before, after = inputs(spec(workers=1)), inputs(spec(workers=2))
    key = hostdiff.DIGEST_KEY
    assert before[hostdiff.CLUSTER_KEY][key] == after[hostdiff.CLUSTER_KEY][key]
    moved = {**before, hostdiff.CLUSTER_KEY: {**before[hostdiff.CLUSTER_KEY], key: "other"}}
    _result, planned = diff(outputs(moved), inputs(spec(workers=1)))
    assert planned.full
    assert planned.reasons == dict.fromkeys([CP, W1], f"cluster-wide change: {key}")


def test_a_new_worker_with_a_new_version_is_new_and_the_rest_name_the_setting() -> None:
    _result, planned = diff(
        outputs(inputs(spec(workers=1))), inputs(spec(workers=2, kubernetesVersion="1.34.4"))
    )
    assert planned.reasons == {
        CP: "cluster-wide change: kubernetesVersion",
        W1: "cluster-wide change: kubernetesVersion",
        W2: "new node",
    }


def test_numbers_carried_as_doubles_are_no_change() -> None:
    """Pulumi sends numbers as doubles: the outputs' lxd.cpu comes back as 2.0."""
    props = inputs(spec(workers=1))
    olds = outputs(props)
    olds[hostdiff.CLUSTER_KEY] = {
        **olds[hostdiff.CLUSTER_KEY],
        "lxd": {**olds[hostdiff.CLUSTER_KEY]["lxd"], "cpu": 2.0},
    }
    assert not diff(olds, inputs(spec(workers=1)))[0].changes


def test_a_preview_names_the_new_worker_while_addresses_are_unknown() -> None:
    """In a preview the inventory waits for the new node's address: every host's entry and
    the trigger are unknown, the host names are not."""
    news = inputs(spec(workers=3))
    news["trigger"] = UNKNOWN
    news[hostdiff.HOSTS_KEY] = {
        host: {**entry, "address": UNKNOWN, "nodeIp": UNKNOWN, "user": UNKNOWN}
        for host, entry in news[hostdiff.HOSTS_KEY].items()
    }
    news[hostdiff.CLUSTER_KEY] = {**news[hostdiff.CLUSTER_KEY], "apiEndpoint": UNKNOWN}
    result, planned = diff(outputs(inputs(spec(workers=2))), news)
    assert result.changes
    assert planned.reasons[W3] == "new node"
    assert planned.reasons[CP].startswith("only cni:")


def test_a_state_of_the_old_shape_is_not_replaced_and_diffs_by_its_trigger() -> None:
    """A stack provisioned before the per-host inputs: its outputs have no hosts or cluster.
    The first preview after the upgrade changes nothing when nothing changed; a moved trigger
    updates in place with one full run."""
    props = inputs(spec(workers=2))
    old_shape = {
        key: value
        for key, value in outputs(props).items()
        if key not in (hostdiff.HOSTS_KEY, hostdiff.CLUSTER_KEY, PROVISIONED_KEY)
    }
    same, planned = diff(old_shape, inputs(spec(workers=2)))
    assert not same.changes
    assert same.replaces == []
    moved, planned = diff(old_shape, inputs(spec(workers=3)))
    assert moved.changes
    assert moved.replaces == []
    assert planned.full
    assert set(planned.reasons) == {CP, W1, W2, W3}
    assert runs_for(planned) == [Options()]
    # Without the pod ranges (older still): one more run, in place.
    older = {k: v for k, v in old_shape.items() if k != POD_CIDRS_KEY}
    again, _ = diff(older, inputs(spec(workers=2)))
    assert again.changes
    assert again.replaces == []


# --- `kubesmith preview`: the same plan, from the engine's step events -----------------------


def step_event(op: str, olds: dict[str, Any] | None, news: dict[str, Any]) -> Any:
    """A resource step event as the Automation API parses it from the engine's event log."""
    from pulumi.automation import EngineEvent

    urn = "urn:pulumi:local::kubesmith::pulumi-python:dynamic:Resource::local-provisioning"
    state = {"type": "pulumi-python:dynamic:Resource", "urn": urn, "id": "", "parent": ""}
    metadata: dict[str, Any] = {
        "op": op,
        "urn": urn,
        "type": state["type"],
        "provider": "",
        "new": {**state, "inputs": news, "outputs": {}},
    }
    if olds is not None:
        metadata["old"] = {**state, "inputs": {}, "outputs": olds}
    return EngineEvent.from_json(
        {"sequence": 1, "timestamp": 0, "resourcePreEvent": {"metadata": metadata}}
    )


def test_preview_lines_come_from_the_step_event_of_provisioning() -> None:
    from kubesmith.program.automation import provisioning_plan

    update = provisioning_plan(
        step_event("update", outputs(inputs(spec(workers=1))), inputs(spec(workers=2)))
    )
    assert update is not None
    assert update.lines() == [
        f"{CP}: only cni: pod routes to every node's range (bridge CNI)",
        f"{W1}: only cni: pod routes to every node's range (bridge CNI)",
        f"{W2}: new node",
    ]
    created = provisioning_plan(step_event("create", None, inputs(spec(workers=1))))
    assert created is not None
    assert created.lines() == [f"{CP}: new node", f"{W1}: new node"]
    same = provisioning_plan(
        step_event("same", outputs(inputs(spec(workers=1))), inputs(spec(workers=1)))
    )
    assert same is not None
    assert same.lines() == []
    # Other resources' steps (an LXD node) are not provisioning's.
    assert provisioning_plan(step_event("create", None, {"name": "local-worker-2"})) is None
