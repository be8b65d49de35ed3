"""`kubesmith lab` on real LXD nodes: SSH with pinned host keys, the bridge, teardown."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.local.instances import get_instance, managed_instances
from kubesmith.local.lab import Lab
from kubesmith.local.ssh import HostKeyMismatchError, KnownHosts, load_key, run, wait_for_ssh
from kubesmith.nodes import Node
from kubesmith.progress import Reporter
from tests.integration.conftest import LxdHost

pytestmark = pytest.mark.integration

NodeSsh = Callable[[Lab, Node], paramiko.SSHClient]
ANSIBLE = Path(sys.executable).parent / "ansible"


def test_three_node_lab_answers_ssh_talks_over_the_bridge_and_goes_away(
    lab: Callable[..., Lab], node_ssh: NodeSsh, lxd_ready: LxdHost
) -> None:
    made = lab(control_planes=1, workers=2)
    names = [n.name for n in made.nodes]
    assert names == [f"{made.name}-cp-1", f"{made.name}-worker-1", f"{made.name}-worker-2"]
    bridge = lxd_ready.lxd.subnet_network
    assert all(ipaddress.ip_address(n.private_address) in bridge for n in made.nodes)

    # Every node: the stack key logs in, the host key is the pinned one, and each node has
    # its own host key and machine-id (the image ships neither).
    pinned = KnownHosts(made.known_hosts_path).load()
    host_keys, machine_ids = set(), set()
    for node in made.nodes:
        keys = pinned.lookup(node.private_address)
        assert keys, f"no pinned host key for {node.name}"
        host_keys.update(k.get_base64() for k in keys.values())
        with node_ssh(made, node) as client:
            status, output = run(client, "hostname && cat /etc/machine-id")
            assert status == 0, output
        hostname, machine_id = output.split()
        assert hostname == node.name
        machine_ids.add(machine_id)
    assert len(host_keys) == 3
    assert len(machine_ids) == 3

    with node_ssh(made, made.nodes[0]) as client:
        for other in made.nodes[1:]:
            status, output = run(client, f"ping -c 1 -W 2 {other.private_address}")
            assert status == 0, f"{made.nodes[0].name} -> {other.name}: {output}"

    # The inventory: what Ansible reads, over OpenSSH with the same pinned keys.
    inventory = yaml.safe_load(made.inventory_path.read_text(encoding="utf-8"))["all"]
    assert {h: v["ansible_host"] for h, v in inventory["hosts"].items()} == {
        n.name: n.private_address for n in made.nodes
    }
    assert inventory["vars"]["kubesmith_cluster"]["name"] == made.name
    assert inventory["vars"]["ansible_ssh_private_key_file"] == str(made.key.private_path)
    assert list(inventory["children"]["etcd"]["hosts"]) == [names[0]]
    assert list(inventory["children"]["kube_node"]["hosts"]) == names[1:]
    pong = subprocess.run(
        [str(ANSIBLE), "all", "-i", str(made.inventory_path), "-m", "ping", "-o"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pong.returncode == 0, pong.stdout + pong.stderr
    assert pong.stdout.count("SUCCESS") == 3

    down = CliRunner().invoke(app, ["lab", "down", made.name])
    assert down.exit_code == 0, down.output
    assert down.stdout.strip() == f"lab {made.name} removed ({', '.join(names)})"
    progress = down.stderr.splitlines()
    assert progress[0] == f"lab {made.name}: deleting 3 node(s)"
    assert sorted(line.split(" (")[0] for line in progress[1:4]) == [f"{n}: deleted" for n in names]
    client = lxd_ready.client()
    assert managed_instances(client, lab=made.name) == []
    assert all(get_instance(client, name) is None for name in names)
    assert not made.directory.exists()


def test_a_changed_host_key_is_refused(lab: Callable[..., Lab], node_ssh: NodeSsh) -> None:
    made = lab()
    (node,) = made.nodes
    with node_ssh(made, node) as client:
        status, output = run(
            client, "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && systemctl restart ssh"
        )
        assert status == 0, output

    with pytest.raises(paramiko.BadHostKeyException):
        node_ssh(made, node)
    with pytest.raises(HostKeyMismatchError, match=f"node {node.name} "):
        wait_for_ssh(
            node.name,
            node.private_address,
            user="root",
            key=load_key(made.key.private_path),
            known_hosts=KnownHosts(made.known_hosts_path),
            timeout=10,
        )
    # OpenSSH, as Ansible runs it from the inventory, refuses too (accept-new is not "any").
    ssh = subprocess.run(
        [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={made.known_hosts_path}",
            "-o", "StrictHostKeyChecking=accept-new",
            "-i", str(made.key.private_path),
            f"root@{node.private_address}",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert ssh.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in ssh.stderr


class Recorder(Reporter):
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.details: list[str] = []
        self.notes: list[str] = []

    def phase(self, name: str, step: int | None = None, steps: int | None = None) -> None:
        self.phases.append(name if step is None else f"{step}/{steps} {name}")

    def detail(self, text: str) -> None:
        self.details.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def steps_of(self, node: Node) -> list[str]:
        steps = [n.removeprefix(f"{node.name}: ") for n in self.notes]
        return [s for s, n in zip(steps, self.notes, strict=True) if s != n]


def test_lab_up_again_reuses_its_nodes_and_follows_new_counts(
    lab: Callable[..., Lab], lxd_ready: LxdHost
) -> None:
    created = Recorder()
    first = lab(control_planes=1, workers=1, reporter=created)
    client = lxd_ready.client()
    identity = {n.name: client.instances.get(n.name).config["volatile.uuid"] for n in first.nodes}
    # Each node's steps are reported as they happen, and the count of nodes that answer.
    assert created.phases == [f"lab {first.name}: 2 node(s) from stack {lxd_ready.stack}"]
    for node in first.nodes:
        assert created.steps_of(node) == [
            "creating",
            "started",
            f"address {node.private_address}",
            "SSH ready",
        ]
    assert created.details == ["1/2 answer SSH", "2/2 answer SSH"]

    reused = Recorder()
    again = lab(name=first.name, control_planes=1, workers=1, reporter=reused)
    assert again.nodes == first.nodes
    assert [reused.steps_of(n)[0] for n in again.nodes] == ["exists, running"] * 2
    assert {n.name: client.instances.get(n.name).config["volatile.uuid"] for n in again.nodes} == (
        identity
    )

    smaller = lab(name=first.name, control_planes=1, workers=0)
    (control_plane,) = smaller.nodes
    assert control_plane == first.nodes[0]
    assert get_instance(client, f"{first.name}-worker-1") is None
    inventory = yaml.safe_load(smaller.inventory_path.read_text(encoding="utf-8"))["all"]
    assert list(inventory["hosts"]) == [control_plane.name]


def test_nodes_are_fit_for_kubernetes(lab: Callable[..., Lab], node_ssh: NodeSsh) -> None:
    made = lab()
    with node_ssh(made, made.nodes[0]) as client:
        status, output = run(client, "systemctl is-system-running --wait")
        assert output.strip() == "running", run(client, "systemctl --failed --no-legend")[1]
        status, output = run(client, "test -c /dev/kmsg && cat /etc/resolv.conf")
        assert status == 0, "kubelet needs /dev/kmsg"
        assert output.strip() == f"nameserver {made.spec.node_network.network_address + 1}"


def _separate_cpu_hierarchies() -> bool:
    """This VM's kind of host: cgroup v1 with `cpu` and `cpuacct` mounted apart."""
    lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    return any(line.split(":")[1] == "cpu" for line in lines)


@pytest.mark.skipif(
    not _separate_cpu_hierarchies(),
    reason="only hosts with separate cgroup v1 cpu and cpuacct hierarchies need the fix",
)
def test_nested_runc_can_set_cpu_limits(lab: Callable[..., Lab], node_ssh: NodeSsh) -> None:
    """What runc does for a pod with CPU limits: a child cgroup in the cpu hierarchy."""
    made = lab()
    script = (
        "mountpoint -q /sys/fs/cgroup/cpu && mountpoint -q /sys/fs/cgroup/cpuacct"
        " && mkdir /sys/fs/cgroup/cpu/kubesmith-test"
        " && echo 512 > /sys/fs/cgroup/cpu/kubesmith-test/cpu.shares"
        " && cat /sys/fs/cgroup/cpu/kubesmith-test/cpu.shares"
        " && rmdir /sys/fs/cgroup/cpu/kubesmith-test"
    )
    with node_ssh(made, made.nodes[0]) as client:
        status, output = run(client, script)
        assert (status, output.strip()) == (0, "512")
        # Running the boot fix again changes nothing.
        fix = "/usr/local/sbin/kubesmith-cgroup-v1-cpu"
        status, output = run(client, f"{fix} && grep -c ' /sys/fs/cgroup/cpu ' /proc/self/mounts")
        assert (status, output.strip()) == (0, "1")


def test_lab_down_of_an_unknown_lab_is_a_no_op(lxd_ready: LxdHost) -> None:
    del lxd_ready
    result = CliRunner().invoke(app, ["lab", "down", "t-never-made"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "no lab t-never-made here; nothing to do"
