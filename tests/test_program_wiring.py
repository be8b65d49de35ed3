"""The program's composition under Pulumi mocks: node pool -> provisioning -> (AWS: pod routes)
-> kubeconfig -> apps.

Under mocks the Provisioning resource is registered but never executed (the engine would run
it), so the admin kubeconfig comes from tests.pulumi_mocks.mock_kubeconfig; what is checked
here is the wiring: what each step receives, what it hangs under and what is secret.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key
from pulumi.runtime.sync_await import _sync_await

from kubesmith import program
from kubesmith.program.provisioning import POD_CIDRS_KEY, trigger_hash, used_pod_cidrs
from kubesmith.provision.inventory import load_inventory
from kubesmith.provision.target import ArtifactSettings, Target
from kubesmith.spec import parse_cluster
from kubesmith.state import sshkeys
from tests.pulumi_mocks import (
    CLUSTER,
    DYNAMIC,
    STACK_TYPE,
    ProgramRun,
    RecordedResource,
    mock_kubeconfig,
    run_program,
    stack_config,
)
from tests.test_program_local import LxdMocks

STACKS = ("local", "dev", "prod")
K8S_PROVIDER = "pulumi:providers:kubernetes"
APPS = "kubesmith:apps:AppsDeployment"


def run(stack: str, config: dict[str, Any] | None = None) -> ProgramRun:
    return run_program(stack, config, mocks=LxdMocks() if stack == "local" else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProgramRun]]:
    # Module-scoped, so set up before the per-test home of conftest: give it its own.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(tmp_path_factory.mktemp("kubesmith-home")))
        yield {stack: run(stack) for stack in STACKS}


def provisioning(result: ProgramRun, cluster: str) -> RecordedResource:
    (found,) = [r for r in result.of_type(DYNAMIC) if r.name == f"{cluster}-provisioning"]
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_step_hangs_under_one_cluster_component(
    runs: dict[str, ProgramRun], stack: str
) -> None:
    result = runs[stack]
    (root,) = [r for r in result.resources if r.parent_type == STACK_TYPE]
    assert root.type == CLUSTER
    assert root.name == stack
    assert provisioning(result, stack).parent_type == CLUSTER
    (apps,) = result.of_type(APPS)
    assert apps.parent_type == CLUSTER


@pytest.mark.parametrize("stack", STACKS)
def test_provisioning_gets_the_exported_inventory_and_its_trigger(
    runs: dict[str, ProgramRun], stack: str
) -> None:
    result = runs[stack]
    inputs = provisioning(result, stack).inputs
    exported = yaml.safe_load(result.outputs["inventory"])
    assert inputs["stack"] == stack
    assert inputs["inventory"] == exported
    groups = exported["all"]["children"]
    assert set(groups["etcd"]["hosts"]) == {
        f"{stack}-cp-{i + 1}" for i in range(len(groups["etcd"]["hosts"]))
    }
    assert groups["kube_node"]["hosts"], "groups must survive Pulumi's input serialisation"
    spec = parse_cluster(stack_config(stack)["kubesmith:cluster"])
    assert inputs["trigger"] == trigger_hash(exported, spec)


def test_trigger_is_stable_and_follows_the_spec() -> None:
    first = provisioning(run("dev"), "dev").inputs["trigger"]
    assert provisioning(run("dev"), "dev").inputs["trigger"] == first
    config = copy.deepcopy(stack_config("dev"))
    config["kubesmith:cluster"]["workers"] = 3
    assert provisioning(run("dev", config), "dev").inputs["trigger"] != first


@pytest.mark.parametrize("stack", STACKS)
def test_apps_deploy_through_a_provider_built_from_the_kubeconfig(
    runs: dict[str, ProgramRun], stack: str
) -> None:
    result = runs[stack]
    (provider,) = result.of_type(K8S_PROVIDER)
    # The provider receives the kubeconfig wrapped as a secret.
    assert provider.inputs["kubeconfig"] == {
        _special_sig_key: _special_secret_sig,
        "value": mock_kubeconfig(stack),
    }
    objects = [r for r in result.resources if r.type.startswith("kubernetes:")]
    assert {r.type for r in objects} >= {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
    }
    for obj in objects:
        assert obj.provider is not None
        assert obj.provider.endswith(f"::{provider.id}"), obj.name
    assert result.outputs["kubeconfig"] == mock_kubeconfig(stack)


def test_a_stack_without_apps_deploys_nothing_to_kubernetes() -> None:
    config = copy.deepcopy(stack_config("dev"))
    config["kubesmith:cluster"]["apps"] = []
    result = run("dev", config)
    assert result.of_type(APPS) == []
    assert result.of_type(K8S_PROVIDER) == []
    # Provisioning and the kubeconfig do not depend on apps.
    assert provisioning(result, "dev").inputs["stack"] == "dev"
    assert result.outputs["kubeconfig"] == mock_kubeconfig("dev")


def test_the_kubeconfig_output_is_a_secret() -> None:
    seen: dict[str, Any] = {}

    def body() -> None:
        spec = parse_cluster(pulumi.Config("kubesmith").require_object("cluster"))
        key = sshkeys.stack_key("dev").public_key
        outputs = program.compose(spec, "dev", key, mock_kubeconfig)
        seen["secret"] = _sync_await(outputs.kubeconfig.is_secret())
        seen["inventory_secret"] = _sync_await(outputs.inventory.is_secret())

    run_program("dev", program=body)
    assert seen == {"secret": True, "inventory_secret": False}


ROUTE = "aws:ec2/route:Route"


def test_lxd_stacks_declare_no_vpc_routes(runs: dict[str, ProgramRun]) -> None:
    """LXD nodes share one bridge: the cni role's host routes reach every node's pod range."""
    assert runs["local"].of_type(ROUTE) == []
    # While the AWS stacks route every node's range (tests/test_program_aws.py has the detail).
    for stack in ("dev", "prod"):
        pod_routes = [r for r in runs[stack].of_type(ROUTE) if r.name.endswith("-pods")]
        assert len(pod_routes) == len(runs[stack].outputs["nodes"])


@pytest.mark.parametrize("stack", STACKS)
def test_provisioning_expects_the_ranges_its_run_will_allocate(
    runs: dict[str, ProgramRun], stack: str, tmp_path: Path
) -> None:
    """The expected ranges (known in a preview) match what the run computes from the inventory
    it receives, for every backend's node order."""
    result = runs[stack]
    inventory_file = tmp_path / "inventory.yml"
    inventory_file.write_text(result.outputs["inventory"])
    fresh_state = tmp_path / "state"
    fresh_state.mkdir()
    run = Target(
        "t", load_inventory(inventory_file), fresh_state, ArtifactSettings.uniform("distro")
    )
    expected = provisioning(result, stack).inputs[POD_CIDRS_KEY]
    assert expected == used_pod_cidrs(run)
    assert len(expected) == len(result.outputs["nodes"])
