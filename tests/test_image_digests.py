"""Every image kubesmith makes a node pull is pinned as registry/repository:tag@sha256:digest.

Checked on what is actually produced, not on versions.yaml alone: every add-on as
`kubesmith.provision.kubernetes.prepare` renders it for each pod-network shape, every shipped
app in each of its environments, the smoke test's Deployment and the containerd configuration
as Ansible renders it from the containerd role (a real ansible-playbook run on localhost that
only evaluates the role's variables). Also the parts of `kubesmith artifacts lock` that need no
registry; tests/integration/test_image_lock.py runs it against a real one.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.apps import render_app
from kubesmith.apps.images import images_of
from kubesmith.apps.render import available, environments
from kubesmith.cli import app
from kubesmith.downloads.imagelock import (
    ImageRef,
    RegistryMirror,
    pinned_images,
    record_digests,
)
from kubesmith.errors import KubesmithError, UserError
from kubesmith.provision import kubernetes
from kubesmith.provision.target import Target, for_inventory
from kubesmith.provision.variables import cluster_variables
from kubesmith.spec import CniPlugin, NetworkPolicyAgent
from tests.clusterlab import air_project, listed_images, local_spec, write_inventory
from tests.conftest import REPO
from tests.roleeval import evaluate_in_play

PLAYBOOKS = REPO / "playbooks"
PINNED = re.compile(r"[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+:[\w.-]+@sha256:[0-9a-f]{64}")
runner = CliRunner()


def unpinned(images: Iterable[str]) -> list[str]:
    return [image for image in images if not PINNED.fullmatch(image)]


def test_versions_yaml_pins_every_image_by_tag_and_digest() -> None:
    pins = pinned_images(versions.load())
    assert {"sandbox", "coredns", "flannel", "flannel_cni_plugin", "smoke", "apps.hello"} <= set(
        pins
    )
    assert unpinned(pins.values()) == []
    assert all(ImageRef.parse(image).digest for image in pins.values())


def test_each_digest_names_the_published_record_it_was_read_from() -> None:
    text = versions.versions_file().read_text()
    block = text[text.index("\nimages:") :].splitlines()
    pins = set(pinned_images(versions.load()).values())
    comment: list[str] = []
    for line in block:
        if line.lstrip().startswith("#"):
            comment.append(line.strip().lstrip("#").strip())
        elif line.split(": ", 1)[-1] in pins:
            # An image line, or a group of them: the comment above names where they come from:
            # a published record at a commit, or says plainly that the digest is another
            # project's record not verified against the registry (`artifacts lock --check`).
            said = " ".join(comment)
            assert (
                comment == []
                or re.search(r"commit\s+[0-9a-f]{40}", said)
                or "not verified against the registry" in said
            ), line
            comment = []


def _no_probe(_target: Target, _hosts: object) -> dict[str, str]:
    raise AssertionError("nodes probed although no binary is needed")


def _shape_variables(directory: Path, plugin: str, policy: str = "none") -> dict[str, Any]:
    """What site.yml receives for a 1+1 lab of ``plugin`` (and NetworkPolicy agent ``policy``)
    in a configuration-only run."""
    cni = {"plugin": plugin, "networkPolicy": policy}
    inventory = write_inventory(directory, local_spec(1, 1, cni=cni))
    target = for_inventory(inventory.path, "distro")
    off = {"kubesmith_kubernetes_binaries": False}
    prepared = kubernetes.prepare(target, {}, off, _no_probe)
    return {
        **cluster_variables(target.inventory.cluster).extravars(),
        **prepared.variables.extravars(),
    }


SHAPES = list(itertools.product(typing.get_args(CniPlugin), typing.get_args(NetworkPolicyAgent)))


@pytest.mark.parametrize(("plugin", "policy"), SHAPES)
def test_every_addon_a_shape_deploys_names_its_images_by_digest(
    tmp_path: Path, plugin: str, policy: str
) -> None:
    variables = _shape_variables(tmp_path, plugin, policy)
    manifests = {k: v for k, v in variables.items() if k.endswith("_manifests") and v}
    images = {image for objects in manifests.values() for image in images_of(objects)}
    assert versions.image("coredns") in images
    assert (versions.image("flannel") in images) == (plugin == "flannel")
    assert unpinned(images) == []


def test_every_addon_is_rendered_by_some_shape(tmp_path: Path) -> None:
    rendered = set()
    for plugin, policy in SHAPES:
        variables = _shape_variables(tmp_path / f"{plugin}-{policy}", plugin, policy)
        for key, objects in variables.items():
            if key.endswith("_manifests"):
                rendered |= {o["metadata"]["labels"]["app.kubernetes.io/name"] for o in objects}
    # A new add-on is covered by the test above only when some shape deploys it.
    assert set(available("addons")) <= rendered


def test_addon_templates_take_every_image_from_their_values() -> None:
    for template in (REPO / "templates" / "addons").rglob("*.j2"):
        for line in template.read_text().splitlines():
            found = re.match(r"\s*image:\s*(.+)", line)
            if found:
                assert found[1].startswith("{{ values."), f"{template}: {line.strip()}"


@pytest.mark.parametrize("app_name", available("apps"))
def test_every_shipped_app_runs_pinned_images_in_every_environment(app_name: str) -> None:
    for env in environments(app_name):
        images = images_of(render_app(app_name, env))
        assert images, f"{app_name}/{env} runs no image"
        assert unpinned(images) == [], f"{app_name}/{env}"


def evaluate(
    directory: Path,
    play_vars_files: list[Path],
    variables: Mapping[str, Any],
    expressions: Mapping[str, str],
    bindings: Mapping[str, Any],
) -> dict[str, Any]:
    """Jinja ``expressions`` as ansible-playbook evaluates them over ``play_vars_files`` with
    ``bindings`` (what a play passes the role) and ``variables`` as extra variables."""
    filters = [PLAYBOOKS / "filter_plugins", PLAYBOOKS / "roles" / "containerd" / "filter_plugins"]
    return evaluate_in_play(
        directory,
        vars_files=play_vars_files,
        variables=variables,
        expressions=expressions,
        bindings=bindings,
        filter_dirs=filters,
    )


def _role_binding(playbook: str, role: str) -> dict[str, Any]:
    for play in yaml.safe_load((PLAYBOOKS / playbook).read_text()):
        for entry in play.get("roles", []):
            if entry["role"] == role:
                return dict(entry.get("vars", {}))
    raise AssertionError(f"{playbook} runs no role {role}")


def test_containerd_and_the_smoke_test_pull_pinned_images(tmp_path: Path) -> None:
    role = PLAYBOOKS / "roles" / "containerd"
    variables = {
        "kubesmith_sandbox_image": versions.sandbox_image(),
        "kubesmith_components": {name: {"source": "distro"} for name in versions.components()},
    }
    values = evaluate(
        tmp_path / "containerd",
        [role / "defaults" / "main.yml", role / "vars" / "main.yml"],
        variables,
        {"config": "__containerd_config_text"},
        _role_binding("base.yml", "containerd"),
    )
    config = tomllib.loads(values["config"])
    sandbox = config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]
    assert sandbox == versions.image("sandbox")
    assert unpinned([sandbox]) == []
    # The smoke test's objects as its play builds them from what `kubesmith smoke` passes.
    smoke_play = yaml.safe_load((PLAYBOOKS / "smoke.yml").read_text())[0]
    play_vars = {k: v for k, v in smoke_play["vars"].items() if k.startswith(("__", "smoke_"))}
    play_vars.pop("smoke_image")
    values = evaluate(
        tmp_path / "smoke",
        [],
        {"smoke_image": versions.image("smoke")},
        {"manifest": "__smoke_manifest"},
        play_vars,
    )
    images = images_of(values["manifest"]["items"])
    assert images == [versions.image("smoke")]
    assert unpinned(images) == []


def test_the_smoke_playbook_refuses_an_image_without_a_digest() -> None:
    checks = yaml.safe_load((PLAYBOOKS / "smoke.yml").read_text())[0]["tasks"][0]
    assert "sha256" in str(checks["ansible.builtin.assert"]["that"])


@pytest.mark.parametrize("plugin", typing.get_args(CniPlugin))
def test_artifacts_list_shows_every_image_with_its_digest(
    plugin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = air_project(
        tmp_path, monkeypatch, stack="dev", cni={"plugin": plugin}, apps=[{"name": "hello"}]
    )
    result = runner.invoke(app, ["artifacts", "list", "-s", stack])
    assert result.exit_code == 0, result.output
    images = listed_images(result.output)
    assert versions.image("sandbox") in images
    assert unpinned(images) == []


# --- `kubesmith artifacts lock` without a registry ----------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "registry.k8s.io/pause:3.10@sha256:" + "a" * 64,
            ("registry.k8s.io", "pause", "3.10", "sha256:" + "a" * 64),
        ),
        ("127.0.0.1:5000/x/y:v1", ("127.0.0.1:5000", "x/y", "v1", None)),
        (
            "docker.io/library/nginx@sha256:" + "b" * 64,
            ("docker.io", "library/nginx", None, "sha256:" + "b" * 64),
        ),
    ],
)
def test_image_references_parse_and_print_back(text: str, parts: tuple[Any, ...]) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == parts
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nginx:1.27", "names no registry"),
        ("library/nginx:1.27", "names no registry"),
        ("docker.io/library/nginx", "neither a tag nor a digest"),
        ("docker.io/library/nginx:1@sha256:abc", "sha256:<64 hex digits>"),
    ],
)
def test_bad_image_references_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        ImageRef.parse(text)


def test_a_mirror_holds_each_image_below_its_registry_host() -> None:
    ref = ImageRef.parse(versions.image("coredns"))
    mirror = RegistryMirror.parse("http://127.0.0.1:5000/site")
    assert mirror.location(ref) == "127.0.0.1:5000/site/registry.k8s.io/coredns/coredns:v1.12.1"
    assert not mirror.tls
    assert RegistryMirror.parse("https://mirror.example:5000/").tls
    with pytest.raises(UserError, match="--registry-mirror: must be an http"):
        RegistryMirror.parse("file:///srv/mirror")


def test_recording_digests_changes_only_those_image_lines(tmp_path: Path) -> None:
    path = tmp_path / "versions.yaml"
    original = versions.versions_file().read_text()
    path.write_text(original)
    digest = "sha256:" + "c" * 64
    new = str(ImageRef.parse(versions.image("flannel")).with_digest(digest))
    hello = str(ImageRef.parse(str(versions.app_image("hello"))).with_digest(digest))
    record_digests(path, {"flannel": new, "apps.hello": hello})
    after = path.read_text()
    assert pinned_images(yaml.safe_load(after)) == {
        **pinned_images(versions.load()),
        "flannel": new,
        "apps.hello": hello,
    }
    changed = [
        (a, b) for a, b in zip(original.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert [b.strip() for _, b in changed] == [f"flannel: {new}", f"hello: {hello}"]


def test_an_image_that_is_not_one_line_is_left_to_the_user(tmp_path: Path) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text("images:\n  smoke: >-\n    docker.io/library/nginx:1.27.4\n")
    with pytest.raises(KubesmithError, match=r"images.smoke is not one `smoke: <reference>` line"):
        record_digests(path, {"smoke": "docker.io/library/nginx:1.27.4@sha256:" + "d" * 64})
    assert path.read_text().endswith("nginx:1.27.4\n")


def test_lock_without_skopeo_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text(versions.versions_file().read_text())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = runner.invoke(app, ["artifacts", "lock", "--check", "--versions-file", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: skopeo is not installed (kubesmith reads image digests from registries with it)",
        "hint: apt-get install -y skopeo",
    ]


def test_lock_names_a_bad_reference_in_the_versions_file(tmp_path: Path) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text(
        "images:\n  smoke: nginx:1.27.4\n  apps:\n    hello: docker.io/x@sha256:" + "e" * 64 + "\n"
    )
    result = runner.invoke(app, ["artifacts", "lock", "--check", "--versions-file", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {path}: images.smoke: 'nginx:1.27.4' names no registry (write "
        f"registry/repository:tag); {path}: images.apps.hello: 'docker.io/x@sha256:{'e' * 64}' "
        "has no tag to resolve"
    )
