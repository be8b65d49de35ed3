"""etcd as its own user on a real 3-member LXD lab: a fresh member, then an old one converged.

One lab of 3 control planes, provisioned with the node base only (`--tags prep,pki,runtime,etcd`:
etcd runs for real from Debian's packages; nothing of Kubernetes is needed). The tests run in
file order on it:

1. the freshly provisioned members: etcd's process runs as the `etcd` user with no
   capabilities, no new privileges and a seccomp filter, sees the file system read-only but
   its data directory, and systemd rates its sandbox at most 2.0 (`systemd-analyze security`);
   the data directory is 0700 and `etcd`'s throughout; its keys stay
   root:root 0600 on disk and reach it as systemd credentials only; its units are 0600 and pass
   `systemd-analyze verify`; the cluster has 3 healthy members;
2. convergence from what kubesmith left before etcd had its own user. The lab is put back into
   that layout by the same edits main's role produced (read from main's role and checked by
   running it on a lab, 2026-11-30: etcd.service without User=, 0644; etcd.conf.yml root:root
   0600 naming the keys under /etc/kubernetes/pki/etcd; the member directory root's; the
   snapshot units 0644), not by checking out an old commit (CI clones need not hold it). One
   member gets the layout of upstream release binaries instead (no `etcd` user at all, the
   data directory root's from the top), so the role's user creation runs too. Keys are written
   while the members run as root; a re-provisioning must keep every one, restart the members
   one at a time, fix every owner and mode, and a further run must change nothing.

Snapshot, restore and member replacement with the new ownership are tested in
test_provision.py (the runbooks' commands).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LxdHost, provisioned_lab, unique_name
from tests.integration.test_provision import LabNodes, etcdctl, healthy, kubesmith

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAB = unique_name()
HOSTS = tuple(f"{LAB}-cp-{n}" for n in (1, 2, 3))
#: The member given the layout of upstream release binaries (no etcd user) in test 2.
RELEASE_LIKE = HOSTS[2]
TAGS = "prep,pki,runtime,etcd"
PKI = "/etc/kubernetes/pki"
DATA = "/var/lib/etcd"
UNIT = "/etc/systemd/system/etcd.service"
CONFIG = "/etc/etcd/etcd.conf.yml"
SNAPSHOT_UNITS = (
    "/etc/systemd/system/kubesmith-etcd-snapshot.service",
    "/etc/systemd/system/kubesmith-etcd-snapshot.timer",
)
CREDENTIALS = "/run/credentials/etcd.service"


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabNodes]:
    home = tmp_path_factory.mktemp("etcd-user-home")
    with provisioned_lab(
        lxd_ready, home, control_planes=3, workers=0, name=LAB, provision=False
    ) as created:
        nodes = LabNodes(created.inventory_path)
        kubesmith("provision", "-i", str(nodes.inventory), "--tags", TAGS)
        yield nodes


@pytest.fixture(autouse=True)
def lab_home(lab: LabNodes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(lab.inventory.parents[2]))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))


def stat(lab: LabNodes, host: str, *paths: str) -> dict[str, str]:
    """{path: "<mode> <owner>:<group>"} of the existing ``paths``."""
    quoted = " ".join(map(shlex.quote, paths))
    shown = lab.run(host, f"stat -c '%a %U:%G %n' {quoted} 2>/dev/null || true").stdout
    return {line.split(" ", 2)[2]: " ".join(line.split(" ", 2)[:2]) for line in shown.splitlines()}


def etcd_status(lab: LabNodes, host: str) -> dict[str, str]:
    """/proc/<pid>/status of the running etcd member (its main process, per systemd)."""
    pid = lab.run(host, "systemctl show -p MainPID --value etcd.service").stdout.strip()
    assert pid not in ("", "0"), f"{host}: etcd is not running"
    status = lab.run(host, f"cat /proc/{pid}/status").stdout
    return dict(re.findall(r"^(\w+):\s*(.*)$", status, flags=re.MULTILINE))


def etcd_uid(lab: LabNodes, host: str) -> str:
    return lab.run(host, "id -u etcd").stdout.strip()


def not_etcds(lab: LabNodes, host: str) -> list[str]:
    """Paths under the data directory that are not etcd:etcd."""
    found = lab.run(host, f"find {DATA} ! -user etcd -o ! -group etcd").stdout
    return found.split()


def assert_owned_by_etcd(lab: LabNodes, host: str) -> None:
    uid = etcd_uid(lab, host)
    status = etcd_status(lab, host)
    assert status["Uid"].split() == [uid] * 4, (host, status["Uid"])
    assert status["Gid"].split()[0] == lab.run(host, "id -g etcd").stdout.strip()
    assert stat(lab, host, DATA) == {DATA: "700 etcd:etcd"}
    assert not_etcds(lab, host) == []
    assert stat(lab, host, UNIT, CONFIG, *SNAPSHOT_UNITS) == {
        UNIT: "600 root:root",
        CONFIG: "640 root:etcd",
        **dict.fromkeys(SNAPSHOT_UNITS, "600 root:root"),
    }


# --- 1. a freshly provisioned member ----------------------------------------------------------


def test_a_fresh_member_runs_as_etcd_and_owns_only_its_data(lab: LabNodes) -> None:
    for host in HOSTS:
        assert_owned_by_etcd(lab, host)
        # Its keys stay root's on disk, as the pki role installs them; no etcd CA key is there.
        keys = stat(lab, host, *(f"{PKI}/etcd/{n}.key" for n in ("server", "peer", "ca")))
        assert keys == {
            f"{PKI}/etcd/server.key": "600 root:root",
            f"{PKI}/etcd/peer.key": "600 root:root",
        }
        # The running member reads them as credentials only it (and root) can read.
        assert stat(
            lab, host, CREDENTIALS, *(f"{CREDENTIALS}/{n}.key" for n in ("server", "peer"))
        ) == {
            CREDENTIALS: "500 etcd:root",
            f"{CREDENTIALS}/server.key": "400 etcd:root",
            f"{CREDENTIALS}/peer.key": "400 etcd:root",
        }
        config = lab.run(host, f"cat {CONFIG}").stdout
        assert f"key-file: {CREDENTIALS}/server.key" in config
        assert f"key-file: {CREDENTIALS}/peer.key" in config
        # As the etcd user, no key on disk is readable: not its own, not the Kubernetes CA's.
        readable = lab.run(
            host,
            f"for k in {PKI}/*.key {PKI}/etcd/*.key; do "
            'runuser -u etcd -- test -r "$k" && echo "$k"; done; true',
        ).stdout
        assert readable == ""
        assert lab.run(host, f"test -f {PKI}/ca.key", check=False).returncode == 0
        # The control: the same check passes on what etcd must read in place.
        lab.run(host, f"runuser -u etcd -- test -r {PKI}/etcd/ca.crt -a -r {CONFIG}")
    assert healthy(etcdctl(lab, HOSTS[0], "endpoint health --cluster")) == 3
    members = json.loads(etcdctl(lab, HOSTS[0], "member list --write-out=json").stdout)
    assert sorted(m["name"] for m in members["members"]) == sorted(HOSTS)


def test_the_member_runs_with_least_privilege(lab: LabNodes) -> None:
    host = HOSTS[0]
    status = etcd_status(lab, host)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # a filter is installed
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    # In its mount namespace the file system is read-only but for the data directory.
    pid = lab.run(host, "systemctl show -p MainPID --value etcd.service").stdout.strip()
    inside = f"nsenter --target {pid} --mount --"
    denied = lab.run(host, f"{inside} touch /etc/kubesmith-probe", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    lab.run(host, f"{inside} sh -c 'touch {DATA}/.kubesmith-probe && rm {DATA}/.kubesmith-probe'")
    # systemd's own rating of the sandbox (0 best, 10 worst; the root unit before rated 9.6).
    rating = lab.run(host, "systemd-analyze security etcd.service --no-pager").stdout
    exposure = re.search(r"Overall exposure level for etcd\.service: ([\d.]+)", rating)
    assert exposure, rating
    assert float(exposure[1]) <= 2.0, rating.splitlines()[-1]
    # Every unit of the role is valid (verify exits 0 on warnings: there must be none).
    verified = lab.run(host, f"systemd-analyze verify {UNIT} {' '.join(SNAPSHOT_UNITS)}")
    assert verified.stderr.strip() == ""


# --- 2. convergence from the layout of kubesmith before etcd had its own user ----------------

#: What main's etcd role wrote as etcd.service (templates/etcd.service.j2 before this change),
#: with this member's description and ExecStart.
_OLD_UNIT = """# Managed by kubesmith (etcd role). Replaces any packaged etcd.service: the whole
# configuration is in /etc/etcd/etcd.conf.yml.
[Unit]
{description}
Documentation=https://etcd.io/docs
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
{exec_start}
Restart=on-failure
RestartSec=5
LimitNOFILE=65536
# A member joining a cluster waits for its peers; systemd must not give up on it.
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
"""


def put_back_the_old_layout(lab: LabNodes, host: str, *, release_like: bool) -> None:
    """Make ``host``'s member what kubesmith's role left before etcd had its own user, and
    restart it that way (as root). ``release_like``: as on a node with upstream binaries,
    where no `etcd` user existed and the role made the data directory root's."""
    unit = lab.run(host, f"cat {UNIT}").stdout
    description = next(line for line in unit.splitlines() if line.startswith("Description="))
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    old_unit = _OLD_UNIT.format(description=description, exec_start=exec_start)
    lab.run(host, f"cat > {UNIT} && chmod 0644 {UNIT}", stdin=old_unit.encode())
    lab.run(
        host,
        f"sed -i 's#{CREDENTIALS}/#{PKI}/etcd/#' {CONFIG} && chown root:root {CONFIG}"
        f" && chmod 0600 {CONFIG} && chmod 0644 {' '.join(SNAPSHOT_UNITS)}"
        " && systemctl daemon-reload && systemctl stop etcd"
        # Debian's package made the data directory etcd's; the member inside was root's.
        f" && chown -R root:root {DATA}/member"
        + (f" && chown root:root {DATA} && userdel etcd" if release_like else "")
        + " && systemctl start etcd",
    )
    assert etcd_status(lab, host)["Uid"].split()[0] == "0", f"{host}: etcd is not root's again"


def restart_window(lab: LabNodes, host: str) -> tuple[int, int]:
    """When etcd last stopped and was next active (monotonic clock, shared by LXD nodes)."""
    shown = lab.run(
        host,
        "systemctl show etcd.service -p InactiveEnterTimestampMonotonic"
        " -p ActiveEnterTimestampMonotonic",
    ).stdout
    values = dict(line.split("=", 1) for line in shown.split())
    return int(values["InactiveEnterTimestampMonotonic"]), int(
        values["ActiveEnterTimestampMonotonic"]
    )


def changes(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """{host: changed} from the provision summary table."""
    found = {}
    for host in HOSTS:
        row = next(line for line in result.stdout.splitlines() if host in line)
        ok, changed, failed, unreachable = (
            int(n) for n in re.findall(r"\b\d+\b", row.split(host, 1)[1])[:4]
        )
        assert (failed, unreachable) == (0, 0), row
        assert ok > 0
        found[host] = changed
    return found


def test_an_old_root_member_converges_keeping_every_key(lab: LabNodes) -> None:
    for host in HOSTS:  # one at a time, as a cluster keeps its quorum
        put_back_the_old_layout(lab, host, release_like=host == RELEASE_LIKE)
    assert healthy(etcdctl(lab, HOSTS[0], "endpoint health --cluster")) == 3
    assert lab.run(RELEASE_LIKE, "getent passwd etcd", check=False).returncode != 0
    # Written by root members: their WAL and snapshot files are root's.
    keys = {f"/kubesmith-test/old-{n}": f"value-{n}" for n in range(30)}
    for key, value in keys.items():
        etcdctl(lab, HOSTS[0], f"put {key} {value}")
    for host in HOSTS:
        roots = lab.run(host, f"find {DATA}/member/wal -user root -name '*.wal'").stdout
        assert roots.split(), f"{host}: no WAL file of root's to hand over"

    converged = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    assert all(changed > 0 for changed in changes(converged).values())

    for host in HOSTS:
        assert_owned_by_etcd(lab, host)
        # Every member holds every key (local, serializable reads).
        got = etcdctl(
            lab, host, "get /kubesmith-test/old- --prefix --consistency=s --write-out=json"
        ).stdout
        values = {
            b64decode(kv["key"]).decode(): b64decode(kv["value"]).decode()
            for kv in json.loads(got).get("kvs", [])
        }
        assert values == keys, host
    assert healthy(etcdctl(lab, HOSTS[0], "endpoint health --cluster")) == 3
    # The user the role created on the release-like member is a locked system account.
    account = lab.run(RELEASE_LIKE, "getent passwd etcd").stdout.strip().split(":")
    assert int(account[2]) < 1000
    assert account[5:] == [DATA, "/usr/sbin/nologin"]
    # Quorum kept: each member was back before the next one stopped.
    windows = sorted(restart_window(lab, host) for host in HOSTS)
    for (_, back), (next_stop, _) in itertools.pairwise(windows):
        assert back < next_stop, windows

    again = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    assert changes(again) == dict.fromkeys(HOSTS, 0)
