"""debootstrap's output condensed to one status line, checked on a recorded real run.

tests/recorded/debootstrap-bookworm-minbase.txt is the ``I:`` output of the node image's
debootstrap (bookworm, minbase plus the image's packages; mirror host replaced).
"""

from __future__ import annotations

from pathlib import Path

from kubesmith.local.debootstrap import DebootstrapProgress

RECORDED = Path(__file__).resolve().parent / "recorded" / "debootstrap-bookworm-minbase.txt"


def _statuses(lines: list[str]) -> tuple[DebootstrapProgress, list[str]]:
    watch = DebootstrapProgress()
    shown = [watch.status for line in lines if watch.feed(line)]
    return watch, shown


def test_a_recorded_run_is_condensed_to_stages_and_package_counts() -> None:
    lines = RECORDED.read_text(encoding="utf-8").splitlines(keepends=True)
    watch, shown = _statuses(lines)
    # Each stage once, in debootstrap's order; per-package lines only move the count.
    stages = [s for s in shown if s.split()[0] not in watch.counts]
    assert stages == [
        "target architecture can be executed",
        "retrieving InRelease",
        "checking Release signature",
        "valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)",
        "retrieving Packages",
        "resolving dependencies of required packages",
        "resolving dependencies of base packages",
        "checking component main on http://mirror.example/debian",
        "chosen extractor for .deb packages: dpkg-deb",
        "installing core packages",
        "unpacking required packages",
        "configuring required packages",
        "unpacking the base system",
        "configuring the base system",
        "base system installed, 146 packages",
    ]
    assert "retrieved 87 packages" in shown
    assert shown[shown.index("retrieved 1 package") - 1] == stages[7]
    # Validating lines (one per package) and stage headers are not counted as packages.
    assert watch.counts == {"retrieved": 146, "extracted": 88, "unpacked": 130, "configured": 133}
    assert watch.status == "base system installed, 146 packages"


def test_counts_rise_by_one_per_package_line() -> None:
    _, shown = _statuses(
        [
            "I: Retrieving adduser 3.134\n",
            "I: Validating adduser 3.134\n",
            "I: Retrieving apt 2.6.1\n",
            "I: Unpacking required packages...\n",
            "I: Unpacking adduser...\n",
            "I: Unpacking the base system...\n",
            "I: Unpacking apt...\n",
        ]
    )
    assert shown == [
        "retrieved 1 package",
        "retrieved 2 packages",
        "unpacking required packages",
        "unpacked 1 package",
        "unpacking the base system",
        "unpacked 2 packages",
    ]


def test_lines_that_are_not_information_change_nothing() -> None:
    watch = DebootstrapProgress()
    assert not watch.feed("W: Failure trying to run: chroot ... mount -t proc\n")
    assert not watch.feed("dpkg: warning: something\n")
    assert not watch.feed("I: Validating Packages \n")
    assert watch.status == "starting"
