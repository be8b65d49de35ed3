"""Read-only mounts of the controller's verified Kubernetes binaries into LXD nodes.

An LXD node runs on the controller's machine, so the binaries the controller verified need
not be copied to it over SSH: an LXD ``disk`` device shows exactly that one directory (the
unpacked binaries of one release, kubesmith.downloads.kube_binaries.bin_dir; never the cache,
the state directory or the PKI) read-only inside the node, and the release role installs
from it. Containers take the device while running. A device already there as wanted is left
alone, so re-runs change nothing; a mount of another release (left by an upgrade) is removed,
since the binaries were installed from it and nothing reads it any more. Only kubesmith's own
instances and devices are touched.
"""

from __future__ import annotations

from collections.abc import Sequence

from pylxd.exceptions import LXDAPIException, NotFound

from kubesmith.errors import KubesmithError
from kubesmith.local.connection import connect, is_managed
from kubesmith.local.instances import in_parallel
from kubesmith.provision.kubernetes import MOUNT_DEVICE_PREFIX, Attach, Mount
from kubesmith.spec import ClusterSpec


def device(mount: Mount) -> dict[str, str]:
    """The LXD device that shows ``mount.source`` at ``mount.path``, read-only. Not
    required: a node still starts after the controller's cache was removed (the release role
    then copies over SSH)."""
    return {
        "type": "disk",
        "source": str(mount.source),
        "path": mount.path,
        "readonly": "true",
        "required": "false",
    }


def attach(mounts: Sequence[Mount]) -> None:
    """Give every node its mounts (all nodes at once; every failure is named)."""
    by_host: dict[str, list[Mount]] = {}
    for mount in mounts:
        by_host.setdefault(mount.host, []).append(mount)
    in_parallel(sorted(by_host.items()), _attach_to)


def _attach_to(host_mounts: tuple[str, list[Mount]]) -> None:
    host, mounts = host_mounts
    try:
        instance = connect().instances.get(host)
    except NotFound:
        raise KubesmithError(
            f"{host}: no LXD instance of that name to mount the binaries in"
        ) from None
    if not is_managed(instance.config):
        raise KubesmithError(f"{host}: the LXD instance is not kubesmith's; no mount added")
    wanted = {m.name: device(m) for m in mounts}
    stale = [n for n in instance.devices if n.startswith(MOUNT_DEVICE_PREFIX) and n not in wanted]
    if not stale and all(instance.devices.get(name) == dev for name, dev in wanted.items()):
        return
    for name in stale:
        del instance.devices[name]
    instance.devices.update(wanted)
    try:
        instance.save(wait=True)
    except LXDAPIException as exc:
        reason = str(exc).splitlines()[0]
        raise KubesmithError(f"{host}: cannot mount the verified binaries: {reason}") from None


def attach_for(spec: ClusterSpec) -> Attach | None:
    """How nodes of ``spec``'s backend get mounts: LXD instances do, others have none."""
    return attach if spec.backend == "lxd" else None
