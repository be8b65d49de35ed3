"""The Kubernetes API load balancer for HA clusters: an internet-facing NLB on TCP 6443 in
front of every control plane.

The NLB has its own security group, so it is no more open than the nodes: 6443 from
`adminCidrs` and from the nodes' own public addresses (kubelets and kube-proxy reach the API
through the same endpoint, and traffic to an internet-facing NLB leaves the VPC, so it arrives
from the node's public address). Client IP preservation is off: the control planes see the
NLB as the source, which lets the node group admit the NLB's group alone, and lets a control
plane reach the API through the NLB even when the NLB picks that same control plane (with the
client address preserved, such hairpinned connections fail).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from kubesmith.program.backends.aws.network import API_PORT
from kubesmith.program.backends.aws.tags import resource_tags

#: AWS limits load balancer and target group names to 32 characters.
_AWS_LB_NAME_MAX = 32
#: Default AWS quota of inbound rules per security group (adjustable in Service Quotas).
DEFAULT_RULES_PER_GROUP = 60


def lb_name(cluster: str) -> str:
    """`<cluster>-api`, with the cluster part shortened to fit AWS's 32 characters."""
    suffix = "-api"
    return cluster[: _AWS_LB_NAME_MAX - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True)
class ApiLoadBalancerArgs:
    cluster: str
    stack: str
    vpc_id: pulumi.Input[str]
    #: One per availability zone; the NLB gets a node in each.
    subnet_ids: Sequence[pulumi.Input[str]]
    node_security_group_id: pulumi.Input[str]
    admin_cidrs: tuple[str, ...]
    #: EC2 instance ids of the control planes (the targets).
    control_plane_ids: Sequence[pulumi.Input[str]]
    #: Public IPv4 address of every node by node name, admitted to 6443 as a /32 each.
    node_public_ips: Mapping[str, pulumi.Input[str]]

    def __post_init__(self) -> None:
        if len(self.control_plane_ids) < 2:
            raise ValueError("an API load balancer only makes sense with 2+ control planes")
        if not self.subnet_ids:
            raise ValueError("ApiLoadBalancerArgs.subnet_ids must not be empty")
        if not self.admin_cidrs:
            raise ValueError("ApiLoadBalancerArgs.admin_cidrs must hold at least one range")
        for cidr in self.admin_cidrs:
            ipaddress.IPv4Network(cidr)

    @property
    def ingress_rule_count(self) -> int:
        return len(self.admin_cidrs) + len(self.node_public_ips)


class ApiLoadBalancer(pulumi.ComponentResource):
    dns_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ApiLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubesmith:aws:ApiLoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = resource_tags(args.cluster, args.stack, lb_name(args.cluster))

        if args.ingress_rule_count > DEFAULT_RULES_PER_GROUP:
            pulumi.log.warn(
                f"the API load balancer's security group needs {args.ingress_rule_count} "
                f"inbound rules; the default AWS quota is {DEFAULT_RULES_PER_GROUP} per group: "
                "raise 'Inbound or outbound rules per security group' before `up`",
                resource=self,
            )

        group = aws.ec2.SecurityGroup(
            f"{name}-lb",
            vpc_id=args.vpc_id,
            description=f"kubesmith {args.cluster} API load balancer",
            tags={**tags, "Name": f"{args.cluster}-api-lb"},
            opts=child,
        )
        for cidr in args.admin_cidrs:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-from-{cidr.replace('/', '-')}",
                security_group_id=group.id,
                description=f"api from admin range {cidr}",
                ip_protocol="tcp",
                from_port=API_PORT,
                to_port=API_PORT,
                cidr_ipv4=cidr,
                opts=child,
            )
        for node, address in args.node_public_ips.items():
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-from-{node}",
                security_group_id=group.id,
                description=f"api from node {node}'s public address",
                ip_protocol="tcp",
                from_port=API_PORT,
                to_port=API_PORT,
                cidr_ipv4=pulumi.Output.from_input(address).apply(lambda ip: f"{ip}/32"),
                opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-to-control-planes",
            security_group_id=group.id,
            description="api to the control planes",
            ip_protocol="tcp",
            from_port=API_PORT,
            to_port=API_PORT,
            referenced_security_group_id=args.node_security_group_id,
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-to-nodes",
            security_group_id=args.node_security_group_id,
            description="api (and health checks) from the API load balancer",
            ip_protocol="tcp",
            from_port=API_PORT,
            to_port=API_PORT,
            referenced_security_group_id=group.id,
            opts=child,
        )

        # Explicit AWS names (readable, but fixed): replacing one must delete the old first.
        named = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        balancer = aws.lb.LoadBalancer(
            f"{name}-nlb",
            name=lb_name(args.cluster),
            load_balancer_type="network",
            internal=False,
            subnets=list(args.subnet_ids),
            security_groups=[group.id],
            # A zone whose control plane is down still forwards to the others.
            enable_cross_zone_load_balancing=True,
            tags=tags,
            opts=named,
        )
        targets = aws.lb.TargetGroup(
            f"{name}-control-planes",
            name=lb_name(args.cluster),
            port=API_PORT,
            protocol="TCP",
            target_type="instance",
            vpc_id=args.vpc_id,
            preserve_client_ip="false",
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                # /readyz is readable without credentials and fails while etcd is unreachable.
                protocol="HTTPS",
                port="traffic-port",
                path="/readyz",
                matcher="200",
                interval=10,
                healthy_threshold=2,
                unhealthy_threshold=2,
            ),
            tags=tags,
            opts=named,
        )
        aws.lb.Listener(
            f"{name}-listener",
            load_balancer_arn=balancer.arn,
            port=API_PORT,
            protocol="TCP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=targets.arn)
            ],
            tags=tags,
            opts=child,
        )
        for index, instance_id in enumerate(args.control_plane_ids, start=1):
            aws.lb.TargetGroupAttachment(
                f"{name}-cp-{index}",
                target_group_arn=targets.arn,
                target_id=instance_id,
                port=API_PORT,
                opts=child,
            )

        self.dns_name = balancer.dns_name
        self.register_outputs({"dnsName": balancer.dns_name})
