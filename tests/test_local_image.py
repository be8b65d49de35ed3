"""The node image recipe: what goes in, its content hash, and the dpkg path filters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kubesmith.local import image
from kubesmith.local.image import (
    KubernetesBinaries,
    Recipe,
    dpkg_filters,
    excluded,
    install_kubernetes_binaries,
    make_recipe,
    node_base_commands,
    read_overlay,
    stack_kubernetes_binaries,
    stack_node_base,
)
from kubesmith.provision.packages import node_image_packages
from kubesmith.provision.variables import RELEASE_BIN_DIR, RELEASE_ROOT
from tests.clusterlab import local_spec
from tests.conftest import REPO

ROLES = REPO / "playbooks/roles"
DEBIAN = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
"""


@pytest.fixture
def etc_apt(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEBIAN, encoding="utf-8")
    return tmp_path


@pytest.fixture
def recipe(etc_apt: Path, monkeypatch: pytest.MonkeyPatch) -> Recipe:
    monkeypatch.delenv("KUBESMITH_DEBIAN_MIRROR", raising=False)
    return make_recipe("amd64", etc_apt)


def test_recipe_takes_its_mirror_and_sources_from_the_host(recipe: Recipe) -> None:
    assert recipe.mirror == "http://mirror.example/debian"
    assert "URIs: http://mirror.example/debian" in recipe.apt_sources
    assert set(image.PACKAGES) <= set(recipe.packages)


def test_hash_is_stable_for_the_same_inputs(etc_apt: Path, recipe: Recipe) -> None:
    again = make_recipe("amd64", etc_apt)
    assert again.input_hash() == recipe.input_hash()
    reordered = dataclasses.replace(recipe, overlay=dict(reversed(list(recipe.overlay.items()))))
    assert reordered.input_hash() == recipe.input_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": (*image.PACKAGES, "curl")},
        {"mirror": "http://other.example/debian"},
        {"apt_sources": DEBIAN.replace("main", "main contrib")},
        {"architecture": "arm64"},
        {"units": ("systemd-networkd.service",)},
        {"node_base": ("containerd", "runc")},
        {"kubernetes": ("1.35.1", "9fb2")},
    ],
)
def test_any_changed_input_changes_the_hash(recipe: Recipe, change: dict[str, object]) -> None:
    assert dataclasses.replace(recipe, **change).input_hash() != recipe.input_hash()  # type: ignore[arg-type]


def test_overlay_text_and_mode_are_both_inputs(recipe: Recipe) -> None:
    script = "usr/local/sbin/kubesmith-cgroup-v1-cpu"
    text, mode = recipe.overlay[script]
    assert mode == 0o755
    edited = {**recipe.overlay, script: (text + "\n# edited\n", mode)}
    chmodded = {**recipe.overlay, script: (text, 0o644)}
    hashes = {
        recipe.input_hash(),
        dataclasses.replace(recipe, overlay=edited).input_hash(),
        dataclasses.replace(recipe, overlay=chmodded).input_hash(),
    }
    assert len(hashes) == 3


def test_overlay_is_read_with_relative_paths_and_modes(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "a.conf").write_text("a\n", encoding="utf-8")
    (tmp_path / "etc" / "a.conf").chmod(0o640)
    assert read_overlay(tmp_path) == {"etc/a.conf": ("a\n", 0o640)}


@pytest.mark.parametrize(
    ("path", "removed"),
    [
        ("/usr/share/doc/openssh-client/README.gz", True),
        ("/usr/share/doc/openssh-client/copyright", False),
        ("/usr/share/man/man1/ssh.1.gz", True),
        ("/usr/share/locale/de/LC_MESSAGES/apt.mo", True),
        ("/usr/share/locale/locale.alias", False),
        ("/usr/bin/ssh", False),
    ],
)
def test_slim_filters_follow_dpkg_last_match_wins(path: str, removed: bool) -> None:
    config = read_overlay()[image.SLIM_CONFIG][0]
    assert excluded(path, dpkg_filters(config)) is removed


def test_the_node_base_package_list_is_an_input_in_any_order(etc_apt: Path, recipe: Recipe) -> None:
    base = make_recipe("amd64", etc_apt, node_base=("runc", "containerd"))
    assert base.node_base == ("containerd", "runc")
    assert make_recipe("amd64", etc_apt, ["containerd", "runc"]).input_hash() == base.input_hash()
    more = make_recipe("amd64", etc_apt, node_base=("containerd", "runc", "haproxy"))
    assert len({recipe.input_hash(), base.input_hash(), more.input_hash()}) == 3


def test_a_stack_image_carries_its_node_base_unless_switched_off() -> None:
    spec = local_spec()
    assert stack_node_base(spec) == node_image_packages(spec)
    assert {"containerd", "etcd-server", "haproxy", "iptables"} <= set(stack_node_base(spec))
    released = local_spec(artifacts={"source": "release"})
    assert stack_node_base(released) == ("conntrack", "haproxy", "iptables")
    assert stack_node_base(local_spec(lxd={"imageNodeBase": False})) == ()


def test_the_node_base_is_installed_like_node_prep_does_in_the_chroot() -> None:
    update, install = node_base_commands(Path("/build/rootfs"), ["containerd", "runc"])
    chroot = ["env", "DEBIAN_FRONTEND=noninteractive", "chroot", "/build/rootfs", "apt-get"]
    assert update[:5] == install[:5] == chroot
    assert update[-1] == "update"
    assert "Acquire::Languages=none" in update
    assert install[install.index("install") + 1] == "--no-install-recommends"
    options = [install[i + 1] for i, arg in enumerate(install) if arg == "-o"]
    assert {
        "Dpkg::Options::=--force-confdef",
        "Dpkg::Options::=--force-confold",
        "Dpkg::Options::=--force-unsafe-io",
    } <= set(options)
    assert install[-3:] == ["--", "containerd", "runc"]


def test_a_release_of_kubernetes_binaries_is_an_input(etc_apt: Path, recipe: Recipe) -> None:
    files = {"kubelet": Path("/cache/bin/kubelet")}
    one = make_recipe("amd64", etc_apt, kubernetes=KubernetesBinaries("1.35.1", "aa", files))
    assert one.kubernetes == ("1.35.1", "aa")
    patched = make_recipe("amd64", etc_apt, kubernetes=KubernetesBinaries("1.35.1", "bb", files))
    assert len({recipe.input_hash(), one.input_hash(), patched.input_hash()}) == 3


def test_a_stack_image_carries_kubernetes_binaries_only_when_asked() -> None:
    # Neither setting on: nothing is fetched (no network, no cache touched).
    assert stack_kubernetes_binaries(local_spec(), "amd64") is None
    asked_but_off = local_spec(
        lxd={"imageKubernetesBinaries": True}, artifacts={"kubernetesBinaries": False}
    )
    assert stack_kubernetes_binaries(asked_but_off, "amd64") is None


def test_image_binaries_sit_where_the_release_role_installs_and_links_them(tmp_path: Path) -> None:
    # The role's own defaults, read from the role: the image and the role must agree.
    release = yaml.safe_load((ROLES / "release/defaults/main.yml").read_text())
    assert release["release_root"] == RELEASE_ROOT
    for role, var in (
        ("control_plane", "control_plane_bin_dir"),
        ("kubelet", "kubelet_bin_dir"),
        ("kube_proxy", "kube_proxy_bin_dir"),
    ):
        assert yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())[var] == (
            RELEASE_BIN_DIR
        )
    cache = tmp_path / "cache"
    cache.mkdir()
    files = {}
    for name in ("kubelet", "kube-proxy"):
        files[name] = cache / name
        files[name].write_bytes(name.encode() * 100)
        files[name].chmod(0o644)
    rootfs = tmp_path / "rootfs"
    names = install_kubernetes_binaries(rootfs, KubernetesBinaries("1.35.1", "aa", files))
    assert names == ["kube-proxy", "kubelet"]
    for name in names:
        installed = rootfs / f"opt/kubesmith/{name}/1.35.1/{name}"
        assert installed.read_bytes() == files[name].read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o755
        link = rootfs / "usr/local/bin" / name
        assert str(link.readlink()) == f"/opt/kubesmith/{name}/1.35.1/{name}"
    # Installing again (a rebuild into the same tree) replaces, never fails on the links.
    install_kubernetes_binaries(rootfs, KubernetesBinaries("1.35.1", "aa", files))
