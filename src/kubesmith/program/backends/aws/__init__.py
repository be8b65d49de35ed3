"""The AWS backend: a VPC with a public subnet per zone, Debian 12 EC2 nodes, and an NLB in
front of the API when the cluster has more than one control plane.

`create_node_pool` is the backend contract (see kubesmith.program.backends); the components live in
network.py, pool.py and load_balancer.py. Verified under Pulumi mocks only: `pulumi up` cannot
run on the development machines (docs/aws.md).
"""

from __future__ import annotations

import pulumi

from kubesmith.errors import ConfigError
from kubesmith.program.backends import NodePoolRequest
from kubesmith.program.backends.aws.network import NetworkArgs
from kubesmith.program.backends.aws.pool import AwsNodePool, NodePoolArgs, SubnetTooSmallError
from kubesmith.spec import CONFIG_KEY

__all__ = ["AwsNodePool", "create_node_pool"]


def create_node_pool(
    request: NodePoolRequest, opts: pulumi.ResourceOptions | None = None
) -> AwsNodePool:
    spec = request.spec
    if spec.aws is None:
        raise ConfigError([f"{CONFIG_KEY}.aws: is required when backend is 'aws'"])
    aws_spec = spec.aws
    network = NetworkArgs(
        cluster=spec.name,
        stack=request.stack,
        vpc_cidr=aws_spec.vpc_cidr,
        availability_zones=tuple(aws_spec.availability_zones),
        admin_cidrs=tuple(aws_spec.admin_cidrs),
    )
    try:
        args = NodePoolArgs(
            cluster=spec.name,
            stack=request.stack,
            region=aws_spec.region,
            network=network,
            control_planes=spec.control_planes,
            workers=spec.workers,
            control_plane_instance_type=aws_spec.control_plane_instance_type,
            worker_instance_type=aws_spec.worker_instance_type,
            root_volume_gib=aws_spec.root_volume_gib,
            ssh_user=aws_spec.ssh_user,
            ssh_public_key=request.ssh_public_key,
        )
    except SubnetTooSmallError as exc:
        raise ConfigError([f"{CONFIG_KEY}.aws.vpcCidr: {aws_spec.vpc_cidr}: {exc}"]) from None
    return AwsNodePool(spec.name, args, opts)
