"""Install LXD from Debian when it is missing and start its daemon without systemd.

CI machines and this VM have no systemd as PID 1, so the daemon is started directly
(``lxd --group root``) and awaited with ``lxd waitready``. Every step checks first, so running
it again changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kubesmith.errors import KubesmithError, ToolMissingError
from kubesmith.local.connection import LxdUnavailableError, connect, may_start_daemon
from kubesmith.progress import SILENT, Reporter

#: Command -> the Debian package that ships it.
REQUIRED_TOOLS = {
    "lxd": "lxd",
    "lxc": "lxd-client",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
    # Ansible reaches lab and stack nodes over OpenSSH.
    "ssh": "openssh-client",
}
#: LXD's btrfs driver needs the btrfs tools on the host.
BTRFS_TOOLS = {"mkfs.btrfs": "btrfs-progs"}
#: Host limits LXD's production setup raises. Nodes are privileged, so every node's systemd,
#: journald and networkd draw inotify instances from host root's one budget: the default 128
#: runs out at about 25 nodes, and the next node's systemd exits at boot ("Too many open
#: files"), leaving a stopped node with no address.
KERNEL_LIMITS = {
    "fs/inotify/max_user_instances": 1048576,
    "fs/inotify/max_user_watches": 1048576,
}
READY_TIMEOUT_S = 120
#: Commands in /usr/sbin are not on a non-login root PATH everywhere.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


def kernel_has_btrfs_on_loop() -> bool:
    """Whether a loop-file btrfs pool can work: the kernel knows btrfs and has loop devices."""
    filesystems = Path("/proc/filesystems")
    known = filesystems.read_text(encoding="utf-8").split() if filesystems.exists() else []
    return "btrfs" in known and Path("/dev/loop-control").exists()


def has_tool(tool: str) -> bool:
    return shutil.which(tool, path=_SEARCH_PATH) is not None


def missing_packages() -> list[str]:
    tools = {**REQUIRED_TOOLS, **(BTRFS_TOOLS if kernel_has_btrfs_on_loop() else {})}
    return sorted({pkg for tool, pkg in tools.items() if not has_tool(tool)})


def _run(command: Sequence[str], what: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": _SEARCH_PATH}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise KubesmithError(
            f"{what} failed (exit {result.returncode}): {detail[-1] if detail else 'no output'}"
        )


def ensure_packages(reporter: Reporter = SILENT) -> list[str]:
    """Install what is missing of REQUIRED_TOOLS (and btrfs-progs where usable)."""
    packages = missing_packages()
    if not packages:
        return []
    if os.geteuid() != 0:
        raise ToolMissingError(
            f"missing Debian packages: {', '.join(packages)}",
            hint=f"run as root, or: sudo apt-get install -y {' '.join(packages)}",
        )
    if shutil.which("apt-get", path=_SEARCH_PATH) is None:
        raise ToolMissingError(
            f"missing {', '.join(packages)} and no apt-get to install them; install LXD by hand"
        )
    reporter.phase("apt-get update", 1, 2)
    _run(["apt-get", "update"], "apt-get update")
    reporter.phase(f"apt-get install {' '.join(packages)}", 2, 2)
    _run(["apt-get", "install", "-y", *packages], f"apt-get install {' '.join(packages)}")
    return packages


def raise_kernel_limits(proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """Raise KERNEL_LIMITS that are lower (never lowers one); returns what changed.

    Runtime values only: `kubesmith lxd init` (and so `make lxd`) applies them on every run.
    """
    changed = []
    for key, wanted in KERNEL_LIMITS.items():
        path = proc_sys / key
        current = int(path.read_text(encoding="utf-8"))
        if current >= wanted:
            continue
        name = key.replace("/", ".")
        try:
            path.write_text(f"{wanted}\n", encoding="utf-8")
        except OSError as exc:
            raise KubesmithError(
                f"{name} is {current}, too low for more than a few nodes, and raising it "
                f"failed ({exc.strerror})",
                hint=f"run as root: sysctl -w {name}={wanted}",
            ) from None
        changed.append(f"raised {name} from {current} to {wanted}")
    return changed


def log_file() -> Path:
    lxd_dir = os.environ.get("LXD_DIR")
    return Path(lxd_dir) / "lxd.log" if lxd_dir else Path("/var/log/lxd/lxd.log")


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def ensure_daemon(socket: Path) -> bool:
    """Start the daemon behind ``socket`` unless it answers already; True when it was started."""
    try:
        connect(socket)
        return False
    except LxdUnavailableError:
        if not may_start_daemon(socket):
            raise
    if os.geteuid() != 0:
        raise LxdUnavailableError(
            f"LXD is not running at {socket} and starting it needs root",
            hint="run kubesmith lxd init as root",
        )
    if _systemd_running() and "LXD_DIR" not in os.environ:
        _run(["systemctl", "start", "lxd.socket", "lxd.service"], "systemctl start lxd")
    else:
        log = log_file()
        log.parent.mkdir(parents=True, exist_ok=True)
        # A session of its own, so the daemon outlives this command and its terminal.
        subprocess.Popen(
            ["lxd", "--group", "root", "--logfile", str(log)],
            env={**os.environ, "PATH": _SEARCH_PATH},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    result = subprocess.run(
        ["lxd", "waitready", f"--timeout={READY_TIMEOUT_S}"],
        env={**os.environ, "PATH": _SEARCH_PATH},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LxdUnavailableError(
            f"LXD did not become ready within {READY_TIMEOUT_S} s; see {log_file()}"
        )
    connect(socket)
    return True
