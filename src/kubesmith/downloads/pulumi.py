"""The Pulumi CLI and provider plugins kubesmith installs on the controller.

`kubesmith preview|up|destroy|inventory` use a `pulumi` from PATH when the Automation API
accepts its version; otherwise the CLI pinned in versions.yaml (`pulumi.cli`) is installed once
into the state directory: ``<state>/tools/pulumi/<version>/bin/`` holds `pulumi` and the
language hosts that ship beside it. The provider plugins the program loads (`pulumi.plugins`,
equal to the installed pulumi_aws and pulumi_kubernetes packages) are installed into Pulumi's
plugin directory, ``$PULUMI_HOME/plugins/resource-<name>-v<version>/`` (PULUMI_HOME defaults to
~/.pulumi), before the first update, so the engine never downloads one itself.

Each tarball is a `Download` (the record, mirror layout and verified fetch the node components
use): its copy in the artifact cache is checked against the pinned sha256 before it is opened.
It is unpacked into a temporary directory beside its destination (tarfile's ``data`` filter
refuses absolute paths, ``..`` and links leaving it), checked for its executable, then renamed
into place: a destination holds a whole release or does not exist.

How Pulumi recognises an installed plugin (pulumi/pulumi sdk/go/common/workspace/plugins.go,
`getPlugins`, `HasPlugin`): a directory named ``<kind>-<name>-v<version>`` with no
``<dir>.partial`` file beside it. ``<dir>.lock`` is only the file lock Pulumi takes while it
installs. A directory with a ``.partial`` beside it is an unfinished install of Pulumi's own; it
is replaced.
"""

from __future__ import annotations

import os
import platform
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from kubesmith import versions
from kubesmith.downloads.download import (
    SUPPLY_OFFLINE,
    ByteProgress,
    Download,
    fetch,
    node_component,
    release_arch,
)
from kubesmith.errors import DownloadError, KubesmithError, ToolMissingError

#: The CLI tarball's top directory; its files go to the install tree's bin/.
_CLI_ARCHIVE_DIR = "pulumi"
CLI_BIN = "bin"


def controller_arch() -> str:
    """This machine's architecture, named as versions.yaml names it (amd64, arm64)."""
    return release_arch(platform.machine())


def cli_download(
    arch: str, cache_dir: Path, mirror_base_url: str | None = None, *, allow_unpinned: bool = False
) -> Download:
    return node_component(
        versions.pulumi_cli(), arch, cache_dir, mirror_base_url, allow_unpinned=allow_unpinned
    )


def plugin_downloads(
    arch: str, cache_dir: Path, mirror_base_url: str | None = None, *, allow_unpinned: bool = False
) -> list[Download]:
    return [
        node_component(plugin, arch, cache_dir, mirror_base_url, allow_unpinned=allow_unpinned)
        for plugin in versions.pulumi_plugins().values()
    ]


def downloads(
    arch: str, cache_dir: Path, mirror_base_url: str | None = None, *, allow_unpinned: bool = False
) -> list[Download]:
    """The CLI and every plugin for a controller of ``arch``."""
    return [
        cli_download(arch, cache_dir, mirror_base_url, allow_unpinned=allow_unpinned),
        *plugin_downloads(arch, cache_dir, mirror_base_url, allow_unpinned=allow_unpinned),
    ]


def cli_root(state: Path, version: str) -> Path:
    """Where kubesmith's own CLI of ``version`` lives (`PulumiCommand(root=...)`)."""
    return state / "tools" / "pulumi" / version


def pulumi_home(environ: Mapping[str, str] | None = None) -> Path:
    """$PULUMI_HOME, else ~/.pulumi: where Pulumi keeps its plugins."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("PULUMI_HOME") or Path.home() / ".pulumi")


def plugin_dir(home: Path, plugin: versions.Component) -> Path:
    """``<home>/plugins/resource-<name>-v<version>``: where Pulumi looks for the plugin."""
    return home / "plugins" / f"{plugin.name.removeprefix('pulumi-')}-v{plugin.version}"


def plugin_installed(directory: Path) -> bool:
    """Installed as Pulumi sees it: the directory, and no ``.partial`` file beside it."""
    return directory.is_dir() and not _partial_marker(directory).exists()


def install_cli(
    state: Path,
    cache_dir: Path,
    mirror_base_url: str | None = None,
    arch: str | None = None,
    progress: ByteProgress | None = None,
) -> Path:
    """The root of kubesmith's CLI (``<root>/bin/pulumi``), installed first when missing."""
    cli = versions.pulumi_cli()
    root = cli_root(state, cli.version)
    if not (root / CLI_BIN / "pulumi").is_file():
        download = node_component(cli, arch or controller_arch(), cache_dir, mirror_base_url)
        _install(download, root, _executables(cli, _cli_member), progress, _cli_member)
    return root


def install_plugins(
    home: Path,
    cache_dir: Path,
    mirror_base_url: str | None = None,
    arch: str | None = None,
    progress: ByteProgress | None = None,
) -> list[Path]:
    """Every plugin's directory under ``home``, each installed first when missing."""
    installed = []
    for plugin in versions.pulumi_plugins().values():
        directory = plugin_dir(home, plugin)
        if not plugin_installed(directory):
            # Whatever an unfinished install left goes before the marker does.
            shutil.rmtree(directory, ignore_errors=True)
            _partial_marker(directory).unlink(missing_ok=True)
            download = node_component(plugin, arch or controller_arch(), cache_dir, mirror_base_url)
            _install(download, directory, _executables(plugin, _same), progress, _same)
        installed.append(directory)
    return installed


def _same(name: str) -> str:
    return name


def _cli_member(name: str) -> str:
    """pulumi/<file> in the CLI tarball is bin/<file> in its install tree."""
    parts = PurePosixPath(name).parts
    if parts and parts[0] == _CLI_ARCHIVE_DIR:
        return str(PurePosixPath(CLI_BIN, *parts[1:]))
    return name


def _executables(component: versions.Component, rename: Callable[[str], str]) -> list[str]:
    return [rename(member) for member in component.binaries]


def _partial_marker(directory: Path) -> Path:
    return directory.with_name(directory.name + ".partial")


def _install(
    download: Download,
    dest: Path,
    executables: Iterable[str],
    progress: ByteProgress | None,
    rename: Callable[[str], str],
) -> None:
    """Verify ``download``, unpack it beside ``dest`` and rename it into place."""
    _fetch_or_explain(download, progress)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _unpack(download, staging, rename)
        missing = [name for name in executables if not (staging / name).is_file()]
        if missing:
            raise KubesmithError(
                f"{download.url}: {download.label} has no {', '.join(missing)}; "
                "nothing was installed"
            )
        # Only now, with the new tree complete, does a broken old one go.
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_or_explain(download: Download, progress: ByteProgress | None) -> None:
    """Fetch into the cache; unreachable is a one-line error naming the URL and the setting."""
    try:
        fetch(download, progress=progress)
    except DownloadError as exc:
        raise ToolMissingError(
            f"cannot download {download.label} from {exc.url} ({exc.reason}); offline? "
            f"{SUPPLY_OFFLINE}"
        ) from None


def _unpack(download: Download, into: Path, rename: Callable[[str], str]) -> None:
    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        return tarfile.data_filter(member.replace(name=rename(member.name), deep=False), path)

    try:
        with tarfile.open(download.cache_path, mode="r:gz") as archive:
            archive.extractall(into, filter=checked)
    except (tarfile.TarError, OSError) as exc:
        raise KubesmithError(
            f"{download.cache_path}: cannot unpack {download.label}: {exc}; nothing was installed"
        ) from None
