"""NetworkPolicy that nothing enforces: the warning `config check` and `pulumi up` give.

The API server stores NetworkPolicy objects whatever the pod network; only an agent on the
nodes makes them filter traffic. kubesmith's pod networks (the bridge CNI and flannel) enforce
none, so an app that renders a NetworkPolicy on a cluster without
``kubesmith:cluster.cni.networkPolicy`` set believes in a wall that is not there. The check
reads the rendered objects, not the values that produced them: whatever template or value
turns a policy on, the object is what counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubesmith.spec import CONFIG_KEY, ClusterSpec

NETWORK_POLICY_KEY = f"{CONFIG_KEY}.cni.networkPolicy"


def unenforced_policies(
    spec: ClusterSpec, stack: str, rendered: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[str]:
    """One line per app of ``rendered`` whose NetworkPolicy no agent of ``spec`` enforces."""
    if spec.cni.enforces_network_policy:
        return []
    warnings = []
    for app, objects in rendered.items():
        names = sorted(o["metadata"]["name"] for o in objects if o.get("kind") == "NetworkPolicy")
        if names:
            warnings.append(
                f"Pulumi.{stack}.yaml: app {app} enables NetworkPolicy {', '.join(names)}, but "
                f"nothing on this cluster enforces it ({NETWORK_POLICY_KEY} is none, pod "
                f"network {spec.cni.plugin}): all traffic to the app is allowed; set "
                f"{NETWORK_POLICY_KEY}: kube-router to enforce it"
            )
    return warnings
