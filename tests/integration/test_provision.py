"""Provisioning on a real 3-node LXD lab: runtime, TLS etcd, idempotence, failures, backups.

The tests run in file order on one lab (module scope), each building on the state the
previous one left, as an operator would: a release run that must fail closed, a run killed
midway, the converging run, checks, the idempotent re-run, member outage, snapshot/restore,
member replacement, then bad inventories. The etcd commands are the runbooks' commands
(docs/runbooks/), run over SSH on the nodes.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml

from kubesmith import versions
from kubesmith.errors import KubesmithError
from kubesmith.local.image import stack_node_base
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.target import for_inventory
from kubesmith.state.podcidr import ALLOCATIONS_FILE
from tests.integration.conftest import KUBESMITH, LxdHost, provisioned_lab, ssh_node, unique_name
from tests.integration.conftest import kubesmith as run_cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: The CLI installed beside the interpreter running the tests (the project's venv).


@dataclass(frozen=True)
class LabNodes:
    """A lab's inventory, read the way a person would use it: ssh as in the runbooks."""

    inventory: Path

    @property
    def data(self) -> dict[str, object]:
        loaded = yaml.safe_load(self.inventory.read_text(encoding="utf-8"))
        assert isinstance(loaded, dict)
        return loaded

    @property
    def hosts(self) -> dict[str, dict[str, str]]:
        hosts = self.data["all"]["hosts"]  # type: ignore[index]
        assert isinstance(hosts, dict)
        return hosts

    def ip(self, host: str) -> str:
        return self.hosts[host]["kubesmith_node_ip"]

    def ssh_args(self) -> list[str]:
        variables = self.data["all"]["vars"]  # type: ignore[index]
        assert isinstance(variables, dict)
        args = ["ssh", "-i", variables["ansible_ssh_private_key_file"], "-o", "BatchMode=yes"]
        args += str(variables["ansible_ssh_common_args"]).split()
        return args

    def run(
        self, host: str, command: str, *, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command line on ``host`` as root over SSH."""
        text = stdin.decode("latin-1") if stdin is not None else None
        result = ssh_node(self.data, host, command, stdin=text)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{host}: {command!r} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def copy_to(self, host: str, local: Path, remote: str) -> None:
        with local.open("rb") as data:
            subprocess.run(
                [*self.ssh_args(), f"root@{self.ip(host)}", f"cat > {remote}"],
                stdin=data,
                check=True,
                timeout=120,
            )


def kubesmith(
    *args: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI, as the runbooks do."""
    result = run_cli(*args, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubesmith {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _libraries(binary: str) -> list[str]:
    """The shared objects ``binary`` loads, from ldd (loader included)."""
    output = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"(/\S+\.so[.\d]*)", output)
    return sorted(set(found))


def build_image_archive(path: Path, reference: str) -> None:
    """A docker-archive image holding only /bin/sh (the controller's dash) and its libraries.

    No registry is reachable here; `ctr image import` takes this archive as it is.
    """
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        seen_dirs: set[str] = set()
        for source, name in [
            ("/bin/dash", "bin/sh"),
            *((p, p.lstrip("/")) for p in _libraries("/bin/dash")),
        ]:
            parts = Path(name).parts[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    seen_dirs.add(directory)
            data = Path(source).resolve().read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh", "-c", "echo hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [reference], "Layers": ["layer.tar"]}]
    ).encode()
    with tarfile.open(path, mode="w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


#: A test cluster's name: the shared fixtures remove any a dead test session left behind.
LAB = unique_name()
CP1, CP2, CP3 = (f"{LAB}-cp-{n}" for n in (1, 2, 3))
#: The base of the cluster this issue provides; runs limited to it need nothing downloaded.
TAGS = "prep,pki,runtime,etcd"


@pytest.fixture(scope="module")
def lab(lxd_ready: LxdHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabNodes]:
    home = tmp_path_factory.mktemp("provision-home")
    with provisioned_lab(
        lxd_ready, home, control_planes=3, workers=0, name=LAB, provision=False
    ) as created:
        yield LabNodes(created.inventory_path)


@pytest.fixture(autouse=True)
def lab_home(lab: LabNodes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and the CLI it starts) sees the lab's state directory."""
    monkeypatch.setenv("KUBESMITH_HOME", str(lab.inventory.parents[2]))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))


def etcdctl(
    lab: LabNodes, host: str, args: str, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return lab.run(host, f"kubesmith-etcdctl {args}", check=check)


def healthy(result: subprocess.CompletedProcess[str]) -> int:
    """Members `endpoint health` reports healthy (etcdctl prints the report on stderr)."""
    return (result.stdout + result.stderr).count("is healthy")


# --- fail closed before touching nodes ----------------------------------------------------


def test_wrong_release_checksum_fails_before_any_node_changes(
    lab: LabNodes, tmp_path: Path
) -> None:
    # A mirror that serves a file of the right name but the wrong content for every component.
    root = tmp_path / "mirror"
    for component in versions.components().values():
        relative = component.url("amd64", "http://x").removeprefix("http://x/")
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"not the release")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = kubesmith(
            "provision",
            "-i",
            str(lab.inventory),
            "--tags",
            TAGS,
            "--source",
            "release",
            "--mirror",
            f"http://127.0.0.1:{httpd.server_address[1]}",
            check=False,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 1
    wrong = hashlib.sha256(b"not the release").hexdigest()
    assert f"sha256 {wrong} does not match" in result.stderr
    assert "nothing was installed" in result.stderr
    for host in (CP1, CP2, CP3):
        untouched = lab.run(host, "ls /etc/kubernetes /opt/kubesmith /etc/etcd 2>&1 || true")
        assert untouched.stdout.count("No such file or directory") == 3, untouched.stdout


def test_check_run_on_fresh_nodes_changes_nothing(lab: LabNodes, lxd_ready: LxdHost) -> None:
    result = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS, "--check")
    assert "changes would be made" in result.stdout
    assert "0 changes would be made" not in result.stdout
    # From the image: etcd's package when it carries the node base, never a running etcd.
    baked = "etcd-server" in stack_node_base(lxd_ready.spec)
    for host in (CP1, CP2, CP3):
        untouched = lab.run(
            host,
            "ls /etc/kubernetes /etc/etcd 2>&1; dpkg -s etcd-server 2>&1 || true; "
            "systemctl is-active etcd || true",
        )
        assert untouched.stdout.count("No such file or directory") == 2, untouched.stdout
        assert ("is not installed" not in untouched.stdout) is baked, untouched.stdout
        assert untouched.stdout.split()[-1] == "inactive"


# --- a killed run, then convergence -------------------------------------------------------


def _events_started(artifacts: Path, task: str) -> bool:
    for events in artifacts.glob("*/job_events/*.json"):
        try:
            event = json.loads(events.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            event.get("event") == "runner_on_start"
            and event.get("event_data", {}).get("task") == task
        ):
            return True
    return False


def test_run_killed_midway_converges_on_rerun(lab: LabNodes, lxd_ready: LxdHost) -> None:
    if "containerd" in stack_node_base(lxd_ready.spec):
        # The image carries the node base: take a package away so there is apt work to kill.
        for host in (CP1, CP2, CP3):
            lab.run(host, "dpkg --remove containerd >/dev/null")
    artifacts = lab.inventory.parent / "ansible" / "artifacts"
    before = set(artifacts.glob("*")) if artifacts.exists() else set()
    process = subprocess.Popen(
        [KUBESMITH, "provision", "-i", str(lab.inventory), "--tags", TAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            new = [p for p in artifacts.glob("*") if p not in before] if artifacts.exists() else []
            if new and _events_started(artifacts, "Node prep | start installing packages"):
                break
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(4)  # into the package installation
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    result = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    assert "failed" not in result.stderr.lower()
    for host in (CP1, CP2, CP3):
        assert lab.run(host, "dpkg --audit").stdout == ""
        assert lab.run(host, "systemctl is-active containerd etcd").stdout.split() == [
            "active",
            "active",
        ]


# --- what the run built -------------------------------------------------------------------


def test_containerd_runs_a_locally_built_image_with_a_cpu_limit(
    lab: LabNodes, tmp_path: Path
) -> None:
    image = tmp_path / "hello.tar"
    build_image_archive(image, "kubesmith.test/hello:1")
    lab.copy_to(CP2, image, "/tmp/hello.tar")
    lab.run(CP2, "ctr -n kubesmith-test image import /tmp/hello.tar")
    # --cpus needs the cgroup v1 cpu controller mounted where runc looks (the LXD fix).
    ran = lab.run(
        CP2,
        "ctr -n kubesmith-test run --rm --cpus 0.5 kubesmith.test/hello:1 hello-1 "
        "/bin/sh -c 'echo hello from a container'",
    )
    assert ran.stdout.strip() == "hello from a container"
    config = lab.run(CP2, "containerd config dump").stdout
    assert "SystemdCgroup = true" in config
    assert 'sandbox_image = "' + versions.sandbox_image() + '"' in config
    assert re.search(
        r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", lab.run(CP2, "ctr plugins ls").stdout
    )


def test_etcd_has_three_healthy_members_over_tls(lab: LabNodes) -> None:
    members = json.loads(etcdctl(lab, CP1, "member list --write-out=json").stdout)["members"]
    assert sorted(m["name"] for m in members) == [CP1, CP2, CP3]
    for member in members:
        ip = lab.ip(member["name"])
        assert member["clientURLs"] == [f"https://{ip}:2379"]
        assert member["peerURLs"] == [f"https://{ip}:2380"]
    health = etcdctl(lab, CP1, "endpoint health --cluster")
    assert healthy(health) == 3, health.stdout + health.stderr


def test_etcd_refuses_clients_without_a_certificate_and_plain_http(lab: LabNodes) -> None:
    ip = lab.ip(CP1)
    # The member's own CA, but no client certificate: the TLS handshake must be refused.
    no_cert = lab.run(
        CP3,
        f"etcdctl --endpoints=https://{ip}:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt "
        "--dial-timeout=3s endpoint health",
        check=False,
    )
    assert no_cert.returncode != 0
    assert healthy(no_cert) == 0
    # From the controller: plain HTTP gets no etcd answer, TLS without a certificate fails.
    with socket.create_connection((ip, 2379), timeout=5) as plain:
        plain.sendall(b"GET /health HTTP/1.1\r\nHost: etcd\r\n\r\n")
        reply = plain.recv(4096)
    assert b'"health"' not in reply
    assert not reply.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _tls_request_without_certificate(context, ip)


def _tls_request_without_certificate(context: ssl.SSLContext, ip: str) -> None:
    """A TLS request with no client certificate; raises when the server refuses it."""
    with (
        socket.create_connection((ip, 2379), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: etcd\r\n\r\n")
        if not tls.recv(4096):
            raise ConnectionResetError("closed without an answer")


def test_second_run_changes_nothing_and_leaks_no_key(lab: LabNodes) -> None:
    result = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    for host in (CP1, CP2, CP3):
        row = next(line for line in result.stdout.splitlines() if host in line)
        counts = [int(n) for n in re.findall(r"\b\d+\b", row.split(host, 1)[1])]
        ok, changed, failed, unreachable = counts[:4]
        assert (changed, failed, unreachable) == (0, 0, 0), row
        assert ok > 0
    # Nothing anywhere in the run data (events, stdout, extra vars) holds key material.
    run_data = lab.inventory.parent / "ansible"
    leaked = [p for p in run_data.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert leaked == []
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    # Base-only runs (base.yml) prepare nothing of Kubernetes: no pod ranges were allocated.
    assert not (for_inventory(lab.inventory).state_dir / ALLOCATIONS_FILE).exists()
    modes = lab.run(
        CP1, "stat -c '%a %n' /etc/kubernetes/pki/*.key /etc/kubernetes/pki/etcd/*.key"
    ).stdout
    assert modes.split("\n")[0]
    assert all(line.startswith("600 ") for line in modes.strip().splitlines()), modes
    assert "etcd/ca.key" not in modes
    for unit in (
        "etcd.service",
        "kubesmith-etcd-snapshot.service",
        "kubesmith-etcd-snapshot.timer",
    ):
        lab.run(CP1, f"systemd-analyze verify /etc/systemd/system/{unit}")


# --- etcd operations (docs/runbooks) ------------------------------------------------------


def test_writes_succeed_with_a_member_down_and_it_rejoins(lab: LabNodes) -> None:
    lab.run(CP3, "systemctl stop etcd")
    try:
        etcdctl(lab, CP1, "put /kubesmith-test/while-down yes")
        assert (
            "yes" in etcdctl(lab, CP2, "get /kubesmith-test/while-down --print-value-only").stdout
        )
    finally:
        lab.run(CP3, "systemctl start etcd")
    deadline = time.monotonic() + 60
    while etcdctl(lab, CP3, "endpoint health", check=False).returncode != 0:
        assert time.monotonic() < deadline, "member did not come back"
        time.sleep(1)
    # The rejoined member caught up with the write it missed (a local, serializable read).
    value = etcdctl(lab, CP3, "get /kubesmith-test/while-down --print-value-only --consistency=s")
    assert value.stdout.strip() == "yes"


def assert_member_is_etcds(lab: LabNodes, host: str) -> None:
    """etcd runs as its own user and its data directory is that user's, 0700, throughout."""
    uid = lab.run(host, "id -u etcd").stdout.strip()
    found = lab.run(
        host,
        "grep ^Uid: /proc/$(systemctl show -p MainPID --value etcd)/status;"
        " stat -c '%a %U:%G' /var/lib/etcd; find /var/lib/etcd ! -user etcd -o ! -group etcd",
    ).stdout.splitlines()
    assert found[0].split()[1:] == [uid] * 4, (host, found)
    assert found[1:] == ["700 etcd:etcd"], (host, found)


def test_snapshot_wipe_restore_brings_every_key_back(lab: LabNodes, tmp_path: Path) -> None:
    keys = {f"/kubesmith-test/key-{n}": f"value-{n}" for n in range(20)}
    for key, value in keys.items():
        etcdctl(lab, CP1, f"put {key} {value}")
    # Runbook: take a snapshot and copy it to this machine.
    taken = kubesmith("etcd", "snapshot", "-i", str(lab.inventory), "--dest", str(tmp_path))
    snapshot = Path(taken.stdout.strip().splitlines()[-1].removeprefix("snapshot: "))
    assert snapshot.is_file()
    assert snapshot.stat().st_mode & 0o777 == 0o600
    # Runbook: the scheduled snapshots' timer is enabled and waiting on every control plane.
    for host in (CP1, CP2, CP3):
        timers = lab.run(host, "systemctl list-timers kubesmith-etcd-snapshot.timer").stdout
        assert "kubesmith-etcd-snapshot.timer" in timers, (host, timers)
        assert "1 timers listed." in timers, (host, timers)
    # Wipe: every test key deleted, and a key written after the snapshot.
    etcdctl(lab, CP1, "del --prefix /kubesmith-test/")
    etcdctl(lab, CP1, "put /kubesmith-test/after-snapshot gone-after-restore")
    # Runbook: restore every member from it.
    kubesmith("etcd", "restore", "-i", str(lab.inventory), "--snapshot", str(snapshot))
    for key, value in keys.items():
        assert etcdctl(lab, CP2, f"get {key} --print-value-only").stdout.strip() == value
    assert etcdctl(lab, CP2, "get /kubesmith-test/after-snapshot --print-value-only").stdout == ""
    assert healthy(etcdctl(lab, CP1, "endpoint health --cluster")) == 3
    assert lab.run(CP1, "ls -d /var/lib/etcd.before-restore-*").stdout.strip()
    # The restore tool ran as root; the restored members are etcd's user's again.
    for host in (CP1, CP2, CP3):
        assert_member_is_etcds(lab, host)


def test_replacing_a_failed_member(lab: LabNodes) -> None:
    # The failure: cp-3 loses its data directory.
    lab.run(CP3, "systemctl stop etcd && rm -rf /var/lib/etcd")
    # Runbook: remove the dead member from a healthy one, then provision etcd again.
    members = json.loads(etcdctl(lab, CP1, "member list --write-out=json").stdout)["members"]
    dead = next(m for m in members if m["name"] == CP3)
    etcdctl(lab, CP1, f"member remove {dead['ID']:x}")
    kubesmith("provision", "-i", str(lab.inventory), "--tags", "etcd")
    members = json.loads(etcdctl(lab, CP1, "member list --write-out=json").stdout)["members"]
    assert sorted(m["name"] for m in members) == [CP1, CP2, CP3]
    assert next(m for m in members if m["name"] == CP3)["ID"] != dead["ID"]
    assert healthy(etcdctl(lab, CP1, "endpoint health --cluster")) == 3
    value = etcdctl(lab, CP3, "get /kubesmith-test/key-7 --print-value-only --consistency=s")
    assert value.stdout.strip() == "value-7"
    assert_member_is_etcds(lab, CP3)


# --- bad inventories ----------------------------------------------------------------------


def _variant(lab: LabNodes, tmp_path: Path, edit: object) -> Path:
    data = lab.data
    assert callable(edit)
    edit(data)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_unreachable_host_fails_naming_it(lab: LabNodes, tmp_path: Path) -> None:
    def unreachable(data: dict) -> None:  # type: ignore[type-arg]
        data["all"]["hosts"][CP2]["ansible_port"] = 1  # nothing listens there

    path = _variant(lab, tmp_path, unreachable)
    result = kubesmith("provision", "-i", str(path), "--tags", "prep", check=False)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert f"{CP2}: unreachable" in error[0]


def test_missing_group_fails_before_contacting_anyone(lab: LabNodes, tmp_path: Path) -> None:
    def no_etcd(data: dict) -> None:  # type: ignore[type-arg]
        del data["all"]["children"]["etcd"]

    path = _variant(lab, tmp_path, no_etcd)
    result = kubesmith("provision", "-i", str(path), "--tags", TAGS, check=False)
    assert result.returncode == 2
    needs = "kubesmith needs etcd, kube_control_plane, kube_node, k8s_cluster"
    assert result.stderr.strip() == f"error: {path}: missing group 'etcd' ({needs})"
    assert not (tmp_path / "ansible").exists()


def test_a_package_apt_cannot_install_fails_naming_host_task_and_apt_error(
    lab: LabNodes,
) -> None:
    """The background package unit's failure reaches the run as a one-line error; the node
    keeps no failed unit, and the next run (without the bad package) converges."""
    kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    wanted = ["etcd-server", "etcd-client", "containerd", "kubesmith-no-such-package"]
    target = for_inventory(lab.inventory)
    outcome = provision(
        target,
        Options(
            tags=TAGS.split(","),
            limit=CP1,
            extravars={"kubesmith_host_packages": {CP1: wanted}},
        ),
    )
    with pytest.raises(KubesmithError) as failure:
        outcome.run.raise_for_failure("provision")
    message = str(failure.value)
    assert f"failed on {CP1}: task 'Node prep | wait for the package installation'" in message
    assert "kubesmith-no-such-package" in message
    assert "\n" not in message
    state = lab.run(CP1, "systemctl is-failed kubesmith-packages.service", check=False)
    assert state.stdout.strip() != "failed"
    again = kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS, "--limit", CP1)
    assert "1 hosts provisioned, 0 changes" in again.stdout


def _restart_window(lab: LabNodes, host: str) -> tuple[int, int]:
    """When etcd last stopped and when it was next active again (the host's monotonic clock,
    which every LXD node shares)."""
    shown = lab.run(
        host,
        "systemctl show etcd.service -p InactiveEnterTimestampMonotonic"
        " -p ActiveEnterTimestampMonotonic",
    ).stdout
    values = dict(line.split("=", 1) for line in shown.split())
    return int(values["InactiveEnterTimestampMonotonic"]), int(
        values["ActiveEnterTimestampMonotonic"]
    )


def test_a_setting_changed_on_every_member_restarts_them_one_at_a_time(lab: LabNodes) -> None:
    """No outage from a change every member reads: each member is back before the next stops."""
    kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)
    changed = provision(
        for_inventory(lab.inventory),
        Options(
            tags=TAGS.split(","), extravars={"etcd_config_overrides": {"snapshot-count": 9000}}
        ),
    )
    changed.run.raise_for_failure("provision")
    windows = sorted(_restart_window(lab, host) for host in (CP1, CP2, CP3))
    for (_, back), (next_stop, _) in itertools.pairwise(windows):
        assert back < next_stop, windows
    for host in (CP1, CP2, CP3):
        assert "snapshot-count: 9000" in lab.run(host, "cat /etc/etcd/etcd.conf.yml").stdout
    assert healthy(etcdctl(lab, CP1, "endpoint health --cluster")) == 3
    # Back to the stack's settings (the same rolling restart).
    kubesmith("provision", "-i", str(lab.inventory), "--tags", TAGS)


# Test-made stand-ins, never presented as Kubernetes: a unit named like the apiserver that
# records when it started, and a `kubectl` that answers `get --raw /readyz` only from 3 s after
# that start, recording when it first did. They let the control_plane role's real restart
# handlers run on real nodes where the Kubernetes binaries cannot be obtained.
_STANDIN_UNIT = """[Unit]
Description=kubesmith test stand-in named kube-apiserver (not Kubernetes)
[Service]
ExecStart=/bin/sh -c 'date +%%s%%N > /run/standin-started; exec sleep infinity'
"""
_STANDIN_KUBECTL = """#!/bin/sh
# kubesmith test stand-in (not kubectl): "ready" 3 s after the stand-in unit started.
started=$(cat /run/standin-started 2>/dev/null) || exit 1
now=$(date +%s%N)
[ $((now - started)) -ge 3000000000 ] || exit 1
echo "$now" >> /run/standin-ready
"""
_HANDLERS_PLAY = """
- name: Notify the control plane's kube-apiserver restart on every control plane
  hosts: kube_control_plane
  gather_facts: false
  tasks:
    # Tagged never: the role's tasks are skipped, its handlers are loaded (a `when` would
    # skip both).
    - name: Load the control_plane role's handlers (its tasks do not run)
      ansible.builtin.import_role:
        name: control_plane
        tasks_from: restart
        handlers_from: main
      tags: [never]
    - name: Every control plane changed a file kube-apiserver reads
      ansible.builtin.set_fact:
        __control_plane_restart_services: [kube-apiserver]
      changed_when: true
      notify: kube-apiserver restart
"""


def test_control_planes_restart_the_apiserver_one_after_another_each_ready_first(
    lab: LabNodes, tmp_path: Path
) -> None:
    """The control_plane role's handlers on three real nodes: each node's apiserver is ready
    again before the next node's restarts, so an HA control plane never stops serving."""
    planes = (CP1, CP2, CP3)
    for host in planes:
        lab.run(
            host, "cat > /etc/systemd/system/kube-apiserver.service", stdin=_STANDIN_UNIT.encode()
        )
        lab.run(host, "cat > /usr/local/bin/kubectl", stdin=_STANDIN_KUBECTL.encode())
        lab.run(host, "chmod 0755 /usr/local/bin/kubectl && systemctl daemon-reload"
                " && systemctl start kube-apiserver && rm -f /run/standin-ready")  # fmt: skip
    play = tmp_path / "restart-handlers.yml"
    play.write_text(_HANDLERS_PLAY, encoding="utf-8")
    try:
        playbook = str(Path(sys.executable).with_name("ansible-playbook"))
        result = subprocess.run(
            [playbook, "-i", str(lab.inventory), str(play)],
            env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg")},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        started = [int(lab.run(h, "cat /run/standin-started").stdout) for h in planes]
        ready = [int(lab.run(h, "head -n1 /run/standin-ready").stdout) for h in planes]
        for host, start, up in zip(planes, started, ready, strict=True):
            assert up - start >= 3_000_000_000, host  # waited until that node answered
        for (_, up), (next_start, _) in itertools.pairwise(zip(started, ready, strict=True)):
            assert next_start > up, (started, ready)  # the next restarted only then
    finally:
        for host in planes:
            lab.run(host, "systemctl stop kube-apiserver; rm -f /etc/systemd/system/"
                    "kube-apiserver.service /usr/local/bin/kubectl /run/standin-*;"
                    " systemctl daemon-reload", check=False)  # fmt: skip
