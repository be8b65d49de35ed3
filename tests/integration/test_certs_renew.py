"""`kubesmith certs --renew` on real LXD nodes (1 control plane + 1 worker).

The lab is provisioned once with `kubesmith provision --inventory ... --no-kubernetes-binaries`.
Then some leaf certificates are made due the way nine months without provisioning would leave
them: reissued in the controller's PKI by the real CA with a validity that ends in a few days
(tests/certlab.py) and installed on the nodes. `certs --renew` must reissue exactly those,
put exactly the new files on the nodes, and restart only what reads them: etcd (running for
real here, its member data kept and healthy) for the etcd server and peer certificates, and
kube-proxy on the worker for its client certificate. Without the Kubernetes binaries the
kube services do not run; as tests/integration/test_cluster.py does, "marked for restart" is
read from the unit files (the certificate digest in their first line). A second run says
nothing is due and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certlab import leaf_file, make_due, read
from tests.integration.conftest import InventoryLab, LxdHost, kubesmith, provisioned_lab

pytestmark = pytest.mark.integration

PKI = "/etc/kubernetes/pki"
UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
ETCDCTL = "/usr/local/sbin/kubesmith-etcdctl"
#: (node kind, leaf, days left): made due for the test.
DUE = (("cp", "etcd/server", 5), ("cp", "etcd/peer", 5), ("worker", "kube-proxy", 20))


@dataclass(frozen=True)
class Lab(InventoryLab):
    home: Path

    @property
    def pki(self) -> Path:
        return self.inventory.parent / "pki"

    @property
    def cp(self) -> str:
        (host,) = self.data["all"]["children"]["kube_control_plane"]["hosts"]
        return str(host)

    @property
    def worker(self) -> str:
        (host,) = [h for h in self.data["all"]["hosts"] if h != self.cp]
        return str(host)

    def host(self, kind: str) -> str:
        return self.cp if kind == "cp" else self.worker

    def kubesmith(self, *args: str) -> subprocess.CompletedProcess[str]:
        return kubesmith(*args)


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("certs-renew-home")
    with provisioned_lab(lxd_ready, home, control_planes=1, workers=1) as made:
        yield Lab(made.inventory_path, home)


def node_state(lab: Lab, host: str) -> dict[str, str]:
    """One SSH round trip: every certificate's SHA-256 under the PKI, each unit's first line
    (it names the certificate digest), etcd's configuration header and the services' start
    times (monotonic, so a restart within the same second still shows)."""
    script = (
        f"cd {PKI} && find . -name '*.crt' | sort | xargs sha256sum | sed 's/^/crt /'; "
        f"for u in {' '.join(UNITS)}; do f=/etc/systemd/system/$u.service; "
        '[ -f $f ] && echo "unit $u $(head -n1 $f)"; done; '
        '[ -f /etc/etcd/etcd.conf.yml ] && echo "unit etcd $(head -n1 /etc/etcd/etcd.conf.yml)"; '
        "for s in etcd containerd; do "
        'echo "started $s $(systemctl show -p ActiveEnterTimestampMonotonic --value $s)"; done'
    )
    state: dict[str, str] = {}
    for line in lab.run(host, script).splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "crt":
            digest, path = rest.split()
            state[f"crt {path.removeprefix('./')}"] = digest
        else:
            key, value = rest.split(" ", 1)
            state[f"{kind} {key}"] = value
    return state


def controller_digests(lab: Lab, host: str) -> dict[str, str]:
    """What the controller says ``host`` must hold: sha256 of each certificate of its bundle."""
    with tarfile.open(lab.pki / "bundles" / f"{host}.tar") as tar:
        return {
            f"crt {member.name}": hashlib.sha256(handle.read()).hexdigest()
            for member in tar.getmembers()
            if member.name.endswith(".crt") and (handle := tar.extractfile(member)) is not None
        }


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def test_due_certificates_are_renewed_pushed_and_restart_only_their_services(lab: Lab) -> None:
    inventory = str(lab.inventory)
    # Nine months later: the due certificates are on the controller and on the nodes. (Not
    # installed with `provision`: it would renew them, being inside its 90-day window.)
    old = {}
    for kind, leaf, days in DUE:
        host = lab.host(kind)
        old[host, leaf] = make_due(lab.pki, host, leaf, days)
        pem = leaf_file(lab.pki, host, leaf).read_text(encoding="ascii")
        lab.run(host, f"cat > {PKI}/{leaf}.crt", stdin=pem)
    listed = lab.kubesmith("certs", "--inventory", inventory)
    assert listed.returncode == 1, "certs must report the due certificates"
    lab.run(lab.cp, f"{ETCDCTL} put /certs-renew/kept yes")
    hosts = (lab.cp, lab.worker)
    before = {h: node_state(lab, h) for h in hosts}
    controller_before = {p: p.read_bytes() for p in lab.pki.rglob("*.crt")}

    result = lab.kubesmith("certs", "--renew", "--inventory", inventory)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said

    # Reissued on the controller: new serial, a full year, the same key; nothing else.
    now = dt.datetime.now(dt.UTC)
    for (host, leaf), cert in old.items():
        new = read(leaf_file(lab.pki, host, leaf))
        assert new.serial_number != cert.serial_number
        assert new.public_key() == cert.public_key()
        assert (new.not_valid_after_utc - now).days >= 364
        assert f"{host}  {leaf}.crt  expires {cert.not_valid_after_utc:%Y-%m-%d}" in said
    renewed_files = {leaf_file(lab.pki, h, leaf) for h, leaf in old}
    assert {p for p, data in controller_before.items() if p.read_bytes() != data} == renewed_files

    after = {h: node_state(lab, h) for h in hosts}
    for host in hosts:
        # The nodes hold exactly the controller's certificates, the new ones included.
        held = {k: v for k, v in after[host].items() if k.startswith("crt ")}
        assert held == controller_digests(lab, host)
    # Only the renewed files changed on the nodes; only etcd restarted (on the control plane)
    # and only the units reading a renewed file were rewritten (marked for restart).
    assert changed(before[lab.cp], after[lab.cp]) == {
        "crt etcd/server.crt", "crt etcd/peer.crt", "unit etcd", "started etcd",
    }  # fmt: skip
    assert changed(before[lab.worker], after[lab.worker]) == {
        "crt kube-proxy.crt",
        "unit kube-proxy",
    }
    services = {
        tuple(line.split()[:2])
        for line in result.stdout.splitlines()
        if ": restarted" in line or ": marked for restart" in line
    }
    assert services == {(lab.cp, "etcd:"), (lab.worker, "kube-proxy:")}
    assert f"{lab.cp}  etcd: restarted" in said
    assert f"{lab.worker}  kube-proxy: marked for restart" in said
    assert f"--tags pki,etcd,kube_proxy --limit {','.join(sorted(hosts))}" in said
    # etcd came back healthy with its data.
    lab.run(lab.cp, f"{ETCDCTL} endpoint health")
    assert lab.run(lab.cp, f"{ETCDCTL} get --print-value-only /certs-renew/kept").strip() == "yes"

    # Nothing is due any more: the second run says so and touches nothing.
    again = lab.kubesmith("certs", "--renew", "--inventory", inventory)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing due" in again.stdout
    assert {h: node_state(lab, h) for h in hosts} == after
    assert lab.kubesmith("certs", "--inventory", inventory).returncode == 0


#: docs/runbooks/certificates.md's check on a node, verbatim: what the services use.
NODE_EXPIRY = (
    "for f in /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/etcd/*.crt; do "
    'echo "$(openssl x509 -enddate -noout -in "$f" | cut -d= -f2)  $f"; done'
)


def test_the_runbook_s_node_check_and_a_certificate_reissued_by_hand(lab: Lab) -> None:
    inventory = str(lab.inventory)
    # The node check prints, for every certificate the node holds, the controller's end date.
    listed: dict[str, str] = {}
    for line in lab.run(lab.cp, NODE_EXPIRY).splitlines():
        date, path = line.rsplit("  ", 1)
        listed[path] = date
    held = {k.removeprefix("crt ") for k in controller_digests(lab, lab.cp)}
    assert set(listed) == {f"{PKI}/{name}" for name in held}
    for path, date in listed.items():
        leaf = path.removeprefix(f"{PKI}/").removesuffix(".crt")
        source = (
            lab.pki / f"{leaf}.crt"
            if leaf in {"ca", "etcd/ca", "front-proxy-ca"}
            else leaf_file(lab.pki, lab.cp, leaf)
        )
        expiry = read(source).not_valid_after_utc
        assert date == f"{expiry:%b} {expiry.day:>2} {expiry:%H:%M:%S %Y} GMT", path

    # "Renew one certificate now": delete it (keep the key), provision pki and control_plane.
    crt = leaf_file(lab.pki, lab.cp, "apiserver")
    old = read(crt)
    before = node_state(lab, lab.cp)
    crt.unlink()
    result = lab.kubesmith(
        "provision", "--inventory", inventory, "--tags", "pki,control_plane",
        "--no-kubernetes-binaries",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    new = read(crt)
    assert new.serial_number != old.serial_number
    assert new.public_key() == old.public_key()
    after = node_state(lab, lab.cp)
    assert after["crt apiserver.crt"] == controller_digests(lab, lab.cp)["crt apiserver.crt"]
    # The apiserver's certificate and the control-plane units that read it changed; etcd did
    # not restart.
    assert changed(before, after) == {
        "crt apiserver.crt",
        "unit kube-apiserver",
        "unit kube-controller-manager",
        "unit kube-scheduler",
    }
