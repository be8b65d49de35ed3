"""Build the Debian node image with debootstrap and import it into LXD, cached by content hash.

The image is small (minbase plus what a node needs to boot and be reached over SSH), by
default with the node base's Debian packages installed (``lxd.imageNodeBase``: provisioning
then runs no apt), on request with the Kubernetes binaries of the stack's version
(``lxd.imageKubernetesBinaries``: installed where the release role puts them, so it finds
them in place), and carries nothing specific to a node: no SSH key (injected when a node
is created), no host keys (generated on first boot), an empty machine-id. A hash over every
build input is stored as an image property; a build whose inputs did not change is a no-op.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pylxd
import yaml
from pylxd.exceptions import NotFound

from kubesmith.downloads import download, kube_binaries
from kubesmith.downloads.download import ByteProgress
from kubesmith.errors import KubesmithError, ToolMissingError, UserError
from kubesmith.local.aptsources import archive_mirror, image_sources, render_deb822
from kubesmith.local.daemon import has_tool
from kubesmith.local.debootstrap import DebootstrapProgress
from kubesmith.progress import SILENT, Reporter
from kubesmith.provision.packages import node_image_packages
from kubesmith.provision.target import artifact_cache_dir
from kubesmith.provision.variables import RELEASE_BIN_DIR, RELEASE_ROOT
from kubesmith.resources import package_file
from kubesmith.spec import ClusterSpec
from kubesmith.state.paths import state_dir

RELEASE = "bookworm"
#: On top of debootstrap's minbase: an init, a reachable and manageable (Ansible) node.
PACKAGES = (
    "systemd-sysv",
    "openssh-server",
    "python3",
    "iproute2",
    "sudo",
    "ca-certificates",
    "iputils-ping",
)
UNITS = (
    "systemd-networkd.service",
    "kubesmith-ssh-host-keys.service",
    "kubesmith-cgroup-v1-cpu.service",
)
#: Units that cannot work in a container: binfmt_misc is the host kernel's, not the node's.
MASKED_UNITS = ("systemd-binfmt.service",)
#: Files copied into the image as they are (paths relative to the image's root).
OVERLAY = package_file("local", "rootfs")
SLIM_CONFIG = "etc/dpkg/dpkg.cfg.d/kubesmith-slim"
#: Keeps the node base's services from starting while dpkg installs them (each role starts
#: its own, configured); removed again before the image is packed.
POLICY_RC_D = "usr/sbin/policy-rc.d"
#: Bumped when a build step changes in a way the other inputs do not show.
RECIPE_VERSION = 1

MANAGED_PROPERTY = "kubesmith.managed"
HASH_PROPERTY = "kubesmith.input_hash"
#: The node base's packages the image carries, space-separated (empty: none).
NODE_BASE_PROPERTY = "kubesmith.node_base"
#: The Kubernetes version whose binaries the image carries (empty: none).
KUBERNETES_PROPERTY = "kubesmith.kubernetes"
#: dpkg architecture -> LXD architecture name.
_LXD_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its hash names the build."""

    release: str
    architecture: str
    packages: tuple[str, ...]
    units: tuple[str, ...]
    masked_units: tuple[str, ...]
    apt_sources: str
    mirror: str
    overlay: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: The node base's Debian packages installed on top (empty: none).
    node_base: tuple[str, ...] = ()
    #: (version, pinned checksum of its server tarball) of the Kubernetes binaries carried.
    kubernetes: tuple[str, str] | None = None

    def input_hash(self) -> str:
        data = {"recipe_version": RECIPE_VERSION, **self.__dict__}
        # An image without binaries hashes as before the field existed (no needless rebuild).
        if self.kubernetes is None:
            del data["kubernetes"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class KubernetesBinaries:
    """One release's binaries for the image: verified and unpacked on the controller."""

    version: str
    checksum: str
    files: Mapping[str, Path]


@dataclass(frozen=True)
class BuildResult:
    alias: str
    fingerprint: str
    input_hash: str
    built: bool
    seconds: float


def read_overlay(root: Path = OVERLAY) -> dict[str, tuple[str, int]]:
    """Overlay files: relative path -> (text, mode); the mode counts, so a chmod rebuilds."""
    return {
        str(path.relative_to(root)): (path.read_text(encoding="utf-8"), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def dpkg_architecture() -> str:
    result = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ToolMissingError("dpkg is needed to build the node image (a Debian host)")
    return result.stdout.strip()


def make_recipe(
    architecture: str | None = None,
    etc_apt: Path = Path("/etc/apt"),
    node_base: Sequence[str] = (),
    kubernetes: KubernetesBinaries | None = None,
) -> Recipe:
    sources = image_sources(RELEASE, etc_apt)
    return Recipe(
        release=RELEASE,
        architecture=architecture or dpkg_architecture(),
        packages=PACKAGES,
        units=UNITS,
        masked_units=MASKED_UNITS,
        apt_sources=render_deb822(sources),
        mirror=archive_mirror(sources, RELEASE),
        overlay=read_overlay(),
        node_base=tuple(sorted(set(node_base))),
        kubernetes=(kubernetes.version, kubernetes.checksum) if kubernetes else None,
    )


def stack_node_base(spec: ClusterSpec) -> tuple[str, ...]:
    """The node base packages the image of a stack carries (none with imageNodeBase false)."""
    assert spec.lxd is not None
    return node_image_packages(spec) if spec.lxd.image_node_base else ()


def stack_kubernetes_binaries(
    spec: ClusterSpec, architecture: str, progress: ByteProgress | None = None
) -> KubernetesBinaries | None:
    """The Kubernetes binaries a stack's image carries (``lxd.imageKubernetesBinaries``),
    fetched and verified into the controller's cache first: before any build step, so an
    offline machine without a mirror stops at once, naming the file and the setting."""
    assert spec.lxd is not None
    if not (spec.lxd.image_kubernetes_binaries and spec.artifacts.kubernetes_binaries):
        return None
    tarball = download.server_tarball(
        spec.kubernetes_version, architecture, artifact_cache_dir(), spec.artifacts.mirror_base_url
    )
    download.fetch(tarball, progress=progress)
    return KubernetesBinaries(tarball.version, tarball.checksum, kube_binaries.unpack(tarball))


def install_kubernetes_binaries(rootfs: Path, binaries: KubernetesBinaries) -> list[str]:
    """Each binary where the release role installs it (<RELEASE_ROOT>/<name>/<version>/<name>,
    linked from RELEASE_BIN_DIR), so its probe finds the release in place; the names."""
    for name, source in sorted(binaries.files.items()):
        installed = f"{RELEASE_ROOT}/{name}/{binaries.version}/{name}"
        target = rootfs / installed.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755)
        link = rootfs / RELEASE_BIN_DIR.lstrip("/") / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(installed)
    return sorted(binaries.files)


def find_image(client: pylxd.Client, alias: str) -> pylxd.models.Image | None:
    """The image behind ``alias``; an error when the alias exists but kubesmith did not build it."""
    try:
        image = client.images.get_by_alias(alias)
    except NotFound:
        return None
    if image.properties.get(MANAGED_PROPERTY) != "true":
        raise UserError(
            f"lxd.image: the LXD image alias {alias!r} exists and was not built by kubesmith; "
            "set lxd.image to another alias"
        )
    return image


@contextmanager
def _build_lock(reporter: Reporter) -> Iterator[None]:
    # Machine-wide, like the LXD images it guards: sessions with other state directories
    # (two CI jobs, a test session beside `make up`) must not import and delete at once.
    lock_path = Path(tempfile.gettempdir()) / "kubesmith-image-build.lock"
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.phase(f"waiting for another image build (lock {lock_path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def prune_orphans(client: pylxd.Client, reporter: Reporter = SILENT) -> list[str]:
    """Delete the node images kubesmith built that no alias names any more; their
    fingerprints.

    A build moves its alias to the new image and deletes the old one; a build interrupted
    between the two, or builds that raced before the machine-wide lock, leave an image
    nothing can reach (kubesmith launches nodes by alias only). Call with the build lock held:
    it is the only time an unaliased kubesmith image is not one being imported.
    """
    removed: list[str] = []
    for image in client.images.all():
        if image.properties.get(MANAGED_PROPERTY) != "true" or image.aliases:
            continue
        try:
            image.delete(wait=True)
        except NotFound:
            continue
        removed.append(str(image.fingerprint))
    if removed:
        short = ", ".join(f[:12] for f in removed)
        reporter.note(f"removed {len(removed)} node image(s) no alias names ({short})")
    return removed


def _run(
    command: list[str], what: str, log: Path, on_line: Callable[[str], None] | None = None
) -> None:
    """Run ``command`` with its output in ``log``; each line also to ``on_line`` if given."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        if on_line is None:
            returncode = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        else:
            with subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            ) as process:
                assert process.stdout is not None
                for line in process.stdout:
                    out.write(line)
                    on_line(line)
            returncode = process.returncode
    if returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise KubesmithError(
            f"node image: {what} failed (exit {returncode}): {lines[-1] if lines else ''}",
            hint=f"full log: {log}",
        )


def _unmount_below(root: Path) -> None:
    """Undo mounts a failed debootstrap left in the tree, deepest first, before deleting it."""
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
    for point in sorted((p for p in points if Path(p).is_relative_to(root)), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)


def _debootstrap(recipe: Recipe, rootfs: Path, log: Path, reporter: Reporter) -> None:
    watch = DebootstrapProgress()

    def on_line(line: str) -> None:
        if watch.feed(line):
            reporter.detail(watch.status)

    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--arch={recipe.architecture}",
            f"--include={','.join(recipe.packages)}",
            recipe.release,
            str(rootfs),
            recipe.mirror,
        ],
        "debootstrap",
        log,
        on_line,
    )


def dpkg_filters(config: str) -> list[tuple[bool, str]]:
    """(keep, pattern) from dpkg path-include/path-exclude lines, in order."""
    filters = []
    for line in config.splitlines():
        option, _, pattern = line.strip().partition("=")
        if option in ("path-include", "path-exclude"):
            filters.append((option == "path-include", pattern))
    return filters


def excluded(path: str, filters: list[tuple[bool, str]]) -> bool:
    """dpkg's rule: the last pattern that matches decides (``*`` matches ``/`` too)."""
    verdict = False
    for keep, pattern in filters:
        if fnmatch.fnmatchcase(path, pattern):
            verdict = not keep
    return verdict


def _apply_dpkg_filters(rootfs: Path, config: str) -> None:
    """Remove what dpkg would not have installed under the image's path filters."""
    filters = dpkg_filters(config)
    for path in sorted(rootfs.rglob("*"), reverse=True):
        is_file = not path.is_dir() or path.is_symlink()
        if is_file and excluded("/" + str(path.relative_to(rootfs)), filters):
            path.unlink()


def _customise(recipe: Recipe, rootfs: Path, log: Path) -> None:
    """Make the bootstrapped tree a node image: nothing host- or instance-specific left in it."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty: systemd makes a fresh one on each node's first boot (DHCP and journald use it).
    (rootfs / "etc/machine-id").write_text("", encoding="utf-8")
    # debootstrap copies the build host's own hostname and resolver in.
    for leftover in (
        "etc/hostname",
        "etc/resolv.conf",
        "var/lib/dbus/machine-id",
        "var/log/bootstrap.log",
    ):
        (rootfs / leftover).unlink(missing_ok=True)
    for relative, (text, mode) in recipe.overlay.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)
    _apply_dpkg_filters(rootfs, (rootfs / SLIM_CONFIG).read_text(encoding="utf-8"))
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    sources = rootfs / "etc/apt/sources.list.d/debian.sources"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(recipe.apt_sources, encoding="utf-8")
    _run(["chroot", str(rootfs), "systemctl", "enable", *recipe.units], "systemctl enable", log)
    _run(["chroot", str(rootfs), "systemctl", "mask", *recipe.masked_units], "systemctl mask", log)


def node_base_commands(rootfs: Path, packages: Sequence[str]) -> list[list[str]]:
    """The chroot's apt runs: node_prep's options (no recommends, keep existing conffiles,
    no translated index), dpkg without fsync (the tree is packed right after)."""
    apt = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "chroot",
        str(rootfs),
        "apt-get",
        "-q",
        "-y",
        "-o",
        "Dpkg::Use-Pty=0",
        "-o",
        "Acquire::Languages=none",
    ]
    dpkg_options = [
        argument
        for option in ("--force-confdef", "--force-confold", "--force-unsafe-io")
        for argument in ("-o", f"Dpkg::Options::={option}")
    ]
    return [
        [*apt, "update"],
        [
            *apt,
            "install",
            "--no-install-recommends",
            *dpkg_options,
            "--",
            *packages,
        ],
    ]


def _enabled_links(rootfs: Path) -> set[str]:
    """Units enabled in the tree: the symlinks in systemd's ``*.wants`` directories."""
    return {link.name for link in (rootfs / "etc/systemd/system").glob("*.wants/*")}


def _install_node_base(recipe: Recipe, rootfs: Path, log: Path, reporter: Reporter) -> None:
    """Install the node base's packages in the tree, their services not started or enabled.

    The roles write each service's configuration and enable and start it themselves; a node
    booting from the image must not start Debian's stock etcd, containerd or haproxy first.
    """
    policy = rootfs / POLICY_RC_D
    policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
    policy.chmod(0o755)
    # apt resolves the mirror inside the tree; the image itself keeps no resolver.
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    proc = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    enabled_before = _enabled_links(rootfs)
    unpacked = 0

    def on_line(line: str) -> None:
        nonlocal unpacked
        if line.startswith("Unpacking "):
            unpacked += 1
            reporter.detail(f"unpacked {unpacked} packages")

    try:
        update, install = node_base_commands(rootfs, recipe.node_base)
        reporter.detail("package index")
        _run(update, "apt-get update", log)
        _run(install, "apt-get install", log, on_line)
        newly_enabled = sorted(_enabled_links(rootfs) - enabled_before)
        if newly_enabled:
            _run(
                ["chroot", str(rootfs), "systemctl", "disable", *newly_enabled],
                "systemctl disable",
                log,
            )
    finally:
        subprocess.run(["umount", str(proc)], check=False)
        policy.unlink(missing_ok=True)
        (rootfs / "etc/resolv.conf").unlink(missing_ok=True)


def _clean_apt(rootfs: Path, log: Path) -> None:
    """No downloaded packages or package index in the image (the index is stale by use)."""
    _run(["chroot", str(rootfs), "apt-get", "clean"], "apt-get clean", log)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)


def _metadata(recipe: Recipe, input_hash: str) -> bytes:
    """metadata.tar.gz: what LXD needs (architecture, creation date) plus our marker and hash."""
    document = {
        "architecture": _LXD_ARCH.get(recipe.architecture, recipe.architecture),
        "creation_date": int(dt.datetime.now(dt.UTC).timestamp()),
        "properties": {
            "os": "debian",
            "release": recipe.release,
            "description": (
                f"kubesmith node (Debian {recipe.release}"
                f"{', node base' if recipe.node_base else ''}"
                f"{f', Kubernetes {recipe.kubernetes[0]}' if recipe.kubernetes else ''}"
                f", {input_hash[:12]})"
            ),
            MANAGED_PROPERTY: "true",
            HASH_PROPERTY: input_hash,
            NODE_BASE_PROPERTY: " ".join(recipe.node_base),
            KUBERNETES_PROPERTY: recipe.kubernetes[0] if recipe.kubernetes else "",
        },
    }
    payload = yaml.safe_dump(document, sort_keys=False).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("metadata.yaml")
        info.size = len(payload)
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _import(
    client: pylxd.Client,
    alias: str,
    metadata: bytes,
    rootfs_tar: Path,
    previous: pylxd.models.Image | None,
) -> str:
    with rootfs_tar.open("rb") as rootfs:
        image = client.images.create(rootfs, metadata=io.BytesIO(metadata))
    description = image.properties.get("description", "kubesmith node")
    if previous is None:
        image.add_alias(alias, description)
    else:
        # Move the alias, then drop the old image unless something else still names it.
        client.api.images.aliases[alias].put(
            json={"target": image.fingerprint, "description": description}
        )
        try:
            previous.sync()
            if not previous.aliases:
                previous.delete(wait=True)
        except NotFound:
            pass  # already gone: another build (on another controller) removed it
    return str(image.fingerprint)


def build_stack_image(
    client: pylxd.Client,
    spec: ClusterSpec,
    *,
    force: bool = False,
    reporter: Reporter = SILENT,
    download_progress: ByteProgress | None = None,
) -> BuildResult:
    """The image a stack's nodes launch from: ``lxd.image``, with the stack's node base and,
    when the stack asks for them, its Kubernetes binaries (``download_progress`` hears their
    download)."""
    assert spec.lxd is not None
    return build_image(
        client,
        spec.lxd.image,
        node_base=stack_node_base(spec),
        kubernetes=stack_kubernetes_binaries(spec, dpkg_architecture(), download_progress),
        force=force,
        reporter=reporter,
    )


def build_image(
    client: pylxd.Client,
    alias: str,
    *,
    node_base: Sequence[str] = (),
    kubernetes: KubernetesBinaries | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> BuildResult:
    """Build and import the node image under ``alias`` unless an identical one is there.

    A build reports numbered phases to ``reporter`` (four, one more each for a node base and
    Kubernetes binaries), debootstrap's and apt's progress as details.
    """
    started = time.monotonic()
    recipe = make_recipe(node_base=node_base, kubernetes=kubernetes)
    input_hash = recipe.input_hash()
    with _build_lock(reporter):
        prune_orphans(client, reporter)
        previous = find_image(client, alias)
        if (
            previous is not None
            and previous.properties.get(HASH_PROPERTY) == input_hash
            and not force
        ):
            return BuildResult(
                alias, previous.fingerprint, input_hash, False, time.monotonic() - started
            )
        if os.geteuid() != 0:
            raise KubesmithError("building the node image needs root (debootstrap, chroot)")
        if not has_tool("debootstrap"):
            raise ToolMissingError(
                "debootstrap is not installed", hint="run: kubesmith lxd init (installs it)"
            )
        work = state_dir() / "image-build" / input_hash[:16]
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        rootfs.mkdir(parents=True)
        log = work / "build.log"
        tarball = work / "rootfs.tar"
        reason = (
            "no image yet" if previous is None else "rebuild forced" if force else "inputs changed"
        )
        reporter.note(f"node image {alias}: {reason}; building (a few minutes)")
        steps = 4 + bool(recipe.node_base) + bool(kubernetes)
        try:
            reporter.phase(f"debootstrap {recipe.release}", 1, steps)
            _debootstrap(recipe, rootfs, log, reporter)
            reporter.phase("configure rootfs", 2, steps)
            _customise(recipe, rootfs, log)
            if recipe.node_base:
                reporter.phase(
                    f"install the node base ({len(recipe.node_base)} packages)", 3, steps
                )
                _install_node_base(recipe, rootfs, log, reporter)
            if kubernetes:
                reporter.phase(
                    f"install the Kubernetes {kubernetes.version} binaries",
                    3 + bool(recipe.node_base),
                    steps,
                )
                reporter.detail(", ".join(install_kubernetes_binaries(rootfs, kubernetes)))
            _clean_apt(rootfs, log)
            reporter.phase("pack rootfs", steps - 1, steps)
            # Uncompressed: LXD unpacks plain tar, and gzip would cost more than the upload.
            _run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."],
                "tar",
                log,
            )
            reporter.detail(f"{tarball.stat().st_size / 1e6:.0f} MB")
            reporter.phase("import into LXD", steps, steps)
            fingerprint = _import(client, alias, _metadata(recipe, input_hash), tarball, previous)
        except BaseException:
            # Keep only the log for the error's hint.
            _unmount_below(rootfs)
            shutil.rmtree(rootfs, ignore_errors=True)
            tarball.unlink(missing_ok=True)
            raise
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(alias, fingerprint, input_hash, True, time.monotonic() - started)
