"""VPC routes to the nodes' pod ranges: the hard way's pod network across availability zones.

Every node owns a /24 of podCidr (kubesmith.state.podcidr). Inside one subnet the routes
the cni role installs on each host reach the other nodes' ranges; between zones the next hop
is not on-link, so the VPC itself must route each range: one route per node, destination the
node's pod range, target the node's primary network interface (whose source/destination
check is off, see pool.py). All zone subnets share the network's one route table
(network.py), so one route per node serves every zone.

The ranges come from the Provisioning resource's `pod_cidrs` output, the allocation the run
used, so a route never names a range its node does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import pulumi
import pulumi_aws as aws

from kubesmith.errors import KubesmithError

#: Default AWS quota of routes per route table (raised from 50 to 500 in June 2025;
#: adjustable to 1,000 in Service Quotas as "Routes per route table").
DEFAULT_ROUTES_PER_TABLE = 500
#: Routes the table holds besides the pod routes: the default route to the internet gateway.
OTHER_ROUTES = 1


def route_name(node: str) -> str:
    """Named after the node, so adding or removing a node touches only its own route."""
    return f"{node}-pods"


def pod_range(pod_cidrs: Mapping[str, str], node: str) -> str:
    """``node``'s range in the provisioning output; an error naming the node when it has none."""
    try:
        return pod_cidrs[node]
    except KeyError:
        known = ", ".join(sorted(pod_cidrs)) or "none"
        raise KubesmithError(
            f"provisioning reported no pod range for node {node} (it reported: {known})"
        ) from None


def quota_warning(nodes: int) -> str | None:
    """The warning to give when ``nodes`` pod routes overflow the default route quota."""
    needed = nodes + OTHER_ROUTES
    if needed <= DEFAULT_ROUTES_PER_TABLE:
        return None
    return (
        f"the VPC route table needs {needed} routes ({nodes} pod routes and the default route); "
        f"the default AWS quota is {DEFAULT_ROUTES_PER_TABLE} per table: raise 'Routes per "
        "route table' before `up`"
    )


def route_pod_ranges(
    route_table_id: pulumi.Input[str],
    interfaces: Mapping[str, pulumi.Input[str]],
    pod_cidrs: pulumi.Output[dict[str, str]],
    opts: pulumi.ResourceOptions,
) -> list[aws.ec2.Route]:
    """One route per node of ``interfaces`` (node name -> primary network interface id)."""
    warning = quota_warning(len(interfaces))
    if warning is not None:
        pulumi.log.warn(warning, resource=opts.parent)
    return [
        aws.ec2.Route(
            route_name(node),
            route_table_id=route_table_id,
            destination_cidr_block=pod_cidrs.apply(partial(pod_range, node=node)),
            network_interface_id=interface,
            opts=opts,
        )
        for node, interface in interfaces.items()
    ]
