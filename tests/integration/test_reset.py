"""`kubesmith reset` on real LXD nodes: one lab (1 control plane + 1 worker) provisioned with
the real CLI, `kubesmith provision --inventory ... --no-kubernetes-binaries` (every unit,
configuration and certificate written, no Kubernetes binary: none can be obtained here), then
the runbook's commands in order (docs/runbooks/reset.md):

- every file the roles manage is recorded (content hash, mode, owner);
- `reset` without --yes and without a terminal refuses in one line and changes nothing;
- `reset --yes`: kubesmith's services inactive and disabled, the recorded files gone, no pod
  route, masquerade rule, pod-network leftover or running pod (stand-ins for what kubelet,
  kube-proxy and flannel would leave, see below), what is not kubesmith's untouched, etcd's
  data kept and named in the output; a second reset changes nothing;
- provisioning again writes the same files (content, modes, owners; the certificates are the
  controller's) and etcd still holds a key written before the reset;
- `reset --include-etcd-data --yes` removes the member data too; a node provisioned only in
  part (prep and pki) resets cleanly.

The Kubernetes components cannot run here, so what they would leave on a node (a CNI bridge
with a pod's veth, flannel's VXLAN device, a pod's network namespace and volume mount, KUBE-*,
FLANNEL-* and CNI-* chains, a container running in containerd's k8s.io namespace) is made by
hand before the reset, each named as such.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import InventoryLab, LxdHost, kubesmith, provisioned_lab

pytestmark = pytest.mark.integration


#: Where the roles write: directories walked whole, and single files in shared directories.
MANAGED_TREES = (
    "/etc/kubernetes",
    "/etc/kubesmith",
    "/etc/etcd",
    "/etc/cni",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/log/kubernetes",
)
MANAGED_FILES = (
    "/etc/containerd/config.toml",
    "/etc/sysctl.d/90-kubesmith.conf",
    *(
        f"/usr/local/sbin/kubesmith-{name}"
        for name in ("etcdctl", "etcd-snapshot", "pod-network", "cgroup-fix")
    ),
    *(
        f"/etc/systemd/system/{unit}"
        for unit in (
            "kube-apiserver.service",
            "kube-controller-manager.service",
            "kube-scheduler.service",
            "kubelet.service",
            "kube-proxy.service",
            "etcd.service",
            "containerd.service",
            "kubesmith-etcd-snapshot.service",
            "kubesmith-etcd-snapshot.timer",
            "kubesmith-pod-network.service",
            "kubesmith-cgroup-fix.service",
        )
    ),
)
#: Services the roles enable on some node; after a reset none is active or enabled.
SERVICES = (
    "etcd.service",
    "containerd.service",
    "haproxy.service",
    "kubesmith-etcd-snapshot.timer",
    "kubesmith-pod-network.service",
    "kubelet.service",
    "kube-proxy.service",
    "kube-apiserver.service",
)
ETCD_MEMBER = "/var/lib/etcd/member"
PROBE_KEY = "/kubesmith-test/reset"

#: Stand-ins for what Kubernetes' components leave on a node (they cannot run here): a pod's
#: veth on the CNI bridge, flannel's VXLAN device, a pod's network namespace and volume mount,
#: kube-proxy's, kubelet's, flannel's and the portmap plugin's chains and their jumps, and a
#: running container where the CRI keeps pods.
LEFTOVERS = """
set -e
ip link add cni0 type bridge
ip link add veth-kst0 type veth peer name veth-kst1
ip link set veth-kst0 master cni0
ip link add flannel.1 type vxlan id 1 dstport 8472 dev eth0
ip netns add cni-kst-pod
mkdir -p /var/lib/kubelet/pods/kst/volumes/v /srv/kst-volume
mount --bind /srv/kst-volume /var/lib/kubelet/pods/kst/volumes/v
iptables -t nat -N KUBE-SERVICES
iptables -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -N FLANNEL-POSTRTG
iptables -t nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
iptables -t nat -A FLANNEL-POSTRTG -s 10.244.0.0/16 -j RETURN
iptables -t nat -N CNI-HOSTPORT-DNAT
iptables -N KUBE-FIREWALL
iptables -A INPUT -j KUBE-FIREWALL
ip6tables -N KUBE-KUBELET-CANARY
# A running container in containerd's Kubernetes namespace (a pod's, as the CRI makes them).
mkdir -p /tmp/kst-pod/bin /tmp/kst-pod/proc /tmp/kst-pod/dev /tmp/kst-pod/sys
cp /usr/bin/sleep /tmp/kst-pod/bin/
for lib in $(ldd /usr/bin/sleep | grep -o '/lib[^ ]*'); do
  mkdir -p "/tmp/kst-pod$(dirname "$lib")" && cp "$lib" "/tmp/kst-pod$lib"
done
ctr -n k8s.io run -d --rootfs /tmp/kst-pod kst-pod /bin/sleep 86400
"""
#: What is not kubesmith's, made beside it: every one must survive every reset.
NOT_OURS = """
set -e
iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -m comment --comment kst-admin -j MASQUERADE
iptables -N KST-ADMIN
ip link add kst-admin0 type bridge
ip route add 198.51.100.0/24 dev eth0 proto static
mkdir -p /etc/systemd/system/etcd.service.d
printf '[Service]\\nNice=1\\n' > /etc/systemd/system/etcd.service.d/kst-admin.conf
"""
NOT_OURS_CHECK = (
    "iptables -t nat -S POSTROUTING | grep -q kst-admin && iptables -S KST-ADMIN >/dev/null"
    " && ip link show kst-admin0 >/dev/null && ip route | grep -q '^198.51.100.0/24'"
    " && test -f /etc/systemd/system/etcd.service.d/kst-admin.conf"
    # The node image's own cgroup helper (named kubesmith-*, not written by a role).
    " && test -x /usr/local/sbin/kubesmith-cgroup-v1-cpu"
    " && dpkg-query -W etcd-server containerd haproxy >/dev/null"
    # Debian's haproxy configuration (no API proxy in this shape: not kubesmith's to remove).
    " && grep -q '^global' /etc/haproxy/haproxy.cfg && ! grep -q kubesmith /etc/haproxy/haproxy.cfg"
    " && echo intact"
)

#: Mode, owner, group and sha256 of every file and directory under MANAGED_TREES and of the
#: MANAGED_FILES that exist, as JSON (one SSH round trip per node).
SNAPSHOT = """
import grp, hashlib, json, os, pwd, sys
trees, files = sys.argv[1].split(","), sys.argv[2].split(",")
found = {}
def record(path):
    st = os.lstat(path)
    entry = {"mode": format(st.st_mode & 0o7777, "o"),
             "owner": pwd.getpwuid(st.st_uid).pw_name, "group": grp.getgrgid(st.st_gid).gr_name}
    if os.path.isfile(path) and not os.path.islink(path):
        entry["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    else:
        entry["kind"] = "dir" if os.path.isdir(path) else "other"
    found[path] = entry
for tree in trees:
    for root, dirs, names in os.walk(tree):
        record(root)
        for name in names:
            record(os.path.join(root, name))
for path in files:
    if os.path.lexists(path):
        record(path)
print(json.dumps(found))
"""


@dataclass(frozen=True)
class Lab(InventoryLab):
    #: host -> path -> {mode, owner, group, sha256 | kind}, recorded after provisioning.
    recorded: dict[str, dict[str, dict[str, str]]]

    @property
    def control_plane(self) -> str:
        return self.control_planes[0]

    @property
    def worker(self) -> str:
        return next(h for h in self.hosts if h != self.control_plane)

    def snapshot(self, host: str) -> dict[str, dict[str, str]]:
        command = "python3 -c {} {} {}".format(
            shlex.quote(SNAPSHOT),
            shlex.quote(",".join(MANAGED_TREES)),
            shlex.quote(",".join(MANAGED_FILES)),
        )
        found: dict[str, dict[str, str]] = json.loads(self.run(host, command))
        return found


def provision(lab_inventory: Path, *extra: str) -> str:
    result = kubesmith(
        "provision", "--inventory", str(lab_inventory), "--no-kubernetes-binaries", *extra
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def reset(lab: Lab, *extra: str) -> str:
    result = kubesmith("reset", "--inventory", str(lab.inventory), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return " ".join(result.stdout.split())


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("reset-home")
    with (
        pytest.MonkeyPatch.context() as patch,
        provisioned_lab(lxd_ready, home, control_planes=1, workers=1) as made,
    ):
        patch.setenv("KUBESMITH_QUIET", "1")
        unrecorded = Lab(made.inventory_path, {})
        recorded = {host: unrecorded.snapshot(host) for host in unrecorded.hosts}
        yield Lab(made.inventory_path, recorded)


def unit_states(lab: Lab, host: str) -> dict[str, tuple[str, str]]:
    """unit -> (is-active, is-enabled; "" for a unit systemd does not know), one round trip."""
    script = (
        f'for unit in {" ".join(SERVICES)}; do echo "$unit $(systemctl is-active $unit)'
        ' $(systemctl is-enabled $unit 2>/dev/null)"; done'
    )
    states = {}
    for line in lab.run(host, script).splitlines():
        unit, active, *enabled = line.split()
        states[unit] = (active, "".join(enabled))
    assert set(states) == set(SERVICES), states
    return states


def test_provisioning_wrote_what_the_reset_must_remove(lab: Lab) -> None:
    """The recording holds every role's files (a reset of nothing would prove nothing)."""
    cp, worker = lab.recorded[lab.control_plane], lab.recorded[lab.worker]
    for path in (
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/encryption-config.yaml",
        "/etc/kubernetes/admin.conf",
        "/etc/etcd/etcd.conf.yml",
        "/etc/systemd/system/kube-apiserver.service",
        "/etc/systemd/system/etcd.service",
        "/usr/local/sbin/kubesmith-etcdctl",
        "/etc/containerd/config.toml",
    ):
        assert "sha256" in cp[path], path
    for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubesmith/pod-routes"):
        assert "sha256" in worker[path], path
    assert unit_states(lab, lab.control_plane)["etcd.service"] == ("active", "enabled")


def test_reset_without_yes_and_without_a_terminal_refuses(lab: Lab) -> None:
    result = kubesmith("reset", "--inventory", str(lab.inventory), stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refusing to reset" in lines[0]
    assert "without --yes" in lines[0]
    assert unit_states(lab, lab.control_plane)["etcd.service"] == ("active", "enabled")
    assert lab.snapshot(lab.control_plane) == lab.recorded[lab.control_plane]


def test_reset_removes_what_kubesmith_made_and_nothing_else(lab: Lab) -> None:
    lab.run(lab.control_plane, f"kubesmith-etcdctl put {PROBE_KEY} kept-across-reset")
    lab.run(lab.worker, LEFTOVERS)
    for host in lab.hosts:
        lab.run(host, NOT_OURS)

    said = reset(lab, "--yes")

    assert "2 hosts reset" in said
    assert f"{lab.worker}: remove 1 containers of Kubernetes' pods" in said
    assert f"{lab.control_plane}: kept etcd data {ETCD_MEMBER}" in said
    assert "--include-etcd-data removes it" in said
    for host in lab.hosts:
        for unit, (active, enabled) in unit_states(lab, host).items():
            assert active == "inactive", f"{host}: {unit} is {active}"
            assert enabled in ("disabled", ""), f"{host}: {unit} is {enabled}"
        left = lab.snapshot(host)
        assert set(left) & set(lab.recorded[host]) == set(), f"{host}: {sorted(left)}"
        assert lab.run(host, "ip -4 route show proto 245") == ""
        nat = lab.run(host, "iptables -t nat -S")
        assert "kubesmith-pod-masquerade" not in nat
        for family in ("iptables", "ip6tables"):
            rules = lab.run(host, f"{family}-save")
            for prefix in ("KUBE-", "FLANNEL-", "CNI-"):
                assert prefix not in rules, f"{host}: {family}: {prefix}"
        links = {
            line.split(": ")[1].split("@")[0]
            for line in lab.run(host, "ip -o link show").splitlines()
        }
        assert links.isdisjoint({"cni0", "flannel.1", "veth-kst0", "veth-kst1"}), f"{host}: {links}"
        assert "cni-" not in lab.run(host, "ip netns list")
        assert lab.run(host, "pgrep -f 'slee[p] 86400' || true") == "", f"{host}: a pod runs"
        assert "/var/lib/kubelet" not in lab.run(host, "findmnt -rn -o TARGET")
        assert lab.run(host, "ls -d /var/lib/containerd /etc/cni 2>/dev/null || true") == ""
        assert lab.run(host, NOT_OURS_CHECK).strip() == "intact", host
    assert lab.run(lab.control_plane, f"test -d {ETCD_MEMBER} && echo kept").strip() == "kept"


def test_a_second_reset_changes_nothing(lab: Lab) -> None:
    said = reset(lab, "--yes")
    assert "2 hosts reset, 0 changes (0 things undone)" in said
    assert f"kept etcd data {ETCD_MEMBER}" in said


def test_provisioning_again_converges_to_the_same_files_and_keeps_etcd_keys(lab: Lab) -> None:
    provision(lab.inventory)
    for host in lab.hosts:
        assert lab.snapshot(host) == lab.recorded[host], host
    got = lab.run(lab.control_plane, f"kubesmith-etcdctl get {PROBE_KEY} --print-value-only")
    assert got.strip() == "kept-across-reset"
    assert unit_states(lab, lab.control_plane)["etcd.service"] == ("active", "enabled")


def test_reset_with_etcd_data_removes_the_member_data(lab: Lab) -> None:
    said = reset(lab, "--include-etcd-data", "--yes")
    assert f"{lab.control_plane}: remove {ETCD_MEMBER}" in said
    assert "kept etcd data" not in said
    # The etcd user's home (Debian's etcd-server) stays, empty, as before provisioning.
    assert lab.run(lab.control_plane, "ls -A /var/lib/etcd") == ""
    assert reset(lab, "--include-etcd-data", "--yes").endswith("0 changes (0 things undone)")


def test_a_partly_provisioned_node_resets(lab: Lab) -> None:
    """Only node_prep and pki ran: the reset removes what they wrote, nothing fails."""
    provision(lab.inventory, "--tags", "prep,pki")
    assert "sha256" in lab.snapshot(lab.worker)["/etc/kubernetes/pki/ca.crt"]
    said = reset(lab, "--yes", "--limit", lab.worker)
    assert f"{lab.worker}: remove /etc/kubernetes" in said
    assert "1 hosts reset" in said
    assert lab.snapshot(lab.worker) == {}
    for host in lab.hosts:
        assert lab.run(host, NOT_OURS_CHECK).strip() == "intact", host
