"""LXD host setup logic that needs no daemon: subnet checks, kernel modules, the profile."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kubesmith.local import daemon
from kubesmith.local.daemon import raise_kernel_limits
from kubesmith.local.host import (
    KUBERNETES_MODULES,
    HostRoute,
    gateway_interface,
    loadable_modules,
    parse_proc_route,
    profile_config,
    profile_devices,
    subnet_problems,
)
from kubesmith.progress import Reporter
from kubesmith.spec import LxdSpec

Net = ipaddress.IPv4Network

# /proc/net/route as this VM shows it (little-endian hex; the first route is the default).
PROC_ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "kubesmith0\t0000CB0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
)


def test_proc_route_is_decoded_without_the_default_route() -> None:
    assert parse_proc_route(PROC_ROUTE) == [
        HostRoute("kubesmith0", Net("10.203.0.0/24")),
        HostRoute("eth0", Net("192.0.2.0/24")),
    ]


def test_the_bridge_gets_the_first_address_of_the_subnet() -> None:
    assert gateway_interface(Net("10.203.0.0/24")) == "10.203.0.1/24"


def test_overlapping_lxd_network_is_named_with_both_ranges() -> None:
    problems = subnet_problems(
        Net("10.203.0.0/24"),
        "kubesmith0",
        {"kubesmith0": Net("10.203.0.0/24"), "lxdbr0": Net("10.203.0.0/16")},
        [],
    )
    assert problems == [
        "lxd.subnet 10.203.0.0/24 overlaps LXD network 'lxdbr0' (10.203.0.0/16); "
        "pick another lxd.subnet or remove that network"
    ]


def test_overlapping_host_route_is_reported_but_lxd_bridges_only_once() -> None:
    routes = parse_proc_route(PROC_ROUTE)
    assert (
        subnet_problems(
            Net("10.203.0.0/24"), "kubesmith0", {"kubesmith0": Net("10.203.0.0/24")}, routes
        )
        == []
    )
    problems = subnet_problems(Net("192.0.2.128/25"), "kubesmith0", {}, routes)
    assert problems == [
        "lxd.subnet 192.0.2.128/25 overlaps the host route 192.0.2.0/24 on eth0; "
        "pick another lxd.subnet"
    ]


def test_only_modules_lxd_can_find_are_requested(tmp_path: Path) -> None:
    sys_module = tmp_path / "sys-module"
    (sys_module / "overlay").mkdir(parents=True)
    modules_dir = tmp_path / "lib-modules"
    modules_dir.mkdir()
    (modules_dir / "modules.dep").write_text(
        "kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n",
        encoding="utf-8",
    )
    (modules_dir / "modules.builtin").write_text(
        "kernel/net/netfilter/nf_conntrack.ko\n", encoding="utf-8"
    )
    loadable, missing = loadable_modules(
        ["overlay", "br_netfilter", "nf_conntrack", "ip_tables"],
        sys_module=sys_module,
        modules_dir=modules_dir,
    )
    assert loadable == ["overlay", "br_netfilter", "nf_conntrack"]
    assert missing == ["ip_tables"]


def test_a_kernel_without_a_module_index_loads_only_what_is_there(tmp_path: Path) -> None:
    """This VM: everything built in, no /lib/modules; asking LXD for more would fail starts."""
    (tmp_path / "overlay").mkdir()
    loadable, missing = loadable_modules(
        KUBERNETES_MODULES, sys_module=tmp_path, modules_dir=tmp_path / "absent"
    )
    assert loadable == ["overlay"]
    assert len(missing) == len(KUBERNETES_MODULES) - 1


def test_profile_makes_nodes_able_to_run_kubernetes() -> None:
    lxd = LxdSpec(cpu=3, memory="3GiB", network="br1", storage_pool="pool1")
    config = profile_config(lxd, ["overlay", "br_netfilter"])
    assert config["security.privileged"] == "true"
    assert config["security.nesting"] == "true"
    assert config["user.kubesmith.managed"] == "true"
    assert (config["limits.cpu"], config["limits.memory"]) == ("3", "3GiB")
    assert config["linux.kernel_modules"] == "overlay,br_netfilter"
    raw = config["raw.lxc"].splitlines()
    assert "lxc.mount.auto=proc:rw cgroup:rw" in raw
    # /sys read-write would make systemd-networkd wait for udev forever: no address.
    assert not any("sys:rw" in line for line in raw)
    devices = profile_devices(lxd)
    assert devices["eth0"] == {"type": "nic", "name": "eth0", "network": "br1"}
    assert devices["root"]["pool"] == "pool1"
    assert devices["kmsg"]["source"] == "/dev/kmsg"


def test_no_kernel_modules_key_when_none_can_be_loaded() -> None:
    assert "linux.kernel_modules" not in profile_config(LxdSpec(), [])


def test_low_inotify_limits_are_raised_and_high_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "fs" / "inotify").mkdir(parents=True)
    instances = tmp_path / "fs" / "inotify" / "max_user_instances"
    watches = tmp_path / "fs" / "inotify" / "max_user_watches"
    instances.write_text("128\n", encoding="utf-8")
    watches.write_text("4194304\n", encoding="utf-8")

    changed = raise_kernel_limits(tmp_path)

    assert changed == ["raised fs.inotify.max_user_instances from 128 to 1048576"]
    assert instances.read_text(encoding="utf-8").strip() == "1048576"
    assert watches.read_text(encoding="utf-8").strip() == "4194304"
    assert raise_kernel_limits(tmp_path) == []


def test_installing_the_host_packages_is_reported_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`lxd init` on a fresh machine runs apt for a minute: each command is a reported step
    (the console reporter keeps a line coming while a step runs), in the order they run."""
    seen: list[str] = []

    class Recorder(Reporter):
        def phase(self, name: str, step: int | None = None, steps: int | None = None) -> None:
            seen.append(f"[{step}/{steps}] {name}")

    monkeypatch.setattr(daemon, "missing_packages", lambda: ["iptables", "lxd"])
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 0)
    monkeypatch.setattr(daemon.shutil, "which", lambda *_a, **_k: "/usr/bin/apt-get")
    monkeypatch.setattr(daemon, "_run", lambda command, _what: seen.append(" ".join(command)))

    assert daemon.ensure_packages(Recorder()) == ["iptables", "lxd"]
    assert seen == [
        "[1/2] apt-get update",
        "apt-get update",
        "[2/2] apt-get install iptables lxd",
        "apt-get install -y iptables lxd",
    ]
