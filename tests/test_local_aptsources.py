"""Debian sources for the node image, derived from the host's apt configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesmith.errors import UserError
from kubesmith.local.aptsources import (
    MIRROR_ENV,
    AptSource,
    archive_mirror,
    debian_sources,
    image_sources,
    parse_deb822,
    parse_one_line,
    read_host_sources,
    render_deb822,
)

# Mirror names below are placeholders under the reserved .example domain.
DEB822 = """\
Types: deb deb-src
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# a comment between stanzas
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5Nd
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://mirror.example/disabled
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://mirror.example/sources-only
Suites: bookworm
Components: main
"""

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ONE_LINE = f"""\
# comment
deb [arch=amd64 signed-by={KEYRING}] http://mirror.example/debian trixie main non-free-firmware
deb-src http://mirror.example/debian trixie main
deb http://mirror.example/debian-security trixie-security main # trailing comment
deb http://mirror.example/debian trixie-backports main
deb https://vendor.example/apt nodistro main
"""


def test_deb822_keeps_enabled_binary_entries_and_their_fields() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uris for s in sources] == [
        ("http://mirror.example/debian",),
        ("http://mirror.example/debian-security",),
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].components == ("main", "contrib")
    assert sources[0].signed_by == KEYRING
    # A multi-line field (an inline key) is read whole, not cut at its first line.
    assert sources[1].signed_by is not None
    assert sources[1].signed_by.endswith("-----END PGP PUBLIC KEY BLOCK-----")


def test_one_line_format_reads_options_and_skips_deb_src_and_comments() -> None:
    sources = parse_one_line(ONE_LINE)
    assert [(s.uris[0], s.suites) for s in sources] == [
        ("http://mirror.example/debian", ("trixie",)),
        ("http://mirror.example/debian-security", ("trixie-security",)),
        ("http://mirror.example/debian", ("trixie-backports",)),
        ("https://vendor.example/apt", ("nodistro",)),
    ]
    assert sources[0].components == ("main", "non-free-firmware")
    assert sources[0].signed_by == KEYRING


def test_only_debian_suites_survive_rewritten_to_the_image_release() -> None:
    kept = debian_sources(parse_one_line(ONE_LINE), "bookworm")
    # trixie -> bookworm, trixie-security -> bookworm-security; backports and the vendor
    # repository are not something a node should get.
    assert [(s.uris[0], s.suites) for s in kept] == [
        ("http://mirror.example/debian", ("bookworm",)),
        ("http://mirror.example/debian-security", ("bookworm-security",)),
    ]


def test_keyrings_the_image_lacks_are_dropped() -> None:
    inline = parse_deb822(DEB822)[1]
    vendor = AptSource(("http://mirror.example/debian",), ("bookworm",), ("main",), "/etc/k.gpg")
    kept = debian_sources([inline, vendor], "bookworm")
    assert [s.signed_by for s in kept] == [None, None]


def test_host_sources_are_read_like_apt_does(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://mirror.example/debian bookworm main\n", encoding="utf-8"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822, encoding="utf-8")
    # apt ignores files with other suffixes, so must we.
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text(
        "deb http://mirror.example/ignored bookworm main\n", encoding="utf-8"
    )
    uris = [s.uris[0] for s in read_host_sources(tmp_path)]
    assert uris == [
        "http://mirror.example/debian",
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]


def test_image_sources_and_debootstrap_mirror_from_the_host(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822, encoding="utf-8")
    sources = image_sources("bookworm", tmp_path, mirror_override="")
    assert archive_mirror(sources, "bookworm") == "http://mirror.example/debian"
    rendered = render_deb822(sources)
    assert parse_deb822(rendered) == sources
    assert "mirror.example/debian-security" in rendered


def test_mirror_setting_overrides_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, "http://other.example/debian/")
    (sources,) = image_sources("bookworm", tmp_path)
    assert sources.uris == ("http://other.example/debian",)
    assert sources.suites == ("bookworm", "bookworm-updates")


def test_no_debian_source_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb https://vendor.example/apt nodistro main\n", encoding="utf-8"
    )
    with pytest.raises(UserError, match=MIRROR_ENV):
        image_sources("bookworm", tmp_path, mirror_override="")
