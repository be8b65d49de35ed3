"""Tags on every AWS resource kubesmith creates, so a console or `aws ec2 describe-*` filter
finds a cluster's resources, and stray ones can be traced back to their stack."""

from __future__ import annotations

CLUSTER_TAG = "kubesmith.io/cluster"
STACK_TAG = "kubesmith.io/stack"
ROLE_TAG = "kubesmith.io/role"


def resource_tags(cluster: str, stack: str, name: str, role: str | None = None) -> dict[str, str]:
    tags = {"Name": name, CLUSTER_TAG: cluster, STACK_TAG: stack}
    if role is not None:
        tags[ROLE_TAG] = role
    return tags
