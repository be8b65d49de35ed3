"""Check Kubernetes component flags against component_flags.yaml for a cluster's minor.

Used on what the roles render (the integration tests parse the units on real nodes) and on
the extra flags a user adds (``<role>_extra_args`` in the inventory), before any node changes.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, cast

import yaml

from kubesmith.resources import package_file
from kubesmith.versions import minor_of

COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
#: Inventory variable holding extra flags per component, e.g. {kube-apiserver: {v: "4"}}.
EXTRA_ARGS_VAR = "kubesmith_extra_args"


@cache
def _data() -> dict[str, Any]:
    path = package_file("provision", "component_flags.yaml")
    return cast(dict[str, Any], yaml.safe_load(path.read_text(encoding="utf-8")))


def known_flags(component: str, minor: str) -> frozenset[str]:
    """Flags of ``component`` that kubesmith knows to be valid in ``minor``."""
    entry = _data()[component]
    flags = set(entry["flags"])
    flags.update(
        f for f, first in (entry.get("added") or {}).items() if minor_of(minor) >= minor_of(first)
    )
    return frozenset(flags)


def problems(component: str, minor: str, flags: Iterable[str]) -> list[str]:
    """One line per flag that ``component`` in ``minor`` does not accept."""
    if component not in _data():
        return [f"unknown component {component!r} (components: {', '.join(COMPONENTS)})"]
    entry = _data()[component]
    known = known_flags(component, minor)
    removed = entry.get("removed") or {}
    added = entry.get("added") or {}
    found = []
    for flag in flags:
        if flag in known:
            continue
        if flag in removed and minor_of(minor) >= minor_of(removed[flag]["in"]):
            found.append(
                f"{component} --{flag} was removed in {removed[flag]['in']} "
                f"({removed[flag]['note']})"
            )
        elif flag in added:
            found.append(f"{component} --{flag} only exists from {added[flag]} on, not in {minor}")
        else:
            found.append(f"{component} --{flag} is not a flag kubesmith knows for {minor}")
    return found


def parse_exec_start(unit_text: str) -> tuple[str, dict[str, str]]:
    """The binary and its ``--flag=value`` arguments from a unit's ExecStart, as systemd
    passes them: continuations joined, quotes removed, ``%%`` and ``$$`` undoubled. A flag
    without ``=`` maps to "true"."""
    lines: list[str] = []
    collecting = False
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("ExecStart="):
            collecting = True
            line = line[len("ExecStart=") :]
        elif not collecting:
            continue
        lines.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            break
    if not lines:
        raise ValueError("no ExecStart= line")
    words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(" ".join(lines))]
    flags: dict[str, str] = {}
    for word in words[1:]:
        if not word.startswith("--"):
            raise ValueError(f"unexpected argument {word!r} (kubesmith passes --flag=value only)")
        name, _, value = word[2:].partition("=")
        flags[name] = value if "=" in word else "true"
    return words[0], flags


def extra_args_problems(
    extra_args: Mapping[str, Mapping[str, Any]], minor: str, where: str
) -> list[str]:
    """Problems in the user's ``kubesmith_extra_args``, each naming where it was written."""
    found = []
    for component, flags in extra_args.items():
        if component not in COMPONENTS:
            found.append(
                f"{where}: {EXTRA_ARGS_VAR}.{component}: not a component ({', '.join(COMPONENTS)})"
            )
            continue
        if not isinstance(flags, Mapping):
            found.append(f"{where}: {EXTRA_ARGS_VAR}.{component}: must map flag names to values")
            continue
        names = [str(f).removeprefix("--") for f in flags]
        refused = _data()[component].get("refused") or {}
        for flag in names:
            if flag in refused:
                found.append(
                    f"{where}: {EXTRA_ARGS_VAR}.{component}: --{flag} is refused: {refused[flag]}"
                )
        allowed = [flag for flag in names if flag not in refused]
        for problem in problems(component, minor, allowed):
            found.append(f"{where}: {EXTRA_ARGS_VAR}.{component}: {problem}")
    return found
