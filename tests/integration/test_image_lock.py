"""`kubesmith artifacts lock` against a real registry: Debian's docker-registry on 127.0.0.1.

The images are small multi-platform images made here (tests/registrylab.py), pushed with
skopeo under every name and tag of a copy of versions.yaml through the mirror layout
(<mirror>/<registry>/<repository>:<tag>). The lock records what the registry serves, keeps
every comment, and `--check` fails once a tag is pushed again with different content.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith import versions
from kubesmith.cli import app
from kubesmith.downloads.imagelock import ImageRef, pinned_images
from tests.conftest import REPO
from tests.registrylab import Registry, ensure_packages, oci_image, run_skopeo, running_registry

runner = CliRunner()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reason = ensure_packages()
    if reason is not None:
        pytest.skip(reason)
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def pins() -> dict[str, ImageRef]:
    data = yaml.safe_load(versions.versions_file().read_text())
    return {key: ImageRef.parse(ref) for key, ref in pinned_images(data).items()}


def push_all(registry: Registry, pins: dict[str, ImageRef], layout: Path, salt: bytes) -> None:
    for key, ref in pins.items():
        assert ref.tag is not None
        oci_image(layout, ref.tag, key.encode() + salt)
        registry.push(layout, ref.tag, f"{ref.registry}/{ref.repository}")


def lock(path: Path, registry: Registry, *extra: str) -> tuple[int, str]:
    args = ["artifacts", "lock", "--versions-file", str(path), "--registry-mirror", registry.url]
    result = runner.invoke(app, [*args, *extra])
    return result.exit_code, result.output


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_lock_records_what_the_registry_serves_and_check_catches_a_moved_tag(
    registry: Registry, pins: dict[str, ImageRef], tmp_path: Path
) -> None:
    push_all(registry, pins, tmp_path / "layout", b"first")
    original = versions.versions_file().read_text()
    # One image without a digest at all, as a newly added pin would be.
    sandbox = pins["sandbox"]
    copy = tmp_path / "versions.yaml"
    copy.write_text(
        original.replace(str(sandbox), f"{sandbox.registry}/{sandbox.repository}:{sandbox.tag}")
    )

    # The shipped digests are upstream's: the test registry serves other manifests.
    code, output = lock(copy, registry, "--check")
    assert code == 1, output
    assert "images.sandbox" in output
    assert "no digest recorded" in output
    assert "Traceback" not in output
    assert "pause:3.10\n" in copy.read_text()  # --check wrote nothing

    code, output = lock(copy, registry)
    assert code == 0, output
    locked = yaml.safe_load(copy.read_text())
    recorded = {key: ImageRef.parse(ref) for key, ref in pinned_images(locked).items()}
    assert recorded.keys() == pins.keys()
    for key, ref in pins.items():
        # A progress line per image, and the digest the registry itself answers (HTTP API) and
        # skopeo reports: the multi-platform index, not one platform's manifest.
        assert re.search(rf"images\.{re.escape(key)} \S+: sha256:[0-9a-f]{{64}}", output), output
        repository = f"{ref.registry}/{ref.repository}"
        served = registry.manifest_digest(repository, str(ref.tag))
        location = f"docker://{registry.host}/{repository}:{ref.tag}"
        inspected = run_skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}", location)
        assert recorded[key] == ref.with_digest(served)
        assert inspected.strip() == served
    # Only the image lines changed: every comment, the order and everything else stayed.
    before, after = original.splitlines(), copy.read_text().splitlines()
    assert comments(copy.read_text()) == comments(original)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert {after[i].split(":")[0].strip() for i in changed} == {
        key.rsplit(".", 1)[-1] for key in pins
    }

    code, output = lock(copy, registry, "--check")
    assert code == 0, output
    assert f"{len(pins)} image digests" in output

    # The smoke image's tag now points at other content: drift, named, exit 1, nothing written.
    smoke = pins["smoke"]
    oci_image(tmp_path / "moved", str(smoke.tag), b"other content")
    registry.push(tmp_path / "moved", str(smoke.tag), f"{smoke.registry}/{smoke.repository}")
    locked_text = copy.read_text()
    code, output = lock(copy, registry, "--check")
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "images.smoke" in errors[0]
    assert "drift" in errors[0]
    assert "images.coredns" not in errors[0]
    assert copy.read_text() == locked_text

    # A stack locks only what its nodes pull: the local stack (bridge, app hello) no flannel.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBESMITH_PROJECT", str(REPO))
        code, output = lock(copy, registry, "--check", "-s", "local")
    assert code == 1, output
    checked = set(re.findall(r"^images\.(\S+) ", output, flags=re.MULTILINE))
    assert checked == {"sandbox", "coredns", "smoke", "apps.hello"}

    # Locking again records the moved tag's digest, and the check passes once more.
    code, output = lock(copy, registry)
    assert code == 0, output
    assert "(1 digests recorded)" in output
    served = registry.manifest_digest(f"{smoke.registry}/{smoke.repository}", str(smoke.tag))
    assert pinned_images(yaml.safe_load(copy.read_text()))["smoke"] == str(
        smoke.with_digest(served)
    )
    assert lock(copy, registry, "--check")[0] == 0


def test_an_unknown_tag_and_an_unreachable_mirror_are_one_line_each(
    registry: Registry, tmp_path: Path
) -> None:
    copy = tmp_path / "versions.yaml"
    copy.write_text("images:\n  smoke: docker.io/library/nginx:no-such-tag\n")
    code, output = lock(copy, registry)
    assert code == 1
    assert output.startswith("error: ")
    assert "docker.io/library/nginx:no-such-tag" in output
    assert "Traceback" not in output
    result = runner.invoke(
        app, ["artifacts", "lock", "--versions-file", str(copy), "--registry-mirror", "ftp://x"]
    )
    assert result.exit_code == 2
    assert "--registry-mirror: must be an http(s) URL" in result.output


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_versions_file_the_user_may_not_write_is_refused() -> None:
    # As root every file is writable: run the real CLI as nobody against a root-owned copy.
    directory = Path(tempfile.mkdtemp(prefix="kubesmith-lock-"))
    try:
        directory.chmod(0o755)
        copy = directory / "versions.yaml"
        shutil.copyfile(versions.versions_file(), copy)
        copy.chmod(0o644)
        command = [
            str(Path(sys.executable).with_name("kubesmith")),
            "artifacts",
            "lock",
            "--versions-file",
            str(copy),
        ]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        else:
            copy.chmod(0o444)
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "HOME": str(directory)},
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().splitlines()[0] == (
            f"error: {copy} is not writable: run `kubesmith artifacts lock` as a user who may "
            "write it (kubesmith records digests in the versions.yaml of its own checkout)"
        )
    finally:
        shutil.rmtree(directory)
