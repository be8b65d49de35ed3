"""The Pulumi CLI and provider plugins kubesmith installs, and the choice of CLI.

Real tarballs over real HTTP on 127.0.0.1; their sha256 is computed here and pinned in a copy
of versions.yaml. The tarballs hold small shell scripts in Pulumi's layout, not Pulumi, and
the CLI on PATH in the selection tests is a script that only prints a version: enough for the
Automation API's version check (`pulumi version`), which is all the choice depends on. The
real Pulumi CLI never runs here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi.automation._minimum_version import _MINIMUM_VERSION
from rich.console import Console
from semver import VersionInfo

from kubesmith import versions
from kubesmith.cli.console import download_progress
from kubesmith.downloads import pulumi as tools
from kubesmith.downloads.download import fetch
from kubesmith.errors import KubesmithError, ToolMissingError
from kubesmith.program import automation
from tests.clusterlab import LocalFiles, serve
from tests.pulumi_tools import cli_files, offline_pulumi_urls, serve_pulumi, tarball

CLI_UPSTREAM = "github.com/pulumi/pulumi/releases/download/v{v}/pulumi-v{v}-linux-{a}.tar.gz"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[LocalFiles]:
    with serve(tmp_path / "www") as served:
        yield served


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- the pins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "package"), [("aws", "pulumi_aws"), ("kubernetes", "pulumi_kubernetes")]
)
def test_plugin_pins_are_the_installed_sdk_versions(plugin: str, package: str) -> None:
    """The engine asks for the plugin version of each installed SDK package: a different pin
    would be installed for nothing, and the engine would download the right one itself."""
    assert versions.pulumi_plugins()[plugin].version == importlib.metadata.version(package)


def test_the_pinned_cli_is_one_the_automation_api_accepts() -> None:
    pinned = VersionInfo.parse(versions.pulumi_cli().version)
    assert pinned.compare(_MINIMUM_VERSION) >= 0
    assert pinned.major == _MINIMUM_VERSION.major


def test_every_pulumi_pin_has_a_sha256_per_architecture() -> None:
    for component in (versions.pulumi_cli(), *versions.pulumi_plugins().values()):
        assert set(component.sha256) == set(versions.ARCHITECTURES), component.name
        for value in component.sha256.values():
            assert re.fullmatch(r"[0-9a-f]{64}", value), component.name


def test_release_urls_use_each_release_s_architecture_names(tmp_path: Path) -> None:
    version = versions.pulumi_cli().version
    assert tools.cli_download("amd64", tmp_path).upstream == "https://" + CLI_UPSTREAM.format(
        v=version, a="x64"
    )
    assert tools.cli_download("arm64", tmp_path).upstream.endswith("-linux-arm64.tar.gz")
    aws = versions.pulumi_plugins()["aws"]
    assert next(d.upstream for d in tools.plugin_downloads("amd64", tmp_path)) == (
        f"https://github.com/pulumi/pulumi-aws/releases/download/v{aws.version}/"
        f"pulumi-resource-aws-v{aws.version}-linux-amd64.tar.gz"
    )


def test_a_mirror_serves_the_upstream_host_and_path(tmp_path: Path) -> None:
    version = versions.pulumi_cli().version
    for download in tools.downloads("arm64", tmp_path, "http://mirror.invalid/files/"):
        assert download.url == f"http://mirror.invalid/files/{download.mirror_path}"
        assert download.upstream.endswith(download.mirror_path)
    cli = tools.cli_download("amd64", tmp_path, "http://mirror.invalid/files")
    assert cli.url == "http://mirror.invalid/files/" + CLI_UPSTREAM.format(v=version, a="x64")


# -- installing the CLI ----------------------------------------------------------------------


def test_the_cli_is_installed_once_from_the_verified_tarball(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_pulumi(files, monkeypatch)
    state, cache = tmp_path / "state", tmp_path / "cache"
    root = tools.install_cli(state, cache, files.url, "amd64")
    version = versions.pulumi_cli().version
    assert root == state / "tools" / "pulumi" / version
    executable = root / "bin" / "pulumi"
    assert executable.read_bytes() == cli_files()["pulumi/pulumi"]
    assert executable.stat().st_mode & stat.S_IXUSR
    # The language hosts stay beside it, where the CLI looks for them.
    assert (root / "bin" / "pulumi-language-python").is_file()
    assert files.requests == ["/" + CLI_UPSTREAM.format(v=version, a="x64")]
    assert leftovers(root.parent) == [version], "no temporary directory left behind"

    assert tools.install_cli(state, cache, files.url, "amd64") == root
    assert len(files.requests) == 1, "installed: not downloaded again"


def test_a_directory_filled_by_artifacts_fetch_serves_as_the_mirror(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline sites without a web server: mirrorBaseUrl file:///DIR (the mirror layout)."""
    serve_pulumi(files, monkeypatch)
    root = tools.install_cli(tmp_path / "state", tmp_path / "cache", files.root.as_uri(), "amd64")
    assert (root / "bin" / "pulumi").read_bytes() == cli_files()["pulumi/pulumi"]
    assert files.requests == [], "read from the directory, not over HTTP"


def test_a_wrong_checksum_installs_nothing(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = serve_pulumi(files, monkeypatch)
    served = hashlib.sha256(tarball(cli_files())).hexdigest()
    data["pulumi"]["cli"]["sha256"]["amd64"] = hashlib.sha256(b"another file").hexdigest()
    state = tmp_path / "state"
    with pytest.raises(KubesmithError) as refused:
        tools.install_cli(state, tmp_path / "cache", files.url, "amd64")
    message = refused.value.message
    assert "\n" not in message
    assert f"sha256 {served} does not match" in message
    assert "nothing was installed" in message
    assert leftovers(state / "tools" / "pulumi") == [], "nothing unpacked, no temporary dirs"


def test_a_member_outside_the_tree_is_refused(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evil = tarball({**cli_files(), "pulumi/../../escaped": b"x"})
    serve_pulumi(files, monkeypatch, cli=evil)
    state = tmp_path / "state"
    with pytest.raises(KubesmithError, match=r"cannot unpack pulumi .*nothing was installed"):
        tools.install_cli(state, tmp_path / "cache", files.url, "amd64")
    assert leftovers(state / "tools" / "pulumi") == []
    assert not list(tmp_path.rglob("escaped"))


def test_a_tarball_without_the_cli_is_refused(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_pulumi(files, monkeypatch, cli=tarball({"README.md": b"no binary"}))
    state = tmp_path / "state"
    with pytest.raises(KubesmithError, match=r"has no bin/pulumi; nothing was installed"):
        tools.install_cli(state, tmp_path / "cache", files.url, "amd64")
    assert leftovers(state / "tools" / "pulumi") == []


def test_offline_without_a_mirror_is_one_line_naming_the_url_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base = offline_pulumi_urls(monkeypatch)
    with pytest.raises(ToolMissingError) as failed:
        tools.install_cli(tmp_path / "state", tmp_path / "cache", None, "amd64")
    url = (
        base + "/" + CLI_UPSTREAM.format(v=versions.pulumi_cli().version, a="x64").split("/", 1)[1]
    )
    assert failed.value.exit_code == 2
    assert failed.value.hint is None
    assert "\n" not in failed.value.message
    assert f"from {url} (" in failed.value.message
    assert "kubesmith:cluster.artifacts.mirrorBaseUrl" in failed.value.message


# -- installing the plugins -------------------------------------------------------------------


def test_plugins_land_where_pulumi_looks_for_them(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_pulumi(files, monkeypatch)
    home = tmp_path / "pulumi-home"
    plugins = versions.pulumi_plugins()
    # A failed install of Pulumi's own: the directory with a .partial beside it.
    k8s = home / "plugins" / f"resource-kubernetes-v{plugins['kubernetes'].version}"
    k8s.mkdir(parents=True)
    (k8s / "half-written").write_bytes(b"")
    k8s.with_name(k8s.name + ".partial").write_bytes(b"")

    installed = tools.install_plugins(home, tmp_path / "cache", files.url, "amd64")

    expected = [home / "plugins" / f"resource-{n}-v{p.version}" for n, p in plugins.items()]
    assert installed == expected
    for name, directory in zip(plugins, expected, strict=True):
        assert (directory / f"pulumi-resource-{name}").read_bytes() == (
            f"#!/bin/sh\necho {name}\n".encode()
        )
        assert tools.plugin_installed(directory)
    assert not (k8s / "half-written").exists()
    assert sorted(p.name for p in (home / "plugins").iterdir()) == sorted(e.name for e in expected)

    before = len(files.requests)
    assert tools.install_plugins(home, tmp_path / "cache", files.url, "amd64") == expected
    assert len(files.requests) == before, "installed plugins are not downloaded again"


def test_pulumi_home_defaults_to_dot_pulumi() -> None:
    assert tools.pulumi_home({}) == Path.home() / ".pulumi"
    assert tools.pulumi_home({"PULUMI_HOME": "/srv/pulumi"}) == Path("/srv/pulumi")


# -- which CLI runs ---------------------------------------------------------------------------


def put_on_path(monkeypatch: pytest.MonkeyPatch, directory: Path, version: str) -> Path:
    """A `pulumi` on PATH that only prints ``version`` (all the Automation API asks of it)."""
    directory.mkdir(parents=True)
    script = directory / "pulumi"
    script.write_text(f"#!/bin/sh\necho v{version}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")
    return script


def test_a_supported_pulumi_on_path_is_used_and_nothing_is_downloaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    put_on_path(monkeypatch, tmp_path / "bin", "3.300.0")
    offline_pulumi_urls(monkeypatch)  # any download would fail this test
    said: list[str] = []
    command = automation.pulumi_command(tmp_path, None, said.append, plugins=False)
    assert command.command == "pulumi"
    assert str(command.version) == "3.300.0"
    assert said == []


@pytest.mark.parametrize("version", ["3.0.0", "4.0.0"])
def test_an_unsupported_pulumi_on_path_gives_way_to_kubesmith_s(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    script = put_on_path(monkeypatch, tmp_path / "bin", version)
    serve_pulumi(files, monkeypatch)
    said: list[str] = []
    command = automation.pulumi_command(tmp_path, files.url, said.append, plugins=False)
    pinned = versions.pulumi_cli().version
    root = tools.cli_root(automation.state_dir(tmp_path), pinned)
    assert command.command == str(root / "bin" / "pulumi")
    assert str(command.version) == pinned
    (line,) = said
    assert line.startswith(f"not using {script}: ")


def test_without_pulumi_on_path_the_plugins_and_the_cli_are_installed(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(automation.shutil, "which", lambda _name: None)
    serve_pulumi(files, monkeypatch)
    command = automation.pulumi_command(tmp_path, files.url, print)
    assert command.command.endswith("/bin/pulumi")
    home = tools.pulumi_home()
    for plugin in versions.pulumi_plugins().values():
        assert tools.plugin_installed(tools.plugin_dir(home, plugin))


# -- progress ---------------------------------------------------------------------------------


def test_downloads_report_bytes_in_plain_lines_off_a_terminal(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_pulumi(files, monkeypatch)
    cli = tools.cli_download("amd64", tmp_path, files.url)
    size = len(files.root.joinpath(cli.mirror_path).read_bytes())
    console = Console(file=io.StringIO(), force_terminal=False, width=400)
    with download_progress(console) as progress:
        fetch(cli, progress=progress)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines == [
        f"downloading {cli.label} from {cli.url} ({size} bytes)",
        f"{cli.label}: {size} bytes, done",
    ]


def test_a_tarball_in_the_cache_is_verified_again_before_it_is_unpacked(
    files: LocalFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_pulumi(files, monkeypatch)
    cache = tmp_path / "cache"
    cli = tools.cli_download("amd64", cache, files.url)
    cli.cache_path.parent.mkdir(parents=True)
    with tarfile.open(cli.cache_path, "w:gz") as tampered:
        info = tarfile.TarInfo("pulumi/pulumi")
        tampered.addfile(info, io.BytesIO(b""))
    root = tools.install_cli(tmp_path / "state", cache, files.url, "amd64")
    assert (root / "bin" / "pulumi").read_bytes() == cli_files()["pulumi/pulumi"]
    assert len(files.requests) == 1, "the tampered copy was replaced by a verified download"
