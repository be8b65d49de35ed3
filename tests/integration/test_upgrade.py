"""Rolling upgrade on real LXD nodes, at configuration level: one lab of three control planes
and one worker (bridge CNI) provisioned with the previous pinned minor through the real CLI
(`kubesmith provision --inventory ... --no-kubernetes-binaries`: every unit, configuration
and certificate written, no Kubernetes binary, none can be obtained here), then the runbook's
commands (docs/runbooks/upgrade.md) in order:

- `kubesmith upgrade --plan` shows the order and changes nothing;
- `kubesmith upgrade --to NEW`: every node's units name the new version and carry flags valid
  for its minor; each node's files changed in its own window, control planes strictly one
  after another, then the worker (all LXD containers share the host's clock, so the files'
  modification times order the nodes); nothing of the node base changed and etcd was not
  restarted (same InvocationID and start time); the skipped drain/uncordon is said;
- a second run (`kubesmith provision`) changes nothing, `kubesmith upgrade` has nothing to do;
- a downgrade and a two-minor jump are refused in one line (plus a hint) before any node file
  changes. versions.yaml pins three minors, so the jump is 1.33 -> 1.35: the cluster's record
  is set to the 1.33 patch (as a cluster provisioned with it has) and both `upgrade` and
  `provision` refuse.

What needs a running API (drain, readiness between nodes, uncordon) is the e2e tier's:
tests/e2e/test_upgrade_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from kubesmith import versions
from kubesmith.provision import flags
from kubesmith.state import records
from tests.integration.conftest import InventoryLab, LxdHost, kubesmith, provisioned_lab

pytestmark = pytest.mark.integration


def _by_minor() -> dict[tuple[int, int], str]:
    return {versions.minor_of(v): v for v in versions.kubernetes_versions()}


#: The newest pinned version, the pinned one a minor below, and one two minors below.
NEW = _by_minor()[max(_by_minor())]
OLD = _by_minor()[(versions.minor_of(NEW)[0], versions.minor_of(NEW)[1] - 1)]
OLDEST = _by_minor()[(versions.minor_of(NEW)[0], versions.minor_of(NEW)[1] - 2)]

CONTROL_PLANE_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_UNITS = ("kubelet", "kube-proxy")
#: Where the roles write (walked whole), as test_reset records them.
TREES = (
    "/etc/kubernetes",
    "/etc/kubesmith",
    "/etc/etcd",
    "/etc/cni",
    "/etc/containerd",
    "/etc/systemd/system",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/usr/local/sbin",
)
#: The node base's files: an upgrade must leave every one as it was.
BASE_PREFIXES = (
    "/etc/etcd/",
    "/etc/containerd/",
    "/etc/kubernetes/pki/",
    "/etc/systemd/system/etcd.service",
    "/etc/systemd/system/containerd.service",
)

#: path -> [sha256, mtime in ns] of every file under TREES, as JSON (one SSH round trip).
SNAPSHOT = """
import hashlib, json, os, sys
found = {}
for tree in sys.argv[1].split(","):
    for root, dirs, names in os.walk(tree):
        for name in names:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                found[path] = [digest, os.stat(path).st_mtime_ns]
print(json.dumps(found))
"""

Snapshot = dict[str, tuple[str, int]]


@dataclass(frozen=True)
class Lab(InventoryLab):
    #: host -> snapshot after provisioning OLD.
    before: dict[str, Snapshot]
    #: control plane -> etcd's InvocationID and ActiveEnterTimestampMonotonic then.
    etcd: dict[str, str]

    @property
    def hosts(self) -> list[str]:
        return [*self.control_planes, *self.workers]

    def snapshot(self, host: str) -> Snapshot:
        command = f"python3 -c {shlex.quote(SNAPSHOT)} {shlex.quote(','.join(TREES))}"
        found = json.loads(self.run(host, command))
        return {path: (digest, int(mtime)) for path, (digest, mtime) in found.items()}

    def snapshots(self) -> dict[str, Snapshot]:
        return {host: self.snapshot(host) for host in self.hosts}

    def etcd_service(self, host: str) -> str:
        return self.run(
            host, "systemctl show etcd.service -p InvocationID -p ActiveEnterTimestampMonotonic"
        )

    def version(self) -> str:
        return str(self.data["all"]["vars"]["kubesmith_cluster"]["kubernetesVersion"])


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    result = kubesmith(*args)
    assert result.returncode == 0, f"kubesmith {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def refused(*args: str) -> str:
    """The one error line of a refused command (a hint line may follow)."""
    result = kubesmith(*args)
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("upgrade-home")
    with (
        pytest.MonkeyPatch.context() as patch,
        provisioned_lab(lxd_ready, home, control_planes=3, workers=1, provision=False) as made,
    ):
        patch.setenv("KUBESMITH_QUIET", "1")
        path = made.inventory_path
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["all"]["vars"]["kubesmith_cluster"]["kubernetesVersion"] = OLD
        data["all"]["vars"]["kubesmith_cluster"]["cni"] = {"plugin": "bridge"}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        ok("provision", "--inventory", str(path), "--no-kubernetes-binaries")
        unrecorded = Lab(path, {}, {})
        yield Lab(
            path,
            unrecorded.snapshots(),
            {host: unrecorded.etcd_service(host) for host in unrecorded.control_planes},
        )


def unit_text(snapshot_host: Lab, host: str, unit: str) -> str:
    return snapshot_host.run(host, f"cat /etc/systemd/system/{unit}.service")


def test_provisioned_with_the_older_minor(lab: Lab) -> None:
    assert lab.version() == OLD
    assert records.recorded_version(lab.inventory.parent) == OLD
    for host in lab.hosts:
        units = NODE_UNITS + (CONTROL_PLANE_UNITS if host in lab.control_planes else ())
        for unit in units:
            assert f"Kubernetes v{OLD}," in unit_text(lab, host, unit), (host, unit)
    for host, shown in lab.etcd.items():
        assert "InvocationID=" in shown, host
        assert "ActiveEnterTimestampMonotonic=" in shown, host
        assert "ActiveEnterTimestampMonotonic=0" not in shown, f"{host}: etcd is not running"


def test_plan_shows_the_order_and_changes_nothing(lab: Lab) -> None:
    said = ok("upgrade", "--inventory", str(lab.inventory), "--to", NEW, "--plan").stdout
    lines = [" ".join(line.split()) for line in said.splitlines()]
    assert lines[0] == f"Kubernetes {OLD} -> {NEW}:"
    cp1, cp2, cp3 = lab.control_planes
    (worker,) = lab.workers
    assert lines[1].startswith("1. node base on every node")
    assert lines[2] == f"2. control plane {cp1}: upgrade, wait until Ready"
    assert lines[3] == f"3. control plane {cp2}: upgrade, wait until Ready"
    assert lines[4] == f"4. control plane {cp3}: upgrade, wait until Ready"
    assert lines[5] == f"5. node {worker}: drain, upgrade, wait until Ready, uncordon"
    assert lines[6] == "6. pod network and CoreDNS"
    assert lab.version() == OLD
    assert lab.snapshots() == lab.before


def test_upgrade_rolls_node_by_node_and_leaves_etcd_running(lab: Lab) -> None:
    result = ok(
        "upgrade", "--inventory", str(lab.inventory), "--to", NEW, "--no-kubernetes-binaries"
    )
    said = " ".join(result.stderr.split())
    assert (
        "upgrade: no Kubernetes binaries (configuration only): drain, readiness waits and "
        "uncordon are skipped" in said
    )
    assert f"upgraded to Kubernetes {NEW} in {len(lab.hosts) + 2} provisioning runs" in " ".join(
        result.stdout.split()
    )
    assert lab.version() == NEW
    state = lab.inventory.parent
    assert records.recorded_version(state) == NEW
    assert records.upgrade_in_progress(state) is None

    after = lab.snapshots()
    windows: dict[str, tuple[int, int]] = {}
    minor = "{}.{}".format(*versions.minor_of(NEW))
    for host in lab.hosts:
        units = NODE_UNITS + (CONTROL_PLANE_UNITS if host in lab.control_planes else ())
        for unit in units:
            text = unit_text(lab, host, unit)
            assert f"Kubernetes v{NEW}," in text, (host, unit)
            assert f"v{OLD}" not in text, (host, unit)
            _, parsed = flags.parse_exec_start(text)
            assert flags.problems(unit, minor, parsed) == [], (host, unit)
        changed = {
            p
            for p, (digest, _) in after[host].items()
            if lab.before[host].get(p, ("",))[0] != digest
        }
        unit_paths = {f"/etc/systemd/system/{unit}.service" for unit in units}
        assert unit_paths <= changed, f"{host}: {sorted(unit_paths - changed)} not rewritten"
        base = sorted(p for p in changed if p.startswith(BASE_PREFIXES))
        assert base == [], f"{host}: the upgrade changed the node base: {base}"
        # The node's window: when the upgrade rewrote what the version names.
        stamps = [after[host][p][1] for p in unit_paths]
        windows[host] = (min(stamps), max(stamps))

    order = lab.hosts  # control planes in inventory order, then the worker
    for earlier, later in itertools.pairwise(order):
        assert windows[earlier][1] < windows[later][0], (
            f"{earlier} ({windows[earlier]}) and {later} ({windows[later]}) overlap"
        )
    for host, shown in lab.etcd.items():
        assert lab.etcd_service(host) == shown, f"{host}: etcd was restarted"


def test_a_second_run_changes_nothing(lab: Lab) -> None:
    said = ok("provision", "--inventory", str(lab.inventory), "--no-kubernetes-binaries").stdout
    assert f"{len(lab.hosts)} hosts provisioned, 0 changes" in " ".join(said.split())
    nothing = ok("upgrade", "--inventory", str(lab.inventory)).stdout
    assert f"nothing to upgrade: {lab.inventory} runs Kubernetes {NEW}" in " ".join(nothing.split())


def test_a_downgrade_and_a_two_minor_jump_are_refused_before_any_node_changes(lab: Lab) -> None:
    settled = lab.snapshots()
    line = refused("upgrade", "--inventory", str(lab.inventory), "--to", OLD)
    assert f"{NEW} -> {OLD} is a downgrade" in line
    assert lab.version() == NEW

    # A cluster provisioned with the minor two below NEW has that version on record.
    state = lab.inventory.parent
    record = state / records.VERSION_FILE
    record.write_text(f"{OLDEST}\n", encoding="ascii")
    try:
        line = refused("upgrade", "--inventory", str(lab.inventory), "--to", NEW)
        assert f"{OLDEST} -> {NEW} skips a minor" in line
        line = refused("provision", "--inventory", str(lab.inventory), "--no-kubernetes-binaries")
        assert f"{OLDEST} -> {NEW} skips a minor" in line
    finally:
        record.write_text(f"{NEW}\n", encoding="ascii")
    assert lab.snapshots() == settled
    for host, shown in lab.etcd.items():
        assert lab.etcd_service(host) == shown, f"{host}: etcd was restarted"
