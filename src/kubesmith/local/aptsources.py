"""Debian package sources for the node image, taken from the host's own apt configuration.

The project never names a mirror: debootstrap and the nodes' apt use whatever Debian archive
this machine's apt already uses (``/etc/apt/sources.list`` and ``sources.list.d/*.list`` or
``*.sources``), or the mirror URL in $KUBESMITH_DEBIAN_MIRROR. Only Debian archive entries
are kept (a third-party repository on the host does not leak into nodes) and their suites are
rewritten to the image's release, so a trixie host can still build bookworm nodes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubesmith.errors import UserError

MIRROR_ENV = "KUBESMITH_DEBIAN_MIRROR"
_CODENAMES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
    | {"oldoldstable", "oldstable", "stable", "testing", "unstable"}
)
#: Pockets a node gets: the release itself, its point updates and security fixes.
_POCKETS = ("", "-updates", "-security")
_SUITE = re.compile(r"^(?P<codename>[a-z]+)(?P<pocket>-[a-z-]+)?$")
#: Keyrings the image has (debian-archive-keyring); other Signed-By paths would not exist there.
_IMAGE_KEYRINGS = "/usr/share/keyrings/debian-archive-"


@dataclass(frozen=True)
class AptSource:
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_deb822(text: str) -> list[AptSource]:
    """The binary (``Types: deb``) entries of a ``.sources`` file; disabled ones left out."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key is not None:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        sources.append(
            AptSource(
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                signed_by=fields.get("signed-by") or None,
            )
        )
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """The ``deb`` lines of a ``sources.list`` (``deb [options] URI SUITE COMPONENT...``)."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[len("deb ") :].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                name, _, value = option.partition("=")
                options[name.lower()] = value
        words = rest.split()
        if len(words) < 2:
            continue
        sources.append(
            AptSource(
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=options.get("signed-by") or None,
            )
        )
    return sources


def read_host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every binary source apt reads on this host, in apt's own order."""
    sources = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line(main_list.read_text(encoding="utf-8"))
    parts = etc_apt / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else []:
        if path.suffix == ".list":
            sources += parse_one_line(path.read_text(encoding="utf-8"))
        elif path.suffix == ".sources":
            sources += parse_deb822(path.read_text(encoding="utf-8"))
    return sources


def _node_suite(suite: str, release: str) -> str | None:
    match = _SUITE.fullmatch(suite)
    if match is None or match["codename"] not in _CODENAMES:
        return None
    pocket = match["pocket"] or ""
    return release + pocket if pocket in _POCKETS else None


def debian_sources(sources: Iterable[AptSource], release: str) -> list[AptSource]:
    """The Debian archive entries of ``sources``, suites rewritten to ``release``."""
    kept: list[AptSource] = []
    for source in sources:
        suites = tuple(
            dict.fromkeys(s for s in (_node_suite(x, release) for x in source.suites) if s)
        )
        if not suites:
            continue
        signed_by = source.signed_by
        if signed_by and not signed_by.startswith(_IMAGE_KEYRINGS):
            signed_by = None
        entry = AptSource(source.uris, suites, source.components or ("main",), signed_by)
        if entry not in kept:
            kept.append(entry)
    return kept


def image_sources(
    release: str,
    etc_apt: Path = Path("/etc/apt"),
    mirror_override: str | None = None,
) -> list[AptSource]:
    """The apt sources for nodes: $KUBESMITH_DEBIAN_MIRROR when set, else the host's Debian."""
    override = mirror_override if mirror_override is not None else os.environ.get(MIRROR_ENV)
    if override:
        return [AptSource((override.rstrip("/"),), (release, f"{release}-updates"), ("main",))]
    sources = debian_sources(read_host_sources(etc_apt), release)
    if not any(release in s.suites for s in sources):
        raise UserError(
            f"no Debian archive among the apt sources in {etc_apt} to build the node image from; "
            f"set {MIRROR_ENV} to a Debian mirror URL"
        )
    return sources


def archive_mirror(sources: Sequence[AptSource], release: str) -> str:
    """The URI that serves ``release`` itself: what debootstrap installs from."""
    for source in sources:
        if release in source.suites and source.uris:
            return source.uris[0]
    raise UserError(f"no apt source serves Debian {release}; set {MIRROR_ENV}")


def render_deb822(sources: Iterable[AptSource]) -> str:
    stanzas = []
    for source in sources:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(source.uris)}",
            f"Suites: {' '.join(source.suites)}",
            f"Components: {' '.join(source.components)}",
        ]
        if source.signed_by:
            lines.append(f"Signed-By: {source.signed_by}")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)
