"""The cluster's network: one VPC, a public subnet per availability zone, and the node
security group.

Security defaults: cluster members reach each other on every port (the group references
itself); SSH (22) and the Kubernetes API (6443) are reachable only from `adminCidrs`; nothing
else is open on ingress. Egress is open so nodes can fetch packages and images.

Pod traffic crosses the VPC with pod addresses (podCidr) as source and destination, not the
node's own address. EC2 drops such packets unless the instance's source/destination check is
off, which is why every node is created with ``source_dest_check=False`` (see pool.py). Within
one subnet the per-node pod routes the CNI role installs on each host then work as on a LAN;
between zones the next hop is not on-link, so each node's pod range is also an entry in this
network's route table (`route_table_id`, see pod_routes.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import islice

import pulumi
import pulumi_aws as aws

from kubesmith.program.backends.aws.tags import resource_tags

#: Every VPC is cut into 16 equal slots (a /16 gives /20s), one per zone in order, so adding a
#: zone later appends a subnet and never moves an existing one.
_SLOT_BITS = 4
#: AWS refuses subnets smaller than /28.
_SMALLEST_SUBNET = 28
#: AWS keeps the first four addresses and the last one of every subnet.
AWS_RESERVED_ADDRESSES = 5

ANYWHERE = "0.0.0.0/0"
SSH_PORT = 22
API_PORT = 6443


def zone_subnets(vpc: ipaddress.IPv4Network, zones: int) -> list[ipaddress.IPv4Network]:
    """The subnet of each zone, in zone order: the first ``zones`` of the VPC's 16 slots."""
    prefix = min(vpc.prefixlen + _SLOT_BITS, _SMALLEST_SUBNET)
    subnets = list(islice(vpc.subnets(new_prefix=prefix), zones))
    if len(subnets) < zones:
        raise ValueError(f"VPC {vpc} has room for {len(subnets)} zone subnets, not {zones}")
    return subnets


def usable_addresses(subnet: ipaddress.IPv4Network) -> int:
    return subnet.num_addresses - AWS_RESERVED_ADDRESSES


def _rule_name(cidr: str) -> str:
    # Named after the range, not its list position: reordering adminCidrs replaces nothing.
    return cidr.replace("/", "-")


@dataclass(frozen=True)
class NetworkArgs:
    cluster: str
    stack: str
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    admin_cidrs: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.cluster:
            raise ValueError("NetworkArgs.cluster must not be empty")
        vpc = ipaddress.IPv4Network(self.vpc_cidr)
        if not self.availability_zones:
            raise ValueError("NetworkArgs.availability_zones must name at least one zone")
        if len(set(self.availability_zones)) != len(self.availability_zones):
            raise ValueError(f"availability zones repeat: {list(self.availability_zones)}")
        zone_subnets(vpc, len(self.availability_zones))
        if not self.admin_cidrs:
            raise ValueError("NetworkArgs.admin_cidrs must hold at least one range")
        for cidr in self.admin_cidrs:
            ipaddress.IPv4Network(cidr)

    @property
    def subnet_cidrs(self) -> list[ipaddress.IPv4Network]:
        return zone_subnets(ipaddress.IPv4Network(self.vpc_cidr), len(self.availability_zones))


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    #: One subnet per availability zone, in the order of `availability_zones`.
    subnet_ids: list[pulumi.Output[str]]
    #: The one route table every zone subnet is associated with.
    route_table_id: pulumi.Output[str]
    node_security_group_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubesmith:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def tags(suffix: str) -> dict[str, str]:
            return resource_tags(args.cluster, args.stack, f"{args.cluster}-{suffix}")

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            # Nodes get resolvable names; some tools (and kubelet's defaults) expect them.
            enable_dns_hostnames=True,
            tags=tags("vpc"),
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=tags("igw"), opts=child
        )
        routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, tags=tags("public"), opts=child
        )
        aws.ec2.Route(
            f"{name}-default-route",
            route_table_id=routes.id,
            destination_cidr_block=ANYWHERE,
            gateway_id=gateway.id,
            opts=child,
        )

        self.subnet_ids = []
        for zone, zone_cidr in zip(args.availability_zones, args.subnet_cidrs, strict=True):
            subnet = aws.ec2.Subnet(
                f"{name}-{zone}",
                vpc_id=vpc.id,
                cidr_block=str(zone_cidr),
                availability_zone=zone,
                # Public addresses are asked for per instance; nothing else here gets one.
                map_public_ip_on_launch=False,
                tags=tags(zone),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-{zone}-public",
                subnet_id=subnet.id,
                route_table_id=routes.id,
                opts=child,
            )
            self.subnet_ids.append(subnet.id)

        nodes = aws.ec2.SecurityGroup(
            f"{name}-nodes",
            vpc_id=vpc.id,
            description=f"kubesmith {args.cluster} nodes",
            tags=tags("nodes"),
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-nodes-from-members",
            security_group_id=nodes.id,
            description="every port between cluster members (etcd, kubelet, pod traffic)",
            ip_protocol="-1",
            referenced_security_group_id=nodes.id,
            opts=child,
        )
        for cidr in args.admin_cidrs:
            for port, purpose in ((SSH_PORT, "ssh"), (API_PORT, "api")):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{purpose}-from-{_rule_name(cidr)}",
                    security_group_id=nodes.id,
                    description=f"{purpose} from admin range {cidr}",
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_ipv4=cidr,
                    opts=child,
                )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-nodes-egress",
            security_group_id=nodes.id,
            description="packages, images and AWS APIs",
            ip_protocol="-1",
            cidr_ipv4=ANYWHERE,
            opts=child,
        )

        self.vpc_id = vpc.id
        self.route_table_id = routes.id
        self.node_security_group_id = nodes.id
        self.register_outputs(
            {
                "vpcId": vpc.id,
                "subnetIds": self.subnet_ids,
                "routeTableId": routes.id,
                "nodeSecurityGroupId": nodes.id,
            }
        )
