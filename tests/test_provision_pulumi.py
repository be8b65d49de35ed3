"""The Provisioning Pulumi resource, under Pulumi mocks (the engine cannot run here).

What is checked: the resource reaches the engine as a dynamic resource carrying the trigger
over inventory, playbooks, versions and spec; the trigger moves exactly when one of those
does; the provider re-runs on a trigger change only and never replaces; create writes the
stack's inventory and runs the provisioning glue (replaced here by a recorder, since it needs
real nodes: the glue itself runs for real in tests/integration/test_provision.py).
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
from kubesmith.inventory import build_inventory
from kubesmith.nodes import Node
from kubesmith.paths import package_dir, stack_dir
from kubesmith.provision import pulumi_resource, target
from kubesmith.provision.pulumi_resource import ProvisioningProvider, provision_after, trigger_hash
from kubesmith.provision.runner import HostStats, RunResult, playbooks_dir
from kubesmith.spec import ClusterSpec, parse_cluster


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


def test_trigger_follows_inventory_playbooks_versions_and_spec(tmp_path: Path) -> None:
    playbooks = tmp_path / "playbooks"
    shutil.copytree(playbooks_dir(), playbooks)
    versions_file = tmp_path / "versions.yaml"
    shutil.copy(package_dir() / "versions.yaml", versions_file)

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


def test_provider_reruns_on_trigger_changes_only_and_never_replaces() -> None:
    provider = ProvisioningProvider()
    old = {"stack": "local", "inventory": inventory(), "trigger": "a"}
    same = provider.diff("id", old, dict(old))
    assert not same.changes
    moved = provider.diff("id", old, {**old, "trigger": "b"})
    assert moved.changes
    assert moved.replaces == []


def test_create_writes_the_stack_inventory_and_runs_the_glue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    calls: list[target.Target] = []

    class Outcome:
        run = RunResult("successful", 0, stats={"local-cp-1": HostStats(ok=20, changed=3)})

    def fake_provision(chosen: target.Target, _options: object) -> Outcome:
        calls.append(chosen)
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
    assert result.outs[pulumi_resource.RECAP_KEY] == {
        "local-cp-1": {"ok": 20, "changed": 3, "failed": 0}
    }


def test_a_failed_run_fails_the_resource(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    from kubesmith.errors import KubesmithError
    from kubesmith.provision.runner import Failure

    class Outcome:
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
