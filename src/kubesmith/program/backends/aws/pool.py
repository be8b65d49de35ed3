"""The AWS node pool: EC2 instances for the control planes and workers, in the cluster's
network, behind an API load balancer when there is more than one control plane.

Every instance: the official Debian 12 AMI, IMDSv2 only (hop limit 1, so pods cannot borrow
the node's credentials), an encrypted gp3 root volume, source/destination check off (pod
traffic, see network.py), a public address for SSH from `adminCidrs`, the stack's SSH key for
the image's default user, and the node name as hostname and `Name` tag.

Once provisioning has allocated the nodes' pod ranges, the program asks the pool for the VPC
routes to them (`route_pod_ranges`, see pod_routes.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import yaml

from kubesmith.nodes import Node, Role, node_name
from kubesmith.program.backends.aws.load_balancer import ApiLoadBalancer, ApiLoadBalancerArgs
from kubesmith.program.backends.aws.network import Network, NetworkArgs, usable_addresses
from kubesmith.program.backends.aws.pod_routes import route_pod_ranges
from kubesmith.program.backends.aws.tags import resource_tags

#: Debian's own AWS account, which publishes the official Debian cloud images.
DEBIAN_AMI_OWNER = "136693071363"
DEBIAN_12_AMD64 = "debian-12-amd64-*"
#: The Debian 12 AMI's root volume is 8 GiB; a smaller volume cannot be created from it.
_MIN_ROOT_GIB = 8


class SubnetTooSmallError(ValueError):
    """The nodes placed in one zone do not fit that zone's subnet."""


@dataclass(frozen=True)
class Placement:
    name: str
    role: Role
    #: Index into the network's zones and subnets.
    zone: int
    instance_type: str


@dataclass(frozen=True)
class NodePoolArgs:
    cluster: str
    stack: str
    region: str
    network: NetworkArgs
    control_planes: int
    workers: int
    control_plane_instance_type: str
    worker_instance_type: str
    root_volume_gib: int
    ssh_user: str
    #: OpenSSH public key line for `ssh_user` on every node.
    ssh_public_key: str

    def __post_init__(self) -> None:
        if self.control_planes < 1 or self.workers < 0:
            raise ValueError(
                f"need 1+ control planes and 0+ workers, got {self.control_planes} and "
                f"{self.workers}"
            )
        if self.root_volume_gib < _MIN_ROOT_GIB:
            raise ValueError(f"root volume must be >= {_MIN_ROOT_GIB} GiB")
        if not self.ssh_user:
            raise ValueError("NodePoolArgs.ssh_user must not be empty")
        if len(self.ssh_public_key.split()) < 2:
            raise ValueError("NodePoolArgs.ssh_public_key must be an OpenSSH public key line")
        subnets = self.network.subnet_cidrs
        zones = len(subnets)
        per_zone = math.ceil(self.control_planes / zones) + math.ceil(self.workers / zones)
        if per_zone > usable_addresses(subnets[0]):
            raise SubnetTooSmallError(
                f"{per_zone} nodes per zone do not fit a /{subnets[0].prefixlen} zone subnet "
                f"({usable_addresses(subnets[0])} usable addresses); use a larger VPC range"
            )

    @property
    def placements(self) -> list[Placement]:
        """Control planes first, then workers; each role spread round-robin over the zones."""
        zones = len(self.network.availability_zones)
        placements = [
            Placement(
                node_name(self.cluster, "control_plane", i + 1),
                "control_plane",
                i % zones,
                self.control_plane_instance_type,
            )
            for i in range(self.control_planes)
        ]
        placements += [
            Placement(
                node_name(self.cluster, "worker", i + 1),
                "worker",
                i % zones,
                self.worker_instance_type,
            )
            for i in range(self.workers)
        ]
        return placements


def cloud_config(hostname: str) -> str:
    """User data naming the host after its node, as LXD nodes are, so node names match."""
    document = {"hostname": hostname, "preserve_hostname": False, "manage_etc_hosts": True}
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def _node_output(placement: Placement, ssh_user: str, instance: aws.ec2.Instance) -> Any:
    def shape(addresses: list[Any]) -> dict[str, Any]:
        private, public = addresses
        return Node(placement.name, placement.role, private, public or None, ssh_user).to_output()

    return pulumi.Output.all(instance.private_ip, instance.public_ip).apply(shape)


class AwsNodePool(pulumi.ComponentResource):
    nodes: pulumi.Output[list[dict[str, Any]]]
    api_load_balancer: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: NodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubesmith:aws:NodePool", name, None, opts)
        # The region comes from the cluster spec alone, never from ambient `aws:region`
        # config or AWS_REGION, so the zones in the spec always exist where nodes are made.
        provider = aws.Provider(
            f"{name}-aws", region=args.region, opts=pulumi.ResourceOptions(parent=self)
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        component = pulumi.ResourceOptions(parent=self, providers=[provider])

        network = Network(name, args.network, opts=component)
        key = aws.ec2.KeyPair(
            f"{name}-ssh",
            public_key=args.ssh_public_key,
            tags=resource_tags(args.cluster, args.stack, f"{args.cluster}-ssh"),
            opts=child,
        )
        image = aws.ec2.get_ami_output(
            owners=[DEBIAN_AMI_OWNER],
            most_recent=True,
            filters=[
                aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_12_AMD64]),
                aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
            ],
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider),
        )

        instances: dict[str, aws.ec2.Instance] = {}
        placements = args.placements
        for placement in placements:
            instances[placement.name] = aws.ec2.Instance(
                placement.name,
                ami=image.id,
                instance_type=placement.instance_type,
                subnet_id=network.subnet_ids[placement.zone],
                vpc_security_group_ids=[network.node_security_group_id],
                key_name=key.key_name,
                associate_public_ip_address=True,
                source_dest_check=False,
                metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                    http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
                ),
                root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                    volume_type="gp3",
                    volume_size=args.root_volume_gib,
                    encrypted=True,
                    delete_on_termination=True,
                ),
                user_data=cloud_config(placement.name),
                tags=resource_tags(args.cluster, args.stack, placement.name, placement.role),
                # `most_recent` finds a newer image every few weeks; that must not replace
                # running nodes. Nodes are patched in place; new nodes get the new image.
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(ignore_changes=["ami"])
                ),
            )

        self.nodes = pulumi.Output.all(
            *(_node_output(p, args.ssh_user, instances[p.name]) for p in placements)
        )
        self._provider = provider
        self._route_table_id = network.route_table_id
        self._instances = instances
        self.api_load_balancer = pulumi.Output.from_input(None)
        if args.control_planes > 1:
            balancer = ApiLoadBalancer(
                name,
                ApiLoadBalancerArgs(
                    cluster=args.cluster,
                    stack=args.stack,
                    vpc_id=network.vpc_id,
                    subnet_ids=network.subnet_ids,
                    node_security_group_id=network.node_security_group_id,
                    admin_cidrs=args.network.admin_cidrs,
                    control_plane_ids=[
                        instances[p.name].id for p in placements if p.role == "control_plane"
                    ],
                    node_public_ips={p.name: instances[p.name].public_ip for p in placements},
                ),
                opts=component,
            )
            self.api_load_balancer = balancer.dns_name
        self.register_outputs({"nodes": self.nodes, "apiLoadBalancer": self.api_load_balancer})

    def route_pod_ranges(
        self, pod_cidrs: pulumi.Output[dict[str, str]], opts: pulumi.ResourceOptions
    ) -> None:
        """A VPC route from each node's pod range to its instance (pod_routes.py).

        ``opts`` names the parent and what the routes wait for (provisioning); they use this
        pool's AWS provider, so they are made in the spec's region like every other resource.
        """
        route_pod_ranges(
            self._route_table_id,
            {name: node.primary_network_interface_id for name, node in self._instances.items()},
            pod_cidrs,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=self._provider)),
        )
