"""Prepare the LXD host for a stack: storage pool, bridge and the node profile.

Checks run before anything is created, so a refused run leaves LXD as it was. Objects that
exist already are adopted only when kubesmith created them (``user.kubesmith.managed``); a
network or profile of the same name that someone else made is an error, never overwritten.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from kubesmith.errors import UserError
from kubesmith.local.connection import DESCRIPTION, is_managed, labels
from kubesmith.local.daemon import BTRFS_TOOLS, has_tool, kernel_has_btrfs_on_loop
from kubesmith.spec import LxdSpec

#: Modules Kubernetes nodes need: overlayfs for containerd, bridge netfilter and iptables/
#: conntrack for kube-proxy and the CNI bridge. A container cannot load modules itself, so LXD
#: loads them on the host before it starts a node.
KUBERNETES_MODULES = (
    "overlay",
    "br_netfilter",
    "ip_tables",
    "ip6_tables",
    "iptable_nat",
    "iptable_filter",
    "nf_nat",
    "nf_conntrack",
    "xt_conntrack",
)

#: raw.lxc for nodes that run containers themselves:
#: - AppArmor unconfined: containerd and runc apply their own confinement inside the node;
#: - /proc and the cgroup hierarchies writable: kube-proxy sets conntrack sysctls and runc
#:   creates cgroups for pods (/sys stays read-only so systemd-networkd does not wait for udev);
#: - every device allowed and no capability dropped: runc creates device nodes for pods.
RAW_LXC = "\n".join(
    [
        "lxc.apparmor.profile=unconfined",
        "lxc.mount.auto=proc:rw cgroup:rw",
        "lxc.cgroup.devices.allow=a",
        "lxc.cap.drop=",
    ]
)


@dataclass(frozen=True)
class HostRoute:
    interface: str
    network: ipaddress.IPv4Network


def storage_driver() -> str:
    """btrfs on a loop file where the host allows it, else a plain directory.

    With btrfs a node starts from a snapshot of the image (well under a second); the dir
    driver unpacks the whole image for every node (seconds each, more on a busy disk).
    """
    if kernel_has_btrfs_on_loop() and all(has_tool(tool) for tool in BTRFS_TOOLS):
        return "btrfs"
    return "dir"


def profile_name(stack: str) -> str:
    return f"kubesmith-{stack}"


def gateway_interface(subnet: ipaddress.IPv4Network) -> str:
    """The bridge's own address: the first host of the subnet, as LXD wants it (A.B.C.1/24)."""
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


def parse_proc_route(text: str) -> list[HostRoute]:
    """Routes from /proc/net/route (hex, little-endian), default routes left out."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        interface, destination, mask = fields[0], fields[1], fields[7]
        address = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(destination), "little"))
        netmask = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(mask), "little"))
        network = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
        if network.prefixlen:
            routes.append(HostRoute(interface, network))
    return routes


def subnet_problems(
    wanted: ipaddress.IPv4Network,
    name: str,
    lxd_networks: Mapping[str, ipaddress.IPv4Network],
    host_routes: Iterable[HostRoute],
) -> list[str]:
    """Why ``wanted`` cannot be the bridge ``name``: overlaps with other LXD networks or routes."""
    problems = [
        f"lxd.subnet {wanted} overlaps LXD network {other!r} ({network}); "
        "pick another lxd.subnet or remove that network"
        for other, network in sorted(lxd_networks.items())
        if other != name and network.overlaps(wanted)
    ]
    problems += [
        f"lxd.subnet {wanted} overlaps the host route {route.network} on {route.interface}; "
        "pick another lxd.subnet"
        for route in host_routes
        # The bridges LXD manages are checked above, by their LXD name.
        if route.interface not in lxd_networks
        and route.interface != name
        and route.network.overlaps(wanted)
    ]
    return problems


def _module_index(modules_dir: Path) -> set[str]:
    names = set()
    for index in ("modules.dep", "modules.builtin"):
        path = modules_dir / index
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                file_name = line.split(":", 1)[0].rsplit("/", 1)[-1]
                names.add(file_name.split(".ko", 1)[0].replace("-", "_"))
    return names


def loadable_modules(
    wanted: Sequence[str],
    *,
    sys_module: Path = Path("/sys/module"),
    modules_dir: Path | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``wanted`` into modules LXD can load and those it cannot find.

    LXD skips a module already present under /sys/module and runs ``modprobe`` for the
    others, which fails (and so does the node's start) when the kernel has no module index:
    kernels with everything built in, like this VM's, list no /lib/modules at all.
    """
    modules_dir = modules_dir or Path("/lib/modules") / os.uname().release
    indexed = _module_index(modules_dir)
    loadable = [m for m in wanted if (sys_module / m).exists() or m in indexed]
    return loadable, [m for m in wanted if m not in loadable]


def profile_config(spec: LxdSpec, modules: Sequence[str]) -> dict[str, str]:
    config = {
        **labels(),
        # Kubernetes nodes need real root: mounts, iptables, cgroups and device nodes for pods.
        "security.privileged": "true",
        "security.nesting": "true",
        "limits.cpu": str(spec.cpu),
        "limits.memory": spec.memory,
        "raw.lxc": RAW_LXC,
    }
    if modules:
        config["linux.kernel_modules"] = ",".join(modules)
    return config


def profile_devices(spec: LxdSpec) -> dict[str, dict[str, str]]:
    return {
        "root": {"type": "disk", "path": "/", "pool": spec.storage_pool},
        "eth0": {"type": "nic", "name": "eth0", "network": spec.network},
        # kubelet's OOM watcher reads the kernel log.
        "kmsg": {"type": "unix-char", "source": "/dev/kmsg", "path": "/dev/kmsg"},
    }


def _ipv4_network(config: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
    address = str(config.get("ipv4.address") or "")
    if address in ("", "none", "auto"):
        return None
    return ipaddress.IPv4Interface(address).network


def lxd_networks(client: pylxd.Client) -> dict[str, ipaddress.IPv4Network]:
    """The IPv4 subnets of the networks LXD manages, by name."""
    found = {}
    for network in client.networks.all():
        if network.managed:
            subnet = _ipv4_network(network.config)
            if subnet is not None:
                found[network.name] = subnet
    return found


def host_routes() -> list[HostRoute]:
    """This machine's routes (a bridge LXD manages shows up here as well)."""
    path = Path("/proc/net/route")
    return parse_proc_route(path.read_text(encoding="utf-8")) if path.exists() else []


def _check_network(client: pylxd.Client, spec: LxdSpec) -> bool:
    """True when the bridge exists already (and is ours, with the right subnet)."""
    wanted = spec.subnet_network
    problems = []
    exists = bool(client.networks.exists(spec.network))
    if exists:
        network = client.networks.get(spec.network)
        if not network.managed or not is_managed(network.config):
            problems.append(
                f"lxd.network: LXD network {spec.network!r} exists and was not created by "
                "kubesmith; set lxd.network to another name"
            )
        elif _ipv4_network(network.config) != wanted:
            problems.append(
                f"lxd.subnet: kubesmith's network {spec.network!r} serves "
                f"{_ipv4_network(network.config)}, not {wanted}; set lxd.subnet back or "
                f"remove the network (lxc network delete {spec.network}) once no node uses it"
            )
    problems += subnet_problems(wanted, spec.network, lxd_networks(client), host_routes())
    if problems:
        raise UserError("; ".join(problems))
    return exists


def _check_profile(client: pylxd.Client, name: str) -> bool:
    try:
        profile = client.profiles.get(name)
    except NotFound:
        return False
    if not is_managed(profile.config):
        raise UserError(
            f"LXD profile {name!r} exists and was not created by kubesmith; "
            "rename or remove it (kubesmith never changes profiles it did not create)"
        )
    return True


def init_host(client: pylxd.Client, stack: str, spec: LxdSpec) -> list[str]:
    """Create or adopt the pool, bridge and node profile of ``stack``; returns what it did."""
    network_exists = _check_network(client, spec)
    profile = profile_name(stack)
    profile_exists = _check_profile(client, profile)
    report = []

    if not client.storage_pools.exists(spec.storage_pool):
        driver = storage_driver()
        client.storage_pools.create(
            {
                "name": spec.storage_pool,
                "driver": driver,
                "description": DESCRIPTION,
                "config": labels(),
            }
        )
        report.append(f"created storage pool {spec.storage_pool} ({driver})")
    else:
        pool = client.storage_pools.get(spec.storage_pool)
        # Instances only add volumes to a pool; the pool itself is never changed.
        owner = "ok" if is_managed(pool.config) else "not kubesmith's, used as is"
        report.append(f"storage pool {spec.storage_pool} ({pool.driver}): {owner}")

    if not network_exists:
        client.networks.create(
            spec.network,
            description=DESCRIPTION,
            type="bridge",
            config={
                **labels(),
                "ipv4.address": gateway_interface(spec.subnet_network),
                "ipv4.nat": "true",
                "ipv6.address": "none",
            },
        )
        report.append(f"created network {spec.network} ({spec.subnet}, NAT)")
    else:
        report.append(f"network {spec.network} ({spec.subnet}): ok")

    modules, unloadable = loadable_modules(KUBERNETES_MODULES)
    config = profile_config(spec, modules)
    devices = profile_devices(spec)
    if not profile_exists:
        client.profiles.create(
            profile, config=config, devices=devices, description=f"{DESCRIPTION}: nodes of {stack}"
        )
        report.append(f"created profile {profile}")
    else:
        current = client.profiles.get(profile)
        if current.config != config or current.devices != devices:
            current.config = config
            current.devices = devices
            current.save(wait=True)
            report.append(f"updated profile {profile}")
        else:
            report.append(f"profile {profile}: ok")
    if unloadable:
        report.append(
            "kernel modules not requested from LXD (built in or absent on this kernel): "
            + ", ".join(unloadable)
        )
    return report
