"""The Provisioning Pulumi resource, under Pulumi mocks (the engine cannot run here).

What is checked: the resource reaches the engine as a dynamic resource carrying the trigger
over inventory, playbooks, versions and spec; the trigger moves exactly when one of those
does; the provider re-runs on a trigger change only and never replaces; create writes the
stack's inventory and runs the provisioning glue (replaced here by a recorder, since it needs
real nodes: the glue itself runs for real in tests/integration/test_provision.py); the pod
ranges it reports and expects; and that the LXD node provider edits the known_hosts file the
run names for Ansible.
"""

from __future__ import annotations

import contextvars
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from kubesmith import versions
from kubesmith.local import shares
from kubesmith.local.connection import labels
from kubesmith.nodes import Node, node_plan
from kubesmith.program import provisioning
from kubesmith.program.backends.lxd.provider import stack_known_hosts
from kubesmith.program.provisioning import (
    POD_CIDRS_KEY,
    RECAP_KEY,
    ProvisioningProvider,
    expected_pod_cidrs,
    provision_after,
    trigger_hash,
    used_pod_cidrs,
    with_controller_paths,
)
from kubesmith.provision import target
from kubesmith.provision.inventory import build_inventory, load_inventory
from kubesmith.provision.runner import HostStats, RunResult
from kubesmith.resources import package_file, playbooks_dir
from kubesmith.spec import ClusterSpec, parse_cluster
from kubesmith.state import podcidr
from kubesmith.state.paths import stack_dir
from kubesmith.state.pki import PkiReport
from tests.test_pod_security import issuer_ca


def spec(**extra: object) -> ClusterSpec:
    return parse_cluster({"name": "local", "backend": "lxd", "lxd": {}, **extra})


def inventory(address: str = "10.203.0.11") -> dict[str, Any]:
    node = Node("local-cp-1", "control_plane", address, None, "root")
    return build_inventory(spec(), [node], endpoint=f"https://{address}:6443")


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, _args: MockCallArgs) -> dict[str, Any]:
        return {}


def register(stack: str, the_spec: ClusterSpec, data: dict[str, Any]) -> list[MockResourceArgs]:
    recorder = Recorder()

    def body() -> None:
        pulumi.runtime.set_mocks(recorder, preview=False)

        @pulumi.runtime.test
        def program() -> pulumi.Output[Any]:
            resource = provision_after(stack, the_spec, pulumi.Output.from_input(data))
            return resource.urn

        program()

    contextvars.copy_context().run(body)
    return recorder.resources


#: A range a fresh allocation would give local-cp-1 (the lowest /24 of the default podCidr).
EXPECTED = {"local-cp-1": "10.244.0.0/24"}
#: A range an earlier run kept for it.
KEPT = {"local-cp-1": "10.244.7.0/24"}


def keep(stack: str, ranges: dict[str, str]) -> Path:
    """Write ``ranges`` where podcidr keeps a stack's allocation, as an earlier run would."""
    path = stack_dir(stack) / podcidr.ALLOCATIONS_FILE
    path.write_text(yaml.safe_dump(ranges))
    return path


def test_the_engine_gets_a_dynamic_resource_with_the_trigger() -> None:
    data = inventory()
    [resource] = register("local", spec(), data)
    assert resource.typ == "pulumi-python:dynamic:Resource"
    assert resource.name == "local-provisioning"
    assert resource.inputs["stack"] == "local"
    assert resource.inputs["trigger"] == trigger_hash(data, spec())
    assert (
        resource.inputs["inventory"]["all"]["hosts"]["local-cp-1"]["ansible_host"] == "10.203.0.11"
    )
    assert "__provider" in resource.inputs  # the serialised provider the engine will run
    # The ranges the run will allocate, as inputs: a preview reports them as the outputs.
    assert resource.inputs[POD_CIDRS_KEY] == EXPECTED


def test_expected_ranges_keep_earlier_ones_and_never_write_the_state() -> None:
    three = spec(workers=2)
    path = stack_dir("local") / podcidr.ALLOCATIONS_FILE
    # A new stack: the lowest /24s in node order, and nothing written (a preview writes nothing).
    assert expected_pod_cidrs("local", three) == {
        "local-cp-1": "10.244.0.0/24",
        "local-worker-1": "10.244.1.0/24",
        "local-worker-2": "10.244.2.0/24",
    }
    assert not path.exists()
    # worker-1 kept .5 and a removed worker-3 kept .0: the others get the lowest free ones.
    keep("local", {"local-worker-1": "10.244.5.0/24", "local-worker-3": "10.244.0.0/24"})
    before = path.read_bytes()
    assert expected_pod_cidrs("local", three) == {
        "local-cp-1": "10.244.0.0/24",
        "local-worker-1": "10.244.5.0/24",
        "local-worker-2": "10.244.1.0/24",
    }
    assert path.read_bytes() == before


def test_expected_ranges_are_the_ones_the_run_uses(tmp_path: Path) -> None:
    """The program's expectation and the run's allocation see the nodes in the same order."""
    three = spec(workers=2, controlPlanes=3)
    nodes = [
        Node(name, role, f"10.203.0.{20 + i}", None, "root")
        for i, (name, role) in enumerate(node_plan(three))
    ]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(build_inventory(three, nodes, endpoint="https://x:6443")))
    keep("local", {"local-worker-2": "10.244.9.0/24"})
    expected = expected_pod_cidrs("local", three)
    run = target.Target(
        "t", load_inventory(path), stack_dir("local"), target.ArtifactSettings.uniform("distro")
    )
    assert used_pod_cidrs(run) == expected
    assert expected["local-worker-2"] == "10.244.9.0/24"


def test_trigger_follows_inventory_playbooks_versions_and_spec(tmp_path: Path) -> None:
    playbooks = tmp_path / "playbooks"
    shutil.copytree(playbooks_dir(), playbooks)
    versions_file = tmp_path / "versions.yaml"
    shutil.copy(package_file("versions.yaml"), versions_file)

    def digest(data: dict[str, Any] | None = None, the_spec: ClusterSpec | None = None) -> str:
        return trigger_hash(
            data or inventory(),
            the_spec or spec(),
            playbooks=playbooks,
            versions_file=versions_file,
        )

    base = digest()
    assert digest() == base  # deterministic
    assert digest(inventory("10.203.0.99")) != base
    assert digest(the_spec=spec(artifacts={"source": "release"})) != base
    etcd_config = playbooks / "roles" / "etcd" / "defaults" / "main.yml"
    etcd_config.write_text(etcd_config.read_text() + "# changed\n")
    changed_playbooks = digest()
    assert changed_playbooks != base
    versions_file.write_text(
        versions_file.read_text().replace(versions.component("etcd").version, "0.0.1")
    )
    assert digest() != changed_playbooks


def test_trigger_follows_the_oidc_ca_behind_the_same_path(tmp_path: Path) -> None:
    """A renewed issuer CA in the same file reruns provisioning (it reaches the apiservers)."""
    issuer_ca(tmp_path / "ca.pem")
    oidc = {"issuerUrl": "https://i.example", "clientId": "k", "caFile": str(tmp_path / "ca.pem")}
    first = trigger_hash(inventory(), spec(oidc=oidc))
    assert trigger_hash(inventory(), spec(oidc=oidc)) == first
    issuer_ca(tmp_path / "ca.pem")
    assert trigger_hash(inventory(), spec(oidc=oidc)) != first


def test_provider_reruns_on_trigger_changes_only_and_never_replaces() -> None:
    provider = ProvisioningProvider()
    new = {"stack": "local", "inventory": inventory(), "trigger": "a", POD_CIDRS_KEY: EXPECTED}
    # The last outputs: the inputs plus what the run reported.
    old = {**new, RECAP_KEY: {"local-cp-1": {"ok": 1}}, POD_CIDRS_KEY: KEPT}
    same = provider.diff("id", old, dict(new))
    assert not same.changes, "outputs that differ from the expected inputs change nothing"
    moved = provider.diff("id", old, {**new, "trigger": "b"})
    assert moved.changes
    assert moved.replaces == []


def test_a_state_without_pod_ranges_runs_once_more_in_place() -> None:
    new = {"stack": "local", "inventory": inventory(), "trigger": "a", POD_CIDRS_KEY: EXPECTED}
    written_before_the_output = {**new, RECAP_KEY: {}}
    del written_before_the_output[POD_CIDRS_KEY]
    diff = ProvisioningProvider().diff("id", written_before_the_output, new)
    assert diff.changes
    assert diff.replaces == []


def test_create_writes_the_stack_inventory_and_runs_the_glue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    calls: list[target.Target] = []

    class Outcome:
        pki = PkiReport()
        run = RunResult("successful", 0, stats={"local-cp-1": HostStats(ok=20, changed=3)})

    def fake_provision(
        chosen: target.Target, _options: object, on_event: Any, attach: Any
    ) -> Outcome:
        calls.append(chosen)
        # An LXD stack's nodes get the verified binaries mounted (kubesmith.local.shares).
        assert attach is shares.attach
        # Two events of the run, as ansible-runner sends them: a task of the etcd role that
        # changed something. The outputs carry which roles changed on which host.
        task = {"host": "local-cp-1", "role": "etcd", "task": "Etcd | write the unit"}
        on_event({"event": "runner_on_start", "event_data": task})
        on_event({"event": "runner_on_ok", "event_data": {**task, "res": {"changed": True}}})
        on_event({"event": "playbook_on_stats", "event_data": {}})
        return Outcome()

    monkeypatch.setattr("kubesmith.provision.provisioner.provision", fake_provision)
    data = inventory()
    result = ProvisioningProvider().create({"stack": "local", "inventory": data, "trigger": "t"})
    written = stack_dir("local") / target.STACK_INVENTORY
    assert written.is_file()
    # The state's inventory names no controller path; the run adds this machine's key.
    all_vars = yaml.safe_load(written.read_text())["all"]["vars"]
    assert all_vars["ansible_ssh_private_key_file"] == str(
        stack_dir("local") / "ssh" / "id_ed25519"
    )
    assert "StrictHostKeyChecking=accept-new" in all_vars["ansible_ssh_common_args"]
    assert "ansible_ssh_private_key_file" not in data["all"]["vars"]  # the input is untouched
    assert calls[0].inventory.path == written.resolve()
    assert calls[0].inventory.hosts_in("etcd") == ["local-cp-1"]
    assert result.outs[provisioning.RECAP_KEY] == {
        "local-cp-1": {"ok": 20, "changed": 3, "failed": 0, "changed_roles": {"etcd": 1}}
    }


def test_create_reports_the_pod_ranges_the_state_keeps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))

    class Outcome:
        pki = PkiReport()
        run = RunResult("successful", 0, stats={"local-cp-1": HostStats(ok=1)})

    monkeypatch.setattr("kubesmith.provision.provisioner.provision", lambda *_: Outcome())
    # The allocation the run kept (not the lowest range a fresh allocation would pick).
    kept = keep("local", KEPT)
    props = {"stack": "local", "inventory": inventory(), "trigger": "t", POD_CIDRS_KEY: EXPECTED}
    result = ProvisioningProvider().create(props)
    assert result.outs is not None
    assert result.outs[POD_CIDRS_KEY] == KEPT
    assert yaml.safe_load(kept.read_text()) == KEPT, "reading the ranges back moves none"


def test_a_failed_run_fails_the_resource(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    from kubesmith.errors import KubesmithError
    from kubesmith.provision.runner import Failure

    class Outcome:
        pki = PkiReport()
        run = RunResult(
            "failed",
            2,
            stats={"local-cp-1": HostStats(failed=1)},
            failures=[
                Failure("local-cp-1", "Etcd | wait until the member is healthy", "timed out")
            ],
        )

    monkeypatch.setattr("kubesmith.provision.provisioner.provision", lambda *_: Outcome())
    with pytest.raises(
        KubesmithError, match=r"provisioning failed on local-cp-1: task 'Etcd \| wait"
    ):
        ProvisioningProvider().create({"stack": "local", "inventory": inventory(), "trigger": "t"})


# --- the LXD node provider keeps the pins of this run's known_hosts in step ------------------


def test_lxd_provider_edits_the_known_hosts_the_run_gives_ansible() -> None:
    """A replaced LXD node's old host key is dropped from the file Ansible checks; both sides
    must therefore name the same file (the provider's create/delete run in
    tests/integration/test_lxd_provider.py)."""

    def node(name: str) -> dict[str, Any]:
        return {"name": name, "labels": labels(stack="local", role="worker")}

    known_hosts = stack_known_hosts(node("local-worker-1"))
    ansible_args = with_controller_paths("local", inventory())["all"]["vars"]
    assert f"UserKnownHostsFile={known_hosts.path} " in ansible_args["ansible_ssh_common_args"]
    # Nodes of one stack share one KnownHosts (and its lock): the engine creates them at once.
    assert stack_known_hosts(node("local-worker-2")) is known_hosts


def test_the_provider_gets_whole_numbers_back() -> None:
    """Pulumi carries numbers as doubles: the inventory's counts come back as 1.0, which the
    strict spec refuses (found by running the provider through the SDK's provider server)."""
    sent = {"controlPlanes": 1.0, "lxd": {"cpu": 2.0}, "ratio": 0.5, "names": ["a", 3.0]}
    back = provisioning.whole_numbers(sent)
    assert back == {"controlPlanes": 1, "lxd": {"cpu": 2}, "ratio": 0.5, "names": ["a", 3]}
    assert type(back["controlPlanes"]) is int
    assert type(back["lxd"]["cpu"]) is int
