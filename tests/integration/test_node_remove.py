"""`kubesmith node remove` on real LXD nodes: one lab (3 control planes + 1 worker, bridge
CNI) provisioned with the real CLI and `--no-kubernetes-binaries` (every unit, configuration
and certificate written, no Kubernetes binary: none can be obtained here, so the API never
answers and drain / Node deletion are skipped with a note; tests/e2e covers them), then the
commands of docs/runbooks/remove-node.md in order:

- refusals exit 1 with one line and change nothing: a host the inventory does not have; a
  control plane whose removal would leave etcd without a quorum (another member stopped);
  no --yes without a terminal;
- removing a control plane: etcd healthy with 2 members, every key written before kept on
  both, no remaining node names it (apiserver etcd-servers, etcd's configuration, the
  worker's API proxy backends, pod routes), the node reset (etcd's data gone), the
  controller forgot its certificates, pod range, host key and provisioning record; the
  same command once more (an interrupted removal) converges with nothing left to do;
- removing the worker while its machine is stopped (a dead node, the common case): the
  removal goes on without it, and its pod route is gone on every remaining node.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests.integration.conftest import InventoryLab, LxdHost, kubesmith, provisioned_lab

pytestmark = pytest.mark.integration

KEYS = 40
PREFIX = "/kubesmith-test/remove/"


@dataclass(frozen=True)
class Lab(InventoryLab):
    name: str
    lxd: LxdHost

    def drop_from_inventory(self, host: str) -> None:
        """What the runbook asks of the user after a removal: the host out of the file."""
        data = self.data
        del data["all"]["hosts"][host]
        for group in data["all"]["children"].values():
            (group.get("hosts") or {}).pop(host, None)
        self.inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("node-remove-home")
    with (
        pytest.MonkeyPatch.context() as patch,
        provisioned_lab(lxd_ready, home, control_planes=3, workers=1) as made,
    ):
        patch.setenv("KUBESMITH_QUIET", "1")
        yield Lab(made.inventory_path, made.name, lxd_ready)


def members(lab: Lab, host: str) -> list[str]:
    listed = json.loads(lab.run(host, "kubesmith-etcdctl member list -w json"))
    return sorted(m.get("name", "") for m in listed["members"])


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_refusals_change_nothing(lab: Lab) -> None:
    inventory = str(lab.inventory)
    planes = lab.hosts_in("kube_control_plane")
    unknown = one_line_error(kubesmith("node", "remove", "nope", "-i", inventory, "--yes"))
    assert unknown.startswith(f"error: 'nope' is no host of {inventory}")

    asked = one_line_error(kubesmith("node", "remove", planes[2], "-i", inventory))
    assert "refusing to remove" in asked
    assert "without --yes" in asked

    # Another member down: removing a healthy one would leave 1 healthy of 2.
    lab.run(planes[1], "systemctl stop etcd")
    try:
        refused = one_line_error(kubesmith("node", "remove", planes[2], "-i", inventory, "--yes"))
    finally:
        lab.run(planes[1], "systemctl start etcd")
        lab.run(planes[0], "until kubesmith-etcdctl endpoint health --cluster; do sleep 1; done")
    assert refused == (
        f"error: refusing to remove {planes[2]}: etcd would keep 1 healthy of 2 members and "
        f"a quorum of 2 needs 2 (not healthy: {planes[1]}); bring them back first"
    )
    assert members(lab, planes[0]) == sorted(planes)
    assert lab.run(planes[2], "systemctl is-active etcd").strip() == "active"


def test_remove_control_plane(lab: Lab) -> None:
    planes = lab.hosts_in("kube_control_plane")
    worker = lab.hosts_in("kube_node")[0]
    gone, kept = planes[2], planes[:2]
    gone_ip = lab.ip(gone)
    before = lab.data
    puts = "; ".join(f"kubesmith-etcdctl put {PREFIX}{i} value-{i} >/dev/null" for i in range(KEYS))
    lab.run(planes[0], f"set -e; {puts}")
    state = lab.inventory.parent
    assert (state / "pki" / "nodes" / gone).is_dir()
    assert gone_ip in (state / "known_hosts").read_text(encoding="utf-8")

    result = kubesmith("node", "remove", gone, "-i", str(lab.inventory), "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout
    assert f"{gone}: skipped: the API does not answer on {kept[0]}" in said, said
    assert f"{gone}: removed: etcd member {gone}" in said, said
    assert f"{gone}: reset: " in said, said
    assert f"{gone}: updating " in said, said
    assert f"{gone}: forgot its certificates" in said, said
    assert f"delete {gone} from {lab.inventory}" in result.stderr

    expected = {f"{PREFIX}{i}": f"value-{i}" for i in range(KEYS)}
    for host in kept:
        assert members(lab, host) == sorted(kept)
        # Read from this member's own copy (serializable): every key, every value.
        found = json.loads(
            lab.run(host, f"kubesmith-etcdctl get {PREFIX} --prefix --consistency=s -w json")
        )
        pairs = {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in found.get("kvs", [])
        }
        assert pairs == expected, host
    lab.run(kept[0], "kubesmith-etcdctl endpoint health --cluster")
    # No remaining node names it: apiserver, etcd, API proxy, routes.
    for host in [*kept, worker]:
        found = lab.run(
            host,
            f"grep -rlswF -e {gone_ip} -e {gone} /etc/kubernetes /etc/etcd /etc/haproxy "
            f"/etc/systemd/system || true; ip route | grep -w {gone_ip} || true",
            data=before,
        )
        assert found.strip() == "", f"{host} still names {gone}: {found}"
    unit = "/etc/systemd/system/kube-apiserver.service"
    servers = lab.run(kept[0], f"grep -o 'etcd-servers=[^ ]*' {unit}", data=before)
    assert servers.strip().count("https://") == 2
    backends = lab.run(worker, "grep -c '^ *server ' /etc/haproxy/haproxy.cfg", data=before)
    assert backends.strip() == "2"
    # The controller forgot it (before anything below connects to it again).
    assert not (state / "pki" / "nodes" / gone).exists()
    assert gone not in (state / "pod-cidrs.yaml").read_text(encoding="utf-8")
    assert gone not in json.loads((state / "provisioned-hosts.json").read_text(encoding="utf-8"))
    assert gone_ip not in (state / "known_hosts").read_text(encoding="utf-8")
    # The node itself: reset, its etcd data gone.
    assert lab.run(gone, "systemctl is-active etcd || true", data=before).strip() != "active"
    data = lab.run(gone, "test -e /var/lib/etcd/member && echo kept || echo gone", data=before)
    assert data.strip() == "gone"

    # Again (an interrupted removal is finished the same way): nothing left to do.
    again = kubesmith("node", "remove", gone, "-i", str(lab.inventory), "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{gone}: done before: etcd has no member {gone}" in again.stdout, again.stdout
    assert f"{gone}: reset: 0 things undone" in again.stdout, again.stdout
    assert members(lab, kept[0]) == sorted(kept)

    lab.drop_from_inventory(gone)


def test_remove_dead_worker(lab: Lab) -> None:
    worker = lab.hosts_in("kube_node")[0]
    planes = lab.hosts_in("kube_control_plane")
    assert worker not in planes
    worker_ip = lab.ip(worker)
    cidrs = yaml.safe_load((lab.inventory.parent / "pod-cidrs.yaml").read_text(encoding="utf-8"))
    worker_range = cidrs[worker]
    for host in planes:
        assert worker_range in lab.run(host, "ip route")
    # Its machine is gone dark (the lab made it; stopped, not deleted).
    lab.lxd.client().instances.get(worker).stop(force=True, wait=True)

    result = kubesmith("node", "remove", worker, "-i", str(lab.inventory), "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{worker}: {worker} does not answer" in result.stdout, result.stdout
    for host in planes:
        routes = lab.run(host, "ip route")
        assert worker_range not in routes, f"{host}: {routes}"
        assert worker_ip not in routes, f"{host}: {routes}"
        assert members(lab, host) == sorted(planes)
    lab.drop_from_inventory(worker)
