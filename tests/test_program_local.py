"""The `local` stack's program under Pulumi mocks: the LXD node pool it asks the engine for.

The engine cannot run here. These tests check the registrations (one dynamic resource per
node, stable names, the inputs that decide each node) and the exported node shape; the
provider's create/delete run against real LXD in tests/integration/test_lxd_provider.py.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import dill
import pytest
from pulumi.runtime.mocks import MockResourceArgs

from kubesmith.program.backends.lxd.provider import LxdNodeProvider
from kubesmith.state.sshkeys import stack_key
from tests.pulumi_mocks import (
    KubesmithMocks,
    ProgramRun,
    RecordedResource,
    run_program,
    stack_config,
)

LXD_NODE = "pulumi-python:dynamic/kubesmith:LxdNode"
NODE_POOL = "kubesmith:lxd:NodePool"


class LxdMocks(KubesmithMocks):
    """Answers each LXD node with an address on the stack's bridge, as LXD's DHCP would."""

    def computed(self, args: MockResourceArgs, id_: str, serial: int) -> dict[str, Any]:
        if args.typ == LXD_NODE:
            return {"private_address": f"10.203.0.{100 + serial}"}
        return super().computed(args, id_, serial)


def local_run(workers: int | None = None) -> ProgramRun:
    config = copy.deepcopy(stack_config("local"))
    if workers is not None:
        config["kubesmith:cluster"]["workers"] = workers
    return run_program("local", config, mocks=LxdMocks())


def lxd_nodes(run: ProgramRun) -> dict[str, RecordedResource]:
    return {r.name: r for r in run.of_type(LXD_NODE)}


def node_inputs(resource: RecordedResource) -> dict[str, Any]:
    """Inputs without the serialised provider (code, not what the node is)."""
    return {k: v for k, v in resource.inputs.items() if k != "__provider"}


def test_one_resource_per_node_named_after_the_node_under_the_pool() -> None:
    run = local_run()
    nodes = lxd_nodes(run)
    assert sorted(nodes) == ["local-cp-1", "local-worker-1", "local-worker-2"]
    (pool,) = run.of_type(NODE_POOL)
    assert all(node.parent_type == NODE_POOL for node in nodes.values())
    assert pool.name == "local"


def test_node_inputs_come_from_the_stack_spec_and_key() -> None:
    run = local_run()
    worker = node_inputs(lxd_nodes(run)["local-worker-1"])
    assert worker["image"] == {"alias": "kubesmith-node"}
    assert worker["profile"] == "kubesmith-local"
    assert (worker["cpu"], worker["memory"]) == (2, "2GiB")
    # The bridge's own address (first host of lxd.subnet) is the node's resolver.
    assert worker["nameserver"] == "10.203.0.1"
    assert worker["ssh_public_key"] == stack_key("local").public_key
    assert worker["labels"] == {
        "user.kubesmith.managed": "true",
        "user.kubesmith.stack": "local",
        "user.kubesmith.cluster": "local",
        "user.kubesmith.role": "worker",
        "user.kubesmith.owner": "pulumi",
    }


def test_nodes_output_has_the_shape_every_backend_exports() -> None:
    run = local_run()
    addresses = {name: r.state["private_address"] for name, r in lxd_nodes(run).items()}
    assert run.outputs["nodes"] == [
        {
            "name": name,
            "role": role,
            "privateAddress": addresses[name],
            "publicAddress": None,
            "sshUser": "root",
        }
        for name, role in (
            ("local-cp-1", "control_plane"),
            ("local-worker-1", "worker"),
            ("local-worker-2", "worker"),
        )
    ]
    assert run.outputs["apiEndpoint"] == f"https://{addresses['local-cp-1']}:6443"
    assert f"ansible_host: {addresses['local-worker-2']}" in run.outputs["inventory"]


@pytest.mark.parametrize("workers", [1, 3])
def test_changing_the_worker_count_touches_only_the_changed_worker(workers: int) -> None:
    before = {name: node_inputs(r) for name, r in lxd_nodes(local_run()).items()}
    after = {name: node_inputs(r) for name, r in lxd_nodes(local_run(workers)).items()}
    kept = before.keys() & after.keys()
    assert sorted(before.keys() ^ after.keys()) == [f"local-worker-{max(workers, 2)}"]
    # Same names with identical inputs: the engine sees no diff for the other nodes.
    assert all(before[name] == after[name] for name in kept)


def test_the_engine_receives_a_provider_it_can_load() -> None:
    """The serialised provider must unpickle to our provider class (the engine runs it)."""
    resource = lxd_nodes(local_run())["local-cp-1"]
    provider = dill.loads(base64.b64decode(resource.inputs["__provider"]))
    assert isinstance(provider, LxdNodeProvider)


def props(**changes: Any) -> dict[str, Any]:
    base = node_inputs(lxd_nodes(local_run())["local-worker-1"])
    return {**base, **changes}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image", {"alias": "kubesmith-node-2"}),
        ("profile", "kubesmith-other"),
        ("cpu", 1),
        ("memory", "1GiB"),
        ("ssh_public_key", "ssh-ed25519 AAAAother other"),
    ],
)
def test_diff_replaces_the_node_when_what_it_is_changes(key: str, value: Any) -> None:
    diff = LxdNodeProvider().diff("local-worker-1", props(), props(**{key: value}))
    assert diff.changes is True
    assert diff.replaces == [key]
    # Same name for the new node: the old one has to go first.
    assert diff.delete_before_replace is True


def test_diff_of_identical_inputs_changes_nothing() -> None:
    diff = LxdNodeProvider().diff("local-worker-1", props(), props())
    assert diff.changes is False
    assert diff.replaces == []
