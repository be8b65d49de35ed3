"""Run the kubesmith Pulumi program under Pulumi mocks and record what it asks the engine for.

The Pulumi engine and provider plugins cannot run on the development machines, so every
Pulumi code path is checked here: the program runs in-process, each resource registration
is answered by `KubesmithMocks` (its inputs plus plausible computed outputs) and recorded
with its parent, and the stack's exports are resolved.

    from tests.pulumi_mocks import INSTANCE, run_program

    run = run_program("dev")                     # config from Pulumi.dev.yaml
    run.of_type(INSTANCE), run.outputs["inventory"], run.calls

Other backends extend `KubesmithMocks` (override `computed` or `call`, calling super) and pass
an instance as ``run_program(..., mocks=...)``. Each run happens in its own copy of the
context, so runs with different stacks or configs never see each other's resources.
"""

from __future__ import annotations

import contextvars
import ipaddress
import itertools
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.stack import Stack

from kubesmith import program as kubesmith_program
from kubesmith.stackfile import read_stack_config

REPO = Path(__file__).resolve().parents[1]

GET_AMI = "aws:ec2/getAmi:getAmi"
MOCK_AMI_ID = "ami-0123456789abcdef0"
STACK_TYPE = "pulumi:pulumi:Stack"

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
INSTANCE = "aws:ec2/instance:Instance"
KEY_PAIR = "aws:ec2/keyPair:KeyPair"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
TARGET_ATTACHMENT = "aws:lb/targetGroupAttachment:TargetGroupAttachment"
AWS_PROVIDER = "pulumi:providers:aws"
CLUSTER = "kubesmith:cluster:Cluster"
DYNAMIC = "pulumi-python:dynamic:Resource"


def mock_kubeconfig(stack: str) -> str:
    """Stands in for the admin kubeconfig: under mocks the Provisioning resource never runs,
    so no PKI exists to read one from. Distinct per stack so tests can trace where it went."""
    return f"apiVersion: v1\nkind: Config\ncurrent-context: mock-{stack}\n"


def mock_program() -> None:
    kubesmith_program.main(read_kubeconfig=mock_kubeconfig)


#: AWS id prefixes, so ids in assertions and failure messages read like the real ones.
_ID_PREFIXES = {
    VPC: "vpc",
    SUBNET: "subnet",
    INSTANCE: "i",
    KEY_PAIR: "key",
    SECURITY_GROUP: "sg",
    INGRESS_RULE: "sgr",
    EGRESS_RULE: "sgr",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
}
#: Addresses handed out as instance public IPs: the benchmarking range, never routed.
_PUBLIC_POOL = ipaddress.IPv4Network("198.18.0.0/15")


def urn_type(urn: str) -> str:
    """The resource type of a URN (the last one of its parent-type chain)."""
    return urn.split("::")[2].split("$")[-1] if urn else ""


@dataclass(frozen=True)
class RecordedResource:
    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    #: The full state the mock answered with: inputs plus computed outputs.
    state: dict[str, Any]
    parent: str
    provider: str | None
    custom: bool
    #: URNs of the resources it was registered to depend on (depends_on).
    dependencies: tuple[str, ...] = ()

    @property
    def parent_type(self) -> str:
        return urn_type(self.parent)


@dataclass(frozen=True)
class RecordedCall:
    token: str
    args: dict[str, Any]


@dataclass
class ProgramRun:
    resources: list[RecordedResource]
    calls: list[RecordedCall]
    #: Stack exports, resolved.
    outputs: dict[str, Any]
    #: Messages the program logged to the engine (pulumi.log.*), in order.
    log: list[str]

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def by_id(self, id_: str) -> RecordedResource:
        matches = [r for r in self.resources if r.id == id_]
        assert len(matches) == 1, f"{len(matches)} resources with id {id_!r}"
        return matches[0]


class ProgramFailed(Exception):
    """The program raised; `error` is what it raised, `log` what it logged before."""

    def __init__(self, error: BaseException, log: list[str]) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.log = log


@dataclass
class _Allocation:
    subnets: dict[str, tuple[ipaddress.IPv4Network, str]] = field(default_factory=dict)
    hosts_per_subnet: dict[str, int] = field(default_factory=dict)
    public: int = 0
    regions: dict[str, str] = field(default_factory=dict)


class KubesmithMocks(pulumi.runtime.Mocks):
    """Answers registrations with the inputs plus computed outputs, and records everything."""

    def __init__(self) -> None:
        self.resources: list[RecordedResource] = []
        self.calls: list[RecordedCall] = []
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._alloc = _Allocation()
        #: Set by RecordingMonitor on the registering thread: the parent URN of the resource
        #: (``urn``) and the URNs it depends on (``dependencies``).
        self.pending_parent = threading.local()

    # -- hooks for subclasses --------------------------------------------------------------

    def computed(self, args: MockResourceArgs, id_: str, serial: int) -> dict[str, Any]:
        """Outputs the provider would compute for ``args`` (called with the lock held)."""
        inputs = args.inputs
        arn = {"arn": f"arn:aws:mock:{self._region(args)}:123456789012:{args.typ}/{id_}"}
        if args.typ == AWS_PROVIDER:
            self._alloc.regions[id_] = str(inputs.get("region", "us-east-1"))
            return {}
        if args.typ == SUBNET:
            cidr = ipaddress.IPv4Network(inputs["cidrBlock"])
            self._alloc.subnets[id_] = (cidr, str(inputs.get("availabilityZone", "")))
            return arn
        if args.typ == INSTANCE:
            return {**arn, **self._instance_addresses(inputs)}
        if args.typ == KEY_PAIR:
            # Pulumi auto-names from the logical name plus a random suffix.
            return {**arn, "keyName": inputs.get("keyName") or f"{args.name}-{serial:07x}"}
        if args.typ == LOAD_BALANCER:
            dns = f"{inputs.get('name', args.name)}-{serial:016x}.elb.{self._region(args)}"
            return {**arn, "dnsName": f"{dns}.amazonaws.com"}
        if args.custom and args.typ.startswith("aws:"):
            return arn
        return {}

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        with self._lock:
            self.calls.append(RecordedCall(args.token, dict(args.args)))
        if args.token == GET_AMI:
            return {
                "id": MOCK_AMI_ID,
                "imageId": MOCK_AMI_ID,
                "name": "debian-12-amd64-20260101-0000",
                "architecture": "x86_64",
                "ownerId": "136693071363",
            }, []
        raise NotImplementedError(f"KubesmithMocks has no answer for the call {args.token}")

    # -- the Mocks interface ---------------------------------------------------------------

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        with self._lock:
            serial = next(self._serial)
            prefix = _ID_PREFIXES.get(args.typ, args.typ.rsplit(":", 1)[-1].lower())
            id_ = f"{prefix}-{serial:017x}"
            state = {**args.inputs, **self.computed(args, id_, serial)}
            self.resources.append(
                RecordedResource(
                    type=args.typ,
                    name=args.name,
                    id=id_,
                    inputs=dict(args.inputs),
                    state=state,
                    parent=getattr(self.pending_parent, "urn", ""),
                    provider=args.provider or None,
                    custom=bool(args.custom),
                    dependencies=tuple(getattr(self.pending_parent, "dependencies", ())),
                )
            )
        return id_, state

    # -- helpers ---------------------------------------------------------------------------

    def _region(self, args: MockResourceArgs) -> str:
        provider_id = (args.provider or "").rsplit("::", 1)[-1]
        return self._alloc.regions.get(provider_id, "us-east-1")

    def _instance_addresses(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        subnet_id = str(inputs.get("subnetId", ""))
        network, zone = self._alloc.subnets.get(
            subnet_id, (ipaddress.IPv4Network("172.31.0.0/20"), "")
        )
        index = self._alloc.hosts_per_subnet.get(subnet_id, 0)
        self._alloc.hosts_per_subnet[subnet_id] = index + 1
        # AWS keeps the first four addresses of a subnet.
        addresses: dict[str, Any] = {
            "privateIp": str(network.network_address + 4 + index),
            "availabilityZone": zone,
        }
        if inputs.get("associatePublicIpAddress"):
            addresses["publicIp"] = str(_PUBLIC_POOL.network_address + 10 + self._alloc.public)
            self._alloc.public += 1
        return addresses


class RecordingMonitor(MockMonitor):
    """A mock monitor that tells the mocks each registration's parent URN and dependencies.

    MockResourceArgs carries neither; the monitor sees them on the request.
    """

    def __init__(self, mocks: KubesmithMocks) -> None:
        super().__init__(mocks)
        self._recorder = mocks

    def RegisterResource(self, request: Any) -> Any:
        pending = self._recorder.pending_parent
        pending.urn, pending.dependencies = request.parent, tuple(request.dependencies)
        try:
            return super().RegisterResource(request)
        finally:
            pending.urn, pending.dependencies = "", ()


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` mapping of the repository's Pulumi.<stack>.yaml."""
    return read_stack_config(stack, REPO)


def _config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    # The engine hands the program every value as a string; objects as JSON.
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run_program(
    stack: str,
    config: Mapping[str, Any] | None = None,
    *,
    program: Callable[[], None] = mock_program,
    mocks: KubesmithMocks | None = None,
    project: str = "kubesmith",
    monitor: RecordingMonitor | None = None,
) -> ProgramRun:
    """Run ``program`` as stack ``stack`` under mocks; raise ProgramFailed if it raises.

    ``config`` defaults to the repository's Pulumi.<stack>.yaml.
    """
    config = stack_config(stack) if config is None else config
    recorder = mocks or KubesmithMocks()
    monitor = monitor or RecordingMonitor(recorder)
    return contextvars.copy_context().run(
        _run_isolated, stack, config, program, recorder, monitor, project
    )


def _run_isolated(
    stack: str,
    config: Mapping[str, Any],
    program: Callable[[], None],
    mocks: KubesmithMocks,
    monitor: RecordingMonitor,
    project: str,
) -> ProgramRun:
    handler = _ListHandler()
    logger = logging.getLogger(f"{__name__}.{stack}.{id(mocks)}")
    logger.propagate = False
    logger.addHandler(handler)
    # A fresh root stack for this run (set_mocks creates one only when there is none).
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks,
        project=project,
        stack=stack,
        preview=False,
        logger=logger,
        monitor=monitor,
    )
    pulumi.runtime.set_all_config(_config_strings(config))
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def body() -> pulumi.Output[None]:
        program()
        root = cast(Stack, settings.get_root_resource())
        return pulumi.Output.from_input(root.outputs).apply(outputs.update)

    try:
        body()
    except Exception as exc:
        raise ProgramFailed(exc, handler.messages) from exc
    finally:
        logger.removeHandler(handler)
    return ProgramRun(list(mocks.resources), list(mocks.calls), outputs, handler.messages)
