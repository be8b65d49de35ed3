"""Container images pinned by digest: `kubesmith artifacts lock [--check]`.

versions.yaml pins every image the cluster runs as ``registry/repository:tag@sha256:digest``.
The tag says what it is; the digest decides what runs. `lock` asks the registry (or a mirror
of it) which manifest each pinned tag points at and records that digest in versions.yaml, line
by line, so comments and layout stay; `lock --check` only compares and reports drift: a
recorded digest the registry no longer serves for its tag.

The registries are read with skopeo (Debian packages it): it speaks every registry's token
authentication (docker.io, ghcr.io, registry.k8s.io's redirects), honours the user's
registry credentials and containers-registries.conf, and ``inspect --raw`` returns the
manifest exactly as served. The digest is the sha256 of those bytes: for a multi-platform
image that is the index's digest, the one a pull by tag resolves, whatever the controller's
own platform is.

A registry mirror is given the way ``artifacts.mirrorBaseUrl`` gives a file mirror: a URL
under which every upstream path sits below its host, here
``<mirror>/<registry>/<repository>:<tag>`` (e.g. ``http://127.0.0.1:5000/registry.k8s.io/
pause:3.10``). An ``http`` mirror is read without TLS, an ``https`` one with it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from kubesmith.errors import KubesmithError, ToolMissingError, UserError
from kubesmith.state.files import atomic_write

#: What a pinned digest looks like (the only algorithm registries use for manifests).
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Seconds one skopeo call may take (token exchange plus one manifest).
SKOPEO_TIMEOUT = 120.0
_MIRROR = re.compile(r"(?P<scheme>https?)://(?P<host>[^/\s]+)(?P<prefix>(?:/[^\s/]+)*)/?")


@dataclass(frozen=True)
class ImageRef:
    """``registry/repository[:tag][@digest]``; the registry is always named (no implicit
    docker.io: every pin says where it comes from)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        name, _, digest = text.partition("@")
        tag = None
        head, _, last = name.rpartition("/")
        if ":" in last:
            last, tag = last.split(":", 1)
            name = f"{head}/{last}" if head else last
        registry, _, repository = name.partition("/")
        if not repository or not ("." in registry or ":" in registry or registry == "localhost"):
            raise ValueError(f"{text!r} names no registry (write registry/repository:tag)")
        if digest and not DIGEST.fullmatch(digest):
            raise ValueError(f"{text!r}: the digest must be sha256:<64 hex digits>")
        if not tag and not digest:
            raise ValueError(f"{text!r} has neither a tag nor a digest")
        return cls(registry, repository, tag or None, digest or None)

    @property
    def tagged(self) -> str:
        """``registry/repository:tag``, what `lock` resolves."""
        return f"{self.registry}/{self.repository}:{self.tag}"

    def with_digest(self, digest: str) -> ImageRef:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class RegistryMirror:
    """Where a mirror holds each upstream image: ``<host><prefix>/<registry>/<repository>``."""

    host: str
    prefix: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> RegistryMirror:
        found = _MIRROR.fullmatch(url)
        if found is None:
            raise UserError(
                "--registry-mirror: must be an http(s) URL such as "
                f"https://mirror.example:5000 or https://mirror.example/prefix, got {url!r}"
            )
        return cls(found["host"], found["prefix"], tls=found["scheme"] == "https")

    def location(self, ref: ImageRef) -> str:
        return f"{self.host}{self.prefix}/{ref.registry}/{ref.repository}:{ref.tag}"


def pinned_images(data: Mapping[str, Any]) -> dict[str, str]:
    """versions.yaml's ``images:`` as ``key -> reference``: ``sandbox``, ``apps.hello``..."""
    section = data.get("images") or {}
    found = {k: str(v) for k, v in section.items() if isinstance(v, str)}
    apps = section.get("apps") or {}
    found.update({f"apps.{app}": str(ref) for app, ref in apps.items()})
    return found


def read_pins(path: Path) -> dict[str, ImageRef]:
    """Every image pinned in the versions file ``path``, parsed; bad references are named."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None
    pins: dict[str, ImageRef] = {}
    problems = []
    for key, text in pinned_images(data if isinstance(data, Mapping) else {}).items():
        try:
            pins[key] = ImageRef.parse(text)
        except ValueError as exc:
            problems.append(f"{path}: images.{key}: {exc}")
            continue
        if pins[key].tag is None:
            problems.append(f"{path}: images.{key}: {text!r} has no tag to resolve")
    if problems:
        raise UserError("; ".join(problems))
    return pins


def served_digest(location: str, *, tls: bool = True, timeout: float = SKOPEO_TIMEOUT) -> str:
    """The digest of the manifest the registry serves for ``location`` (host/repository:tag)."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ToolMissingError(
            "skopeo is not installed (kubesmith reads image digests from registries with it)",
            hint="apt-get install -y skopeo",
        )
    command = [skopeo, "inspect", "--raw", f"--tls-verify={str(tls).lower()}"]
    try:
        result = subprocess.run(
            [*command, f"docker://{location}"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KubesmithError(
            f"{location}: the registry did not answer in {timeout:.0f} s"
        ) from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise KubesmithError(f"{location}: cannot read its manifest: {lines[-1]}")
    return "sha256:" + hashlib.sha256(result.stdout).hexdigest()


def check_writable(path: Path) -> None:
    """Refuse, in one line, to lock into a file kubesmith could not replace."""
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(
            f"{path} is not writable: run `kubesmith artifacts lock` as a user who may write "
            "it (kubesmith records digests in the versions.yaml of its own checkout)"
        )


def _images_block(lines: list[str]) -> range:
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "images:"), None)
    if start is None:
        return range(0)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "#", "\n")),
        len(lines),
    )
    return range(start + 1, end)


def record_digests(path: Path, updates: Mapping[str, str]) -> None:
    """Replace the references of ``updates`` (key -> new reference) in ``path`` in place.

    Each image is one ``key: reference`` line of the ``images:`` block; only that reference
    changes, so comments, order and layout stay. The result is parsed again and must hold
    exactly the new references, or nothing is written.
    """
    text = path.read_text(encoding="utf-8")
    old = pinned_images(yaml.safe_load(text))
    lines = text.splitlines(keepends=True)
    block = _images_block(lines)
    for key, new in updates.items():
        leaf = key.rsplit(".", 1)[-1]
        line = re.compile(rf"^(\s+{re.escape(leaf)}:\s+)(['\"]?){re.escape(old[key])}\2(\s*)$")
        found = [i for i in block if line.match(lines[i])]
        if len(found) != 1:
            raise KubesmithError(
                f"{path}: images.{key} is not one `{leaf}: <reference>` line; "
                "record its digest by hand"
            )
        match = line.match(lines[found[0]])
        assert match is not None
        lines[found[0]] = f"{match[1]}{match[2]}{new}{match[2]}{match[3]}"
    written = "".join(lines)
    if pinned_images(yaml.safe_load(written)) != {**old, **updates}:
        raise KubesmithError(f"{path}: recording the digests would change more; nothing written")
    atomic_write(path, written.encode(), path.stat().st_mode & 0o777)


@dataclass(frozen=True)
class LockResult:
    """One image: what versions.yaml records and what the registry serves for its tag."""

    key: str
    pinned: ImageRef
    served: str

    @property
    def locked(self) -> ImageRef:
        return self.pinned.with_digest(self.served)

    @property
    def status(self) -> str:
        if self.pinned.digest is None:
            return "no digest recorded"
        return "unchanged" if self.pinned.digest == self.served else "drift"


def resolve(ref: ImageRef, mirror: RegistryMirror | None = None) -> str:
    """What the registry (or ``mirror``) serves for ``ref``'s tag."""
    if mirror is None:
        return served_digest(ref.tagged)
    return served_digest(mirror.location(ref), tls=mirror.tls)
