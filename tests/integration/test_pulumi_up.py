"""`pulumi up` of the local stack's shape, everything but the engine, on real LXD.

tests.pulumi_engine runs the stack's program under Pulumi's mocks and sends its dynamic
resources (the LXD nodes and Provisioning) to the SDK's dynamic provider server in its own
process over gRPC, keeping the stack's state between runs. So what runs here is what
`pulumi up -s local` would run on the controller (the program, the serialised providers'
check/diff/create/update/delete, Ansible), except the Go engine's orchestration; the
Kubernetes resources of the stack's apps stay mocked (no Kubernetes API here), and the stack
provisions without the Kubernetes binaries (artifacts.kubernetesBinaries: false), which
these machines cannot download.

The tests build on each other, in file order: up, no-change up, one more worker, one worker
less, destroy.
"""

from __future__ import annotations

import base64
import copy
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kubesmith.local.connection import LABEL_PREFIX
from kubesmith.local.instances import delete_node, managed_instances, node_address
from kubesmith.provision.scope import load_record
from kubesmith.state.paths import stack_dir
from tests.integration.conftest import REPO, LxdHost, unique_name
from tests.pulumi_engine import Engine, UpResult
from tests.pulumi_mocks import stack_config

pytestmark = pytest.mark.integration

NODE_TYPE = "pulumi-python:dynamic/kubesmith:LxdNode"
PROVISIONING_TYPE = "pulumi-python:dynamic:Resource"


@dataclass
class PulumiStack:
    host: LxdHost
    engine: Engine
    name: str
    home: Path
    config: dict[str, Any]

    def with_workers(self, workers: int) -> dict[str, Any]:
        config = copy.deepcopy(self.config)
        config["kubesmith:cluster"]["workers"] = workers
        return config

    def instances(self) -> dict[str, str]:
        """This cluster's LXD instances: name -> address."""
        client = self.host.client()
        return {
            instance.name: node_address(instance) or ""
            for instance in managed_instances(client)
            if instance.config.get(f"{LABEL_PREFIX}cluster") == self.name
        }


@pytest.fixture(scope="module")
def stack(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulumiStack]:
    """The `local` stack's configuration as a new cluster of its own name, state in a
    temporary KUBESMITH_HOME (its SSH key, PKI and the engine's state file)."""
    home = tmp_path_factory.mktemp("pulumi-home")
    name = unique_name()
    config = stack_config("local")
    cluster = config["kubesmith:cluster"]
    cluster["name"] = name
    cluster.setdefault("artifacts", {})["kubernetesBinaries"] = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(home))
        patch.setenv("KUBESMITH_PROJECT", str(REPO))
        made = PulumiStack(lxd_ready, Engine(home / "engine-state.json", REPO), name, home, config)
        try:
            yield made
        finally:
            client = lxd_ready.client()
            for instance in made.instances():
                delete_node(client, instance)


@pytest.fixture(autouse=True)
def isolated_home(stack: PulumiStack, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test of this file works on the one stack's state (tests/conftest.py would give
    each test a new KUBESMITH_HOME)."""
    monkeypatch.setenv("KUBESMITH_HOME", str(stack.home))
    return stack.home


def _provisioning(result: UpResult) -> dict[str, Any]:
    [name] = [n for n, outs in result.resources.items() if "recap" in outs]
    return result.resources[name]


def test_up_creates_the_nodes_and_provisions_them(stack: PulumiStack) -> None:
    result = stack.engine.up("local", stack.config)

    nodes = [f"{stack.name}-cp-1", f"{stack.name}-worker-1", f"{stack.name}-worker-2"]
    assert sorted(result.ops("create")) == sorted([*nodes, f"{stack.name}-provisioning"])
    assert [s.op for s in result.steps if s.op != "create"] == []
    instances = stack.instances()
    assert sorted(instances) == sorted(nodes)

    # The outputs are the real nodes: names, roles and the addresses LXD gave them.
    shapes = {n["name"]: n for n in result.outputs["nodes"]}
    assert {name: shape["privateAddress"] for name, shape in shapes.items()} == instances
    assert shapes[nodes[0]]["role"] == "control_plane"
    assert result.outputs["apiEndpoint"] == f"https://{instances[nodes[0]]}:6443"
    inventory = yaml.safe_load(result.outputs["inventory"])
    assert set(inventory["all"]["hosts"]) == set(nodes)
    assert set(inventory["all"]["children"]["kube_node"]["hosts"]) == set(nodes[1:])

    # Provisioning ran on every node, and said so in the update's output.
    recap = _provisioning(result)["recap"]
    assert set(recap) == set(nodes)
    assert all(r["failed"] == 0 and r["changed"] > 0 for r in recap.values())
    for node in nodes:
        assert any(line.startswith(f"{node}: cni ok") for line in result.provider_log)
    # The step's own line, and its end with the time it took.
    assert "provisioning local: 3 hosts, playbooks/site.yml" in result.provider_log
    done = re.compile(r"provisioning local: 3 hosts, playbooks/site\.yml: done \(\S+s\)")
    assert any(done.fullmatch(line) for line in result.provider_log)

    # The kubeconfig is the cluster's: its API endpoint, an admin certificate of its CA.
    kubeconfig = yaml.safe_load(result.outputs["kubeconfig"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == result.outputs["apiEndpoint"]
    ca_file = next(stack.home.rglob("pki/ca.crt"))
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    user = kubeconfig["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    cert.verify_directly_issued_by(ca)


def test_a_second_up_changes_nothing_and_runs_no_playbook(stack: PulumiStack) -> None:
    result = stack.engine.up("local", stack.config)

    assert {s.op for s in result.steps} == {"same"}
    assert len(result.steps) == 4
    assert result.provider_log == []


#: Every service kubesmith installs or starts on a node (those a node does not run are not
#: loaded there, and are left out).
SERVICES = (
    "containerd",
    "etcd",
    "haproxy",
    "kubesmith-pod-network",
    "kubelet",
    "kube-proxy",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)


def service_starts(node: str) -> dict[str, tuple[str, str, str]]:
    """Each loaded kubesmith service on ``node``: (its state, when it last became active on
    the monotonic clock every LXD node shares, the id of that run). A restart changes the
    last two."""
    units = [f"{unit}.service" for unit in SERVICES]
    shown_properties = "Id,LoadState,ActiveState,ActiveEnterTimestampMonotonic,InvocationID"
    shown = subprocess.run(
        ["lxc", "exec", node, "--", "systemctl", "show", *units, "-p", shown_properties],
        capture_output=True,
        text=True,
        check=True,
    )
    starts = {}
    for block in shown.stdout.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines())
        if values["LoadState"] == "loaded":
            starts[values["Id"]] = (
                values["ActiveState"],
                values["ActiveEnterTimestampMonotonic"],
                values["InvocationID"],
            )
    return starts


def test_one_more_worker_is_named_in_the_diff_and_restarts_nothing_elsewhere(
    stack: PulumiStack,
) -> None:
    before = stack.instances()
    starts = {node: service_starts(node) for node in before}
    # What is measured: the runtime everywhere and etcd on the control plane, running (the
    # Kubernetes units are written but not started without the binaries; the pod routes'
    # reconciler runs at boot only).
    for node, units in starts.items():
        assert units["containerd.service"][0] == "active", (node, units)
    assert starts[f"{stack.name}-cp-1"]["etcd.service"][0] == "active"

    result = stack.engine.up("local", stack.with_workers(3))

    added = f"{stack.name}-worker-3"
    assert result.ops("create") == [added]
    assert result.ops("update") == [f"{stack.name}-provisioning"]
    assert sorted(result.ops("same")) == sorted(before)
    assert stack.instances() == {**before, added: stack.instances()[added]}
    # The provider's diff named the new node, and only it, as new; the others for the pod
    # routes alone (bridge CNI), the cluster-wide step a new node needs.
    planned = [line for line in result.provider_log if line.startswith("will provision ")]
    routes = "only cni: pod routes to every node's range (bridge CNI)"
    assert sorted(planned) == sorted(
        [f"will provision {added}: new node"]
        + [f"will provision {node}: {routes}" for node in before]
    )
    provisioning = _provisioning(result)
    assert provisioning["provisioned"] == {added: "new node", **dict.fromkeys(before, routes)}
    # Two runs: everything on the new node, then the cni plays on the others.
    assert f"provisioning local: {added}, playbooks/site.yml" in result.provider_log
    others = ",".join(sorted(before))
    assert f"provisioning local: {others}, playbooks/site.yml --tags cni" in result.provider_log
    recap = provisioning["recap"]
    assert recap[added]["changed"] > 0
    # The existing nodes ran the cni role alone: of every other role only the argument check
    # Ansible runs whatever the tags (the progress notes give each host's roles and counts)...
    for node in before:
        notes = [
            found.groups()
            for line in result.provider_log
            if (found := re.match(rf"{re.escape(node)}: (\S+) ok (\d+) changed (\d+)", line))
        ]
        assert {role for role, _ok, _changed in notes} >= {"cni"}, (node, notes)
        others = {(ok, changed) for role, ok, changed in notes if role != "cni"}
        assert others <= {("1", "0")}, (node, notes)
    # ...they only learn the route to the new node's pod range (bridge CNI)...
    for node in before:
        assert set(recap[node]["changed_roles"]) <= {"cni"}, (node, recap[node])
    # ...and no service of theirs was restarted.
    assert {node: service_starts(node) for node in before} == starts
    # `kubesmith provision --limit` would now find every host as provisioned (scope.py).
    assert set(load_record(stack_dir("local")) or {}) == {*before, added}


def test_one_worker_less_leaves_the_cluster_before_its_machine_goes(stack: PulumiStack) -> None:
    """Lowering `workers`: the update removes the node (`kubesmith node remove`'s steps, on
    the last run's inventory), the others lose its pod route, the controller forgets it, and
    only then the engine deletes the machine."""
    before = stack.instances()
    gone = f"{stack.name}-worker-3"
    ranges = yaml.safe_load((stack_dir("local") / "pod-cidrs.yaml").read_text(encoding="utf-8"))
    gone_range = ranges[gone]

    result = stack.engine.up("local", stack.with_workers(2))

    assert result.ops("delete") == [gone]
    assert result.ops("update") == [f"{stack.name}-provisioning"]
    assert f"will provision {gone}: removed (no longer provisioned)" in result.provider_log
    removing = [line for line in result.provider_log if line.startswith(f"removing {gone}: ")]
    assert f"removing {gone}: reset: " in " ".join(removing), removing
    assert any(
        line.startswith(f"removed {gone}: forgot its certificates") for line in result.provider_log
    )
    assert stack.instances() == {n: a for n, a in before.items() if n != gone}
    for node in stack.instances():
        routes = subprocess.run(
            ["lxc", "exec", node, "--", "ip", "route"], capture_output=True, text=True, check=True
        ).stdout
        assert gone_range not in routes, (node, routes)
    assert gone not in (load_record(stack_dir("local")) or {})
    assert not (stack_dir("local") / "pki" / "nodes" / gone).exists()


def test_destroy_deletes_every_instance(stack: PulumiStack) -> None:
    instances = stack.instances()
    assert len(instances) == 3

    result = stack.engine.destroy()

    assert sorted(result.ops("delete")) == sorted([*instances, f"{stack.name}-provisioning"])
    assert stack.instances() == {}
    assert stack.engine.load() == []
