"""Read access to versions.yaml, the single source of versions and checksums."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import yaml

from kubesmith.resources import package_file

ArchiveFormat = Literal["tar.gz", "binary"]


def versions_file() -> Path:
    """versions.yaml itself: in a source checkout, the checkout's (`artifacts lock` writes it)."""
    return package_file("versions.yaml")


@cache
def load() -> dict[str, Any]:
    with versions_file().open(encoding="utf-8") as fh:
        return cast(dict[str, Any], yaml.safe_load(fh))


#: The architectures kubesmith installs on: every pin names a published checksum for each.
ARCHITECTURES = ("amd64", "arm64")


def kubernetes_versions() -> list[str]:
    """Kubernetes versions kubesmith can install, newest first.

    Only versions whose server tarball (where every binary comes from) has a published
    checksum pinned for every architecture: an entry without one is not offered at all.
    """
    listed = load()["kubernetes"]["versions"]
    installable = [
        str(v)
        for v, pins in listed.items()
        if set(ARCHITECTURES) <= set((pins or {}).get("server") or {})
    ]
    return sorted(installable, key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)


def default_kubernetes_version() -> str:
    return str(load()["kubernetes"]["default"])


def mirrored(upstream: str, mirror_base_url: str | None) -> str:
    """``upstream``, or its copy under ``mirror_base_url``/<host>/<path> when a mirror is set."""
    if not mirror_base_url:
        return upstream
    parts = urlsplit(upstream)
    return f"{mirror_base_url.rstrip('/')}/{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class Component:
    """One release pinned in versions.yaml: a node component (etcd, containerd, runc, ...) or a
    Pulumi tool (the CLI, a provider plugin)."""

    name: str
    version: str
    url_template: str
    format: ArchiveFormat
    #: Path inside the download (templated like the URL) -> file name installed on the node.
    binaries: Mapping[str, str]
    sha256: Mapping[str, str]
    #: Debian packages that provide it; empty when Debian does not package the component.
    distro_packages: tuple[str, ...]
    #: kubesmith's architecture name -> the release's own, where they differ (x64 for amd64).
    arch_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(sorted(self.sha256))

    def _fill(self, template: str, arch: str) -> str:
        release_arch = self.arch_names.get(arch, arch)
        return template.replace("{version}", self.version).replace("{arch}", release_arch)

    def checksum(self, arch: str) -> str:
        try:
            return self.sha256[arch]
        except KeyError:
            known = ", ".join(self.architectures)
            raise KeyError(
                f"{self.name} {self.version}: no published checksum for architecture {arch!r} "
                f"(pinned: {known})"
            ) from None

    def url(self, arch: str, mirror_base_url: str | None = None) -> str:
        """The upstream URL, or its copy under ``mirror_base_url``/<host>/<path>."""
        return mirrored(self._fill(self.url_template, arch), mirror_base_url)

    def filename(self, arch: str) -> str:
        return self._fill(self.url_template, arch).rsplit("/", 1)[-1]

    def installed_binaries(self, arch: str) -> dict[str, str]:
        """Path inside the download -> name on the node, for this architecture."""
        return {self._fill(src, arch): dest for src, dest in self.binaries.items()}


def _component(name: str, data: Mapping[str, Any]) -> Component:
    distro = data.get("distro") or {}
    return Component(
        name=name,
        version=str(data["version"]),
        url_template=str(data["url"]),
        format=cast(ArchiveFormat, data["format"]),
        binaries={str(k): str(v) for k, v in data["binaries"].items()},
        sha256={str(k): str(v) for k, v in data["sha256"].items()},
        distro_packages=tuple(str(p) for p in distro.get("packages", ())),
        arch_names={str(k): str(v) for k, v in (data.get("arch_names") or {}).items()},
    )


def components() -> dict[str, Component]:
    """Every node component, by name, in the order versions.yaml lists them."""
    return {name: _component(name, data) for name, data in load()["components"].items()}


def component(name: str) -> Component:
    found = components().get(name)
    if found is None:
        raise KeyError(f"versions.yaml pins no component {name!r}")
    return found


def pulumi_cli() -> Component:
    """The Pulumi CLI release kubesmith installs when no supported `pulumi` is on PATH."""
    return _component("pulumi", load()["pulumi"]["cli"])


def pulumi_plugins() -> dict[str, Component]:
    """The provider plugins the Pulumi program loads, by plugin name (aws, kubernetes)."""
    plugins = load()["pulumi"]["plugins"].items()
    return {name: _component(f"pulumi-resource-{name}", data) for name, data in plugins}


def sandbox_image() -> str:
    return str(load()["images"]["sandbox"])


@dataclass(frozen=True)
class KubernetesRelease:
    """The Kubernetes server tarball of one version: every binary nodes and control planes run."""

    version: str
    url_template: str
    #: Digest algorithm of the published checksums (the release notes publish sha512).
    algorithm: str
    #: Architecture -> published checksum; empty when no checksum could be obtained.
    checksums: Mapping[str, str]
    #: Directory of the binaries inside the tarball.
    member_prefix: str
    binaries: tuple[str, ...]

    def url(self, arch: str, mirror_base_url: str | None = None) -> str:
        upstream = self.url_template.replace("{version}", self.version).replace("{arch}", arch)
        return mirrored(upstream, mirror_base_url)

    def filename(self, arch: str) -> str:
        return self.url(arch).rsplit("/", 1)[-1]

    def checksum(self, arch: str) -> str:
        try:
            return self.checksums[arch]
        except KeyError:
            pinned = ", ".join(sorted(self.checksums)) or "none"
            raise KeyError(
                f"kubernetes {self.version}: no published {self.algorithm} of the server "
                f"tarball for architecture {arch!r} is pinned in versions.yaml (pinned: {pinned})"
            ) from None


def kubernetes_release(version: str) -> KubernetesRelease:
    section = load()["kubernetes"]
    pins = section["versions"].get(version)
    if pins is None:
        raise KeyError(f"versions.yaml pins no Kubernetes {version}")
    release = section["server_release"]
    return KubernetesRelease(
        version=version,
        url_template=str(release["url"]),
        algorithm=str(release["checksum"]),
        checksums={str(a): str(h) for a, h in (pins.get("server") or {}).items()},
        member_prefix=str(release["member_prefix"]),
        binaries=tuple(str(b) for b in release["binaries"]),
    )


def image(name: str) -> str:
    """A container image pinned under `images:` (sandbox, coredns, smoke, flannel...)."""
    images = {key: value for key, value in load()["images"].items() if isinstance(value, str)}
    if name not in images:
        raise KeyError(f"versions.yaml pins no image {name!r} (images: {', '.join(images)})")
    return str(images[name])


def app_image(app: str) -> str | None:
    """The image pinned for a shipped app (`images.apps.<app>`), None when there is none."""
    found = (load()["images"].get("apps") or {}).get(app)
    return None if found is None else str(found)


def minor_of(version: str) -> tuple[int, int]:
    """(major, minor) of a version such as 1.35.1 or 1.35: the one place that parses it."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)
