"""The AWS program for the real dev and prod stack files, run under Pulumi mocks.

The engine and the AWS provider cannot run here; these tests check what the program asks
them for: resources, their inputs, their parents and the resolved stack exports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime.mocks import MockResourceArgs

from kubesmith.nodes import node_name, node_plan
from kubesmith.program.backends.aws import pod_routes
from kubesmith.program.backends.aws.load_balancer import ApiLoadBalancerArgs, lb_name
from kubesmith.program.backends.aws.network import NetworkArgs, zone_subnets
from kubesmith.program.provisioning import expected_pod_cidrs
from kubesmith.spec import ClusterSpec, parse_cluster
from kubesmith.state.sshkeys import stack_key
from tests.pulumi_mocks import (
    AWS_PROVIDER,
    CLUSTER,
    DYNAMIC,
    GET_AMI,
    INGRESS_RULE,
    INSTANCE,
    KEY_PAIR,
    LISTENER,
    LOAD_BALANCER,
    MOCK_AMI_ID,
    SECURITY_GROUP,
    SECURITY_GROUP_RULE,
    STACK_TYPE,
    SUBNET,
    TARGET_ATTACHMENT,
    TARGET_GROUP,
    KubesmithMocks,
    ProgramFailed,
    ProgramRun,
    RecordedResource,
    RecordingMonitor,
    run_program,
    stack_config,
)

STACKS = ("dev", "prod")
NODE_KEYS = {"name", "role", "privateAddress", "publicAddress", "sshUser"}
ANYWHERE = {"0.0.0.0/0", "::/0"}
#: Ports that must never be reachable from the internet: SSH, the API, etcd clients.
GUARDED_PORTS = (22, 6443, 2379)


def spec_of(stack: str) -> ClusterSpec:
    return parse_cluster(stack_config(stack)["kubesmith:cluster"])


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubesmith-home")


@pytest.fixture(scope="module")
def runs(module_home: Path) -> Iterator[dict[str, ProgramRun]]:
    """Each stack's program, run once for the whole module (about a second each)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(module_home))
        yield {stack: run_program(stack) for stack in STACKS}


def instances(run: ProgramRun) -> list[RecordedResource]:
    return run.of_type(INSTANCE)


def ingress_rules(run: ProgramRun) -> list[dict[str, Any]]:
    """Every ingress rule in any of the three forms AWS resources can express one."""
    rules: list[dict[str, Any]] = []
    for rule in run.of_type(INGRESS_RULE):
        rules.append(
            {
                "name": rule.name,
                "protocol": rule.inputs["ipProtocol"],
                "from": rule.inputs.get("fromPort"),
                "to": rule.inputs.get("toPort"),
                "cidrs": [
                    c for c in (rule.inputs.get("cidrIpv4"), rule.inputs.get("cidrIpv6")) if c
                ],
                "group": rule.inputs.get("referencedSecurityGroupId"),
            }
        )
    for rule in run.of_type(SECURITY_GROUP_RULE):
        if rule.inputs["type"] == "ingress":
            rules.append(
                {
                    "name": rule.name,
                    "protocol": rule.inputs["protocol"],
                    "from": rule.inputs.get("fromPort"),
                    "to": rule.inputs.get("toPort"),
                    "cidrs": rule.inputs.get("cidrBlocks", [])
                    + rule.inputs.get("ipv6CidrBlocks", []),
                    "group": rule.inputs.get("sourceSecurityGroupId"),
                }
            )
    for group in run.of_type(SECURITY_GROUP):
        for block in group.inputs.get("ingress", []):
            rules.append(
                {
                    "name": group.name,
                    "protocol": block["protocol"],
                    "from": block.get("fromPort"),
                    "to": block.get("toPort"),
                    "cidrs": block.get("cidrBlocks", []) + block.get("ipv6CidrBlocks", []),
                    "group": None,
                }
            )
    return rules


def covers(rule: dict[str, Any], port: int) -> bool:
    if str(rule["protocol"]) in ("-1", "all"):
        return True
    return rule["protocol"] == "tcp" and rule["from"] <= port <= rule["to"]


@pytest.mark.parametrize("stack", STACKS)
def test_node_counts_per_role_follow_the_spec(runs: dict[str, ProgramRun], stack: str) -> None:
    spec = spec_of(stack)
    roles = [i.inputs["tags"]["kubesmith.io/role"] for i in instances(runs[stack])]
    assert roles.count("control_plane") == spec.control_planes
    assert roles.count("worker") == spec.workers

    nodes = runs[stack].outputs["nodes"]
    expected = [node_name(spec.name, "control_plane", i) for i in range(1, spec.control_planes + 1)]
    expected += [node_name(spec.name, "worker", i) for i in range(1, spec.workers + 1)]
    assert [n["name"] for n in nodes] == expected, "control planes first, in order"
    assert sorted(i.name for i in instances(runs[stack])) == sorted(expected)


@pytest.mark.parametrize("stack", STACKS)
def test_nodes_output_matches_the_instances(runs: dict[str, ProgramRun], stack: str) -> None:
    run = runs[stack]
    by_name = {i.name: i for i in instances(run)}
    for node in run.outputs["nodes"]:
        assert set(node) == NODE_KEYS
        instance = by_name[node["name"]]
        assert node["privateAddress"] == instance.state["privateIp"]
        assert node["publicAddress"] == instance.state["publicIp"]
        assert node["sshUser"] == "admin", "the Debian AMI's default user"
        subnet = run.by_id(instance.inputs["subnetId"])
        assert ipaddress.IPv4Address(node["privateAddress"]) in ipaddress.IPv4Network(
            subnet.inputs["cidrBlock"]
        )


def test_prod_control_planes_sit_in_three_distinct_zones(runs: dict[str, ProgramRun]) -> None:
    run = runs["prod"]
    planes = [i for i in instances(run) if i.inputs["tags"]["kubesmith.io/role"] == "control_plane"]
    subnets = [run.by_id(p.inputs["subnetId"]) for p in planes]
    zones = {s.inputs["availabilityZone"] for s in subnets}
    assert len({s.id for s in subnets}) == 3
    assert zones == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}


@pytest.mark.parametrize("stack", STACKS)
def test_one_subnet_per_zone_inside_the_vpc(runs: dict[str, ProgramRun], stack: str) -> None:
    spec = spec_of(stack)
    assert spec.aws is not None
    subnets = runs[stack].of_type(SUBNET)
    # Registrations reach the engine in no fixed order: match subnets by zone, not position.
    by_zone = {s.inputs["availabilityZone"]: s.inputs["cidrBlock"] for s in subnets}
    assert len(subnets) == len(by_zone)
    assert sorted(by_zone) == sorted(spec.aws.availability_zones)
    # Zone n has the VPC's slot n, so adding a zone never moves an existing subnet.
    slots = zone_subnets(spec.aws.vpc_network, len(spec.aws.availability_zones))
    assert [by_zone[z] for z in spec.aws.availability_zones] == [str(n) for n in slots]
    networks = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(n.subnet_of(spec.aws.vpc_network) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


@pytest.mark.parametrize("stack", STACKS)
def test_no_guarded_port_is_open_to_the_internet(runs: dict[str, ProgramRun], stack: str) -> None:
    run = runs[stack]
    spec = spec_of(stack)
    assert spec.aws is not None
    admin = set(spec.aws.admin_cidrs)
    node_ips = {f"{n['publicAddress']}/32" for n in run.outputs["nodes"]}
    rules = ingress_rules(run)
    assert rules, "the program creates ingress rules; an empty list would prove nothing"
    for rule in rules:
        assert not ANYWHERE & set(rule["cidrs"]), f"{rule['name']} is open to the internet"
        for port in GUARDED_PORTS:
            if covers(rule, port) and rule["cidrs"]:
                assert set(rule["cidrs"]) <= admin | node_ips, f"{rule['name']} opens {port}"
    # etcd is reached from fellow members only (a group reference), never from any range.
    assert not [r for r in rules if covers(r, 2379) and r["cidrs"]]
    # And the admin ranges really can reach SSH and the API, or the cluster is unusable.
    for port in (22, 6443):
        assert any(covers(r, port) and set(r["cidrs"]) == {cidr} for r in rules for cidr in admin)


@pytest.mark.parametrize("stack", STACKS)
def test_every_instance_is_hardened(runs: dict[str, ProgramRun], stack: str) -> None:
    spec = spec_of(stack)
    assert spec.aws is not None
    assert instances(runs[stack])
    for instance in instances(runs[stack]):
        inputs = instance.inputs
        assert inputs["metadataOptions"]["httpTokens"] == "required", instance.name
        assert inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1, instance.name
        root = inputs["rootBlockDevice"]
        assert root["encrypted"] is True, instance.name
        assert root["volumeType"] == "gp3"
        assert root["volumeSize"] == spec.aws.root_volume_gib
        assert inputs["sourceDestCheck"] is False, "pod traffic needs the check off"
        assert inputs["associatePublicIpAddress"] is True


@pytest.mark.parametrize("stack", STACKS)
def test_instances_use_the_debian_image_and_the_stack_key(
    runs: dict[str, ProgramRun], stack: str, module_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(module_home))
    run = runs[stack]
    (lookup,) = [c for c in run.calls if c.token == GET_AMI]
    assert lookup.args["owners"] == ["136693071363"]
    assert lookup.args["mostRecent"] is True
    assert {"name": "name", "values": ["debian-12-amd64-*"]} in lookup.args["filters"]

    (key,) = run.of_type(KEY_PAIR)
    assert key.inputs["publicKey"] == stack_key(stack).public_key
    for instance in instances(run):
        assert instance.inputs["ami"] == MOCK_AMI_ID
        assert instance.inputs["keyName"] == key.state["keyName"]
        assert f"hostname: {instance.name}" in instance.inputs["userData"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_instance_is_tagged(runs: dict[str, ProgramRun], stack: str) -> None:
    for instance in instances(runs[stack]):
        tags = instance.inputs["tags"]
        assert tags["Name"] == instance.name
        assert tags["kubesmith.io/cluster"] == spec_of(stack).name
        assert tags["kubesmith.io/stack"] == stack
        assert tags["kubesmith.io/role"] in ("control_plane", "worker")


@pytest.mark.parametrize("stack", STACKS)
def test_resources_use_the_spec_region(runs: dict[str, ProgramRun], stack: str) -> None:
    run = runs[stack]
    (provider,) = run.of_type(AWS_PROVIDER)
    spec = spec_of(stack)
    assert spec.aws is not None
    assert provider.inputs["region"] == spec.aws.region
    aws_resources = [r for r in run.resources if r.custom and r.type.startswith("aws:")]
    assert aws_resources
    for resource in aws_resources:
        assert resource.provider is not None
        assert resource.provider.endswith(f"::{provider.id}"), resource.name


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_hangs_under_a_kubesmith_component(
    runs: dict[str, ProgramRun], stack: str
) -> None:
    run = runs[stack]
    (top,) = [r for r in run.resources if r.parent_type == STACK_TYPE]
    assert top.type == "kubesmith:cluster:Cluster"
    (pool,) = run.of_type("kubesmith:aws:NodePool")
    assert pool.parent_type == "kubesmith:cluster:Cluster"
    others = [r for r in run.resources if r is not top]
    assert len(others) > 10
    for resource in others:
        assert resource.parent_type.startswith("kubesmith:"), (resource.type, resource.name)


def test_dev_has_no_load_balancer_and_uses_its_control_plane(runs: dict[str, ProgramRun]) -> None:
    run = runs["dev"]
    assert not [r for r in run.resources if r.type.startswith("aws:lb/")]
    (plane,) = [n for n in run.outputs["nodes"] if n["role"] == "control_plane"]
    assert run.outputs["apiEndpoint"] == f"https://{plane['privateAddress']}:6443"


def test_prod_balances_the_api_over_every_control_plane(runs: dict[str, ProgramRun]) -> None:
    run = runs["prod"]
    (balancer,) = run.of_type(LOAD_BALANCER)
    assert balancer.inputs["loadBalancerType"] == "network"
    assert balancer.inputs["internal"] is False
    assert sorted(balancer.inputs["subnets"]) == sorted(s.id for s in run.of_type(SUBNET))
    assert len(balancer.inputs["securityGroups"]) == 1, "the NLB is filtered too"

    (targets,) = run.of_type(TARGET_GROUP)
    assert (targets.inputs["port"], targets.inputs["protocol"]) == (6443, "TCP")
    (listener,) = run.of_type(LISTENER)
    assert listener.inputs["loadBalancerArn"] == balancer.state["arn"]
    assert (listener.inputs["port"], listener.inputs["protocol"]) == (6443, "TCP")
    assert listener.inputs["defaultActions"][0]["targetGroupArn"] == targets.state["arn"]

    planes = {
        i.id for i in instances(run) if i.inputs["tags"]["kubesmith.io/role"] == "control_plane"
    }
    attachments = run.of_type(TARGET_ATTACHMENT)
    assert len(attachments) == 3
    assert {a.inputs["targetId"] for a in attachments} == planes
    assert all(a.inputs["targetGroupArn"] == targets.state["arn"] for a in attachments)
    assert run.outputs["apiEndpoint"] == f"https://{balancer.state['dnsName']}:6443"


@pytest.mark.parametrize("stack", STACKS)
def test_inventory_export_holds_the_cluster_groups(runs: dict[str, ProgramRun], stack: str) -> None:
    run = runs[stack]
    spec = spec_of(stack)
    inventory = yaml.safe_load(run.outputs["inventory"])["all"]
    nodes = run.outputs["nodes"]
    planes = {n["name"] for n in nodes if n["role"] == "control_plane"}
    workers = {n["name"] for n in nodes if n["role"] == "worker"}
    groups = inventory["children"]
    assert set(groups["etcd"]["hosts"]) == planes
    assert set(groups["kube_control_plane"]["hosts"]) == planes
    assert set(groups["kube_node"]["hosts"]) == workers
    assert set(groups["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node"}
    assert len(planes) == spec.control_planes
    assert len(workers) == spec.workers
    for node in nodes:
        host = inventory["hosts"][node["name"]]
        assert host["ansible_host"] == node["publicAddress"]
        assert host["kubesmith_node_ip"] == node["privateAddress"]
        assert host["ansible_user"] == run.outputs["sshUser"]
    assert inventory["vars"]["kubesmith_api_endpoint"] == run.outputs["apiEndpoint"]
    assert "ansible_ssh_private_key_file" not in inventory["vars"], "no controller paths"


def test_broken_config_fails_naming_the_key() -> None:
    config = stack_config("dev")
    config["kubesmith:cluster"] = {**config["kubesmith:cluster"], "workers": "two"}
    with pytest.raises(ProgramFailed) as failed:
        run_program("dev", config)
    assert "kubesmith:cluster.workers: must be a whole number" in "\n".join(failed.value.log)
    assert "kubesmith:cluster of stack dev has 1 problem" in str(failed.value.error)
    assert type(failed.value.error).__name__ == "RunError"


def test_too_many_nodes_for_the_subnets_fail_naming_the_vpc() -> None:
    config = stack_config("dev")
    cluster = config["kubesmith:cluster"]
    # A /24 VPC gives /28 zone subnets: 11 usable addresses, 13 nodes in the only zone.
    config["kubesmith:cluster"] = {
        **cluster,
        "workers": 12,
        "aws": {**cluster["aws"], "vpcCidr": "10.20.0.0/24"},
    }
    with pytest.raises(ProgramFailed) as failed:
        run_program("dev", config)
    assert any(line.startswith("kubesmith:cluster.aws.vpcCidr: ") for line in failed.value.log)


def test_zone_subnets_are_stable_sixteenth_slots() -> None:
    vpc = ipaddress.IPv4Network("10.30.0.0/16")
    assert [str(n) for n in zone_subnets(vpc, 3)] == [
        "10.30.0.0/20",
        "10.30.16.0/20",
        "10.30.32.0/20",
    ]
    # Adding a zone appends a subnet and keeps the existing ones where they were.
    assert zone_subnets(vpc, 4)[:3] == zone_subnets(vpc, 3)
    assert zone_subnets(ipaddress.IPv4Network("10.0.0.0/24"), 2)[0].prefixlen == 28


def test_component_args_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="repeat"):
        NetworkArgs("c", "s", "10.0.0.0/16", ("eu-west-1a", "eu-west-1a"), ("198.51.100.0/24",))
    with pytest.raises(ValueError, match="2\\+ control planes"):
        ApiLoadBalancerArgs("c", "s", "vpc", ["subnet"], "sg", ("198.51.100.0/24",), ["i-1"], {})


def test_load_balancer_names_fit_aws_limits() -> None:
    longest = "a" * 27 + "-" + "b" * 12  # 40 characters, the spec's maximum
    assert len(lb_name(longest)) <= 32
    assert not lb_name(longest).endswith("--api")
    assert lb_name("prod") == "prod-api"


# --- pod routes: one VPC route per node to its pod range --------------------------------------

ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE_ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"


def top_slices(spec: ClusterSpec) -> dict[str, str]:
    """A pod range per node from the top of podCidr, where a fresh allocation never starts:
    the ranges an earlier run kept, and unlike what the program expects for a new stack."""
    slices = list(spec.pod_network.subnets(new_prefix=24))
    return {node: str(slices[-1 - i]) for i, (node, _role) in enumerate(node_plan(spec))}


class ProvisionedMocks(KubesmithMocks):
    """The engine's answers once provisioning has run: every instance's primary network
    interface, and the Provisioning resource's outputs with the pod ranges ``ranges`` (the
    ones the run reports having used)."""

    def __init__(self, ranges: Mapping[str, str]) -> None:
        super().__init__()
        self.ranges = dict(ranges)

    def computed(self, args: MockResourceArgs, id_: str, serial: int) -> dict[str, Any]:
        if args.typ == INSTANCE:
            computed = super().computed(args, id_, serial)
            return {**computed, "primaryNetworkInterfaceId": f"eni-{serial:017x}"}
        if args.typ == DYNAMIC and args.name.endswith("-provisioning"):
            return {"pod_cidrs": dict(self.ranges)}
        return super().computed(args, id_, serial)


@pytest.fixture(scope="module")
def routed(module_home: Path) -> Iterator[dict[str, ProgramRun]]:
    """Each stack's program with the engine answering as after a provisioning run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(module_home / "routed"))
        yield {
            stack: run_program(stack, mocks=ProvisionedMocks(top_slices(spec_of(stack))))
            for stack in STACKS
        }


def subnet_tables(run: ProgramRun) -> dict[str, str]:
    """Subnet id -> id of the route table it is associated with."""
    return {
        a.inputs["subnetId"]: a.inputs["routeTableId"] for a in run.of_type(ROUTE_TABLE_ASSOCIATION)
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_node_gets_one_route_from_its_pod_range_to_its_interface(
    routed: dict[str, ProgramRun], stack: str
) -> None:
    run = routed[stack]
    spec = spec_of(stack)
    ranges = top_slices(spec)
    by_interface = {i.state["primaryNetworkInterfaceId"]: i for i in instances(run)}
    routes = [r for r in run.of_type(ROUTE) if "networkInterfaceId" in r.inputs]
    assert len(routes) == spec.control_planes + spec.workers  # dev: 3, prod: 6
    tables = subnet_tables(run)
    targets = []
    for route in routes:
        instance = by_interface[route.inputs["networkInterfaceId"]]
        targets.append(instance.name)
        # The range provisioning reported for the instance the route leads to.
        assert route.inputs["destinationCidrBlock"] == ranges[instance.name], route.name
        # In the table of the subnet the node sits in.
        assert route.inputs["routeTableId"] == tables[instance.inputs["subnetId"]], route.name
    assert sorted(targets) == sorted(ranges), "one route per node, none twice"


@pytest.mark.parametrize("stack", STACKS)
def test_every_table_the_nodes_use_routes_every_node(
    routed: dict[str, ProgramRun], stack: str
) -> None:
    """A packet leaves by its source subnet's table: each one must know every node's range."""
    run = routed[stack]
    tables = subnet_tables(run)
    used = {tables[i.inputs["subnetId"]] for i in instances(run)}
    assert used
    pod_routes = [r for r in run.of_type(ROUTE) if "networkInterfaceId" in r.inputs]
    for table in used:
        held = {
            r.inputs["destinationCidrBlock"]
            for r in pod_routes
            if r.inputs["routeTableId"] == table
        }
        assert held == set(top_slices(spec_of(stack)).values()), table


def test_pod_routes_hang_under_the_cluster_and_wait_for_provisioning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dependencies: dict[str, list[str]] = {}
    register = RecordingMonitor.RegisterResource

    def recording(self: RecordingMonitor, request: Any) -> Any:
        dependencies[request.name] = list(request.dependencies)
        return register(self, request)

    monkeypatch.setattr(RecordingMonitor, "RegisterResource", recording)
    spec = spec_of("dev")
    run = run_program("dev", mocks=ProvisionedMocks(top_slices(spec)))
    (provisioning,) = [r for r in run.of_type(DYNAMIC) if r.name == "dev-provisioning"]
    routes = [r for r in run.of_type(ROUTE) if "networkInterfaceId" in r.inputs]
    assert sorted(r.name for r in routes) == sorted(f"{n}-pods" for n, _ in node_plan(spec))
    for route in routes:
        assert route.parent_type == CLUSTER
        assert any(urn.endswith("::dev-provisioning") for urn in dependencies[route.name])
    assert provisioning.parent_type == CLUSTER


def test_a_node_without_a_reported_range_stops_the_program_naming_it() -> None:
    ranges = top_slices(spec_of("dev"))
    del ranges["dev-worker-2"]
    with pytest.raises(ProgramFailed, match="no pod range for node dev-worker-2"):
        run_program("dev", mocks=ProvisionedMocks(ranges))


def test_a_preview_routes_the_ranges_the_program_expects(module_home: Path) -> None:
    """While a preview shows provisioning being created or updated, the engine reports its
    inputs as its outputs; the plain mocks answer the same way. The routes must then carry
    the ranges podcidr will allocate (known values), not unknowns that would show them all
    replaced."""
    spec = spec_of("prod")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(module_home / "preview"))
        run = run_program("prod")
    # A new stack: podcidr hands out the lowest free /24s in node order.
    slices = list(spec.pod_network.subnets(new_prefix=24))
    expected = {node: str(slices[i]) for i, (node, _role) in enumerate(node_plan(spec))}
    pod_routes = {r.name: r for r in run.of_type(ROUTE) if r.name.endswith("-pods")}
    assert {name: r.inputs["destinationCidrBlock"] for name, r in pod_routes.items()} == {
        f"{node}-pods": cidr for node, cidr in expected.items()
    }


def test_too_many_routes_for_the_default_quota_warn_before_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert pod_routes.quota_warning(499) is None  # 499 pod routes + the default route = 500
    warning = pod_routes.quota_warning(500)
    assert warning is not None
    assert "501 routes" in warning
    assert "'Routes per route table'" in warning
    # And the program logs it: a dev stack's 3 nodes against a quota lowered to 3.
    monkeypatch.setattr(pod_routes, "DEFAULT_ROUTES_PER_TABLE", 3)
    run = run_program("dev", mocks=ProvisionedMocks(top_slices(spec_of("dev"))))
    assert any("needs 4 routes" in line for line in run.log), run.log


def test_flannel_stacks_get_no_pod_routes_and_keep_no_ranges(module_home: Path) -> None:
    """Flannel routes pod traffic itself; only the bridge network needs the VPC routes."""
    config = dict(stack_config("dev"))
    config["kubesmith:cluster"] = {**config["kubesmith:cluster"], "cni": {"plugin": "flannel"}}
    spec = parse_cluster(config["kubesmith:cluster"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_HOME", str(module_home / "flannel"))
        run = run_program("dev", config, mocks=ProvisionedMocks(top_slices(spec)))
        assert expected_pod_cidrs("dev", spec) == {}
    assert not [r for r in run.of_type(ROUTE) if r.name.endswith("-pods")]
    # The bridge stack of the same shape does get them (the check above is not vacuous).
    bridge = run_program("dev", mocks=ProvisionedMocks(top_slices(spec_of("dev"))))
    assert [r for r in bridge.of_type(ROUTE) if r.name.endswith("-pods")]
