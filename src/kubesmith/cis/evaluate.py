"""Judge every benchmark item of one node from what the probe found there, with the evidence."""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from kubesmith.cis.benchmark import (
    Benchmark,
    Check,
    EncryptionRule,
    FileRule,
    Item,
    Role,
    SettingRule,
)
from kubesmith.cis.probe import NodeFile

Status = Literal["pass", "fail", "exception", "not applicable", "manual"]


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    status: Status
    #: What was found (for a check) or why the item is not checked.
    evidence: tuple[str, ...]


def evaluate(benchmark: Benchmark, role: Role, node: Mapping[str, NodeFile]) -> list[Result]:
    """One result per item that applies to ``role``, in the benchmark's order."""
    results = []
    for item in benchmark.for_role(role):
        reasons = [(status, why) for status, why in item.reasons.items() if why is not None]
        if reasons:
            status, why = reasons[0]
            results.append(Result(item.id, item.title, _status(status), (why,)))
            continue
        results.append(_judge(benchmark, item, node))
    return results


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status == "fail"]


def _status(name: str) -> Status:
    statuses: dict[str, Status] = {
        "exception": "exception",
        "not applicable": "not applicable",
        "manual": "manual",
    }
    return statuses[name]


def _judge(benchmark: Benchmark, item: Item, node: Mapping[str, NodeFile]) -> Result:
    passed = True
    evidence: list[str] = []
    for check in item.checks:
        ok, lines = _check(benchmark, check, node)
        passed = passed and ok
        evidence += lines
    return Result(item.id, item.title, "pass" if passed else "fail", tuple(evidence))


def _check(
    benchmark: Benchmark, check: Check, node: Mapping[str, NodeFile]
) -> tuple[bool, list[str]]:
    if check.file is not None:
        return _file(check.file, node)
    if check.setting is not None:
        return _setting(benchmark, check.setting, node)
    assert check.encryption is not None  # validated: one kind per check
    return _encryption(benchmark, check.encryption, node)


# --- files ------------------------------------------------------------------------------------


def _file(rule: FileRule, node: Mapping[str, NodeFile]) -> tuple[bool, list[str]]:
    if rule.path is not None:
        found = node.get(rule.path)
        if found is None:
            return False, [f"{rule.path}: missing"]
        return _file_entry(rule, rule.path, found)
    assert rule.under is not None  # validated: path or under
    below = [(p, e) for p, e in sorted(node.items()) if _judged_below(rule, rule.under, p, e)]
    if not below:
        if rule.optional:
            return True, [f"{rule.under}/{rule.glob}: none (acceptable)"]
        return False, [f"{rule.under}/{rule.glob}: none found"]
    failed: list[str] = []
    for path, entry in below:
        ok, lines = _file_entry(rule, path, entry)
        failed += [] if ok else lines
    return not failed, failed or [f"{rule.under}/{rule.glob}: {len(below)} entries, all as wanted"]


def _judged_below(rule: FileRule, root: str, path: str, entry: NodeFile) -> bool:
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        return False
    if entry.directory:
        return rule.with_directories
    return fnmatch.fnmatch(path.rsplit("/", 1)[-1], rule.glob)


def _file_entry(rule: FileRule, path: str, entry: NodeFile) -> tuple[bool, list[str]]:
    problems = []
    allowed = rule.max_mode
    if allowed is not None and entry.mode & ~allowed:
        problems.append(f"mode {entry.mode:o}, wanted {allowed:o} or more restrictive")
    owner = f"{entry.owner}:{entry.group}"
    if rule.owners and owner not in rule.owners:
        problems.append(f"owned by {owner}, wanted {' or '.join(rule.owners)}")
    if problems:
        return False, [f"{path}: {'; '.join(problems)}"]
    return True, [f"{path}: mode {entry.mode:o}, {owner}"]


# --- settings ---------------------------------------------------------------------------------


def exec_start_flags(unit_text: str) -> dict[str, str]:
    """``--flag=value`` and ``--flag value`` arguments of a unit's ExecStart (a bare flag maps
    to "true"); continuation lines are joined."""
    lines: list[str] = []
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not lines and not line.startswith("ExecStart="):
            continue
        lines.append(line.removeprefix("ExecStart=").removesuffix("\\"))
        if not line.endswith("\\"):
            break
    words = shlex.split(" ".join(lines))[1:]
    flags: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            continue
        name, equals, value = word[2:].partition("=")
        if not equals:
            following = words[index] if index < len(words) else "--"
            value = "true" if following.startswith("--") else following
            index += 0 if following.startswith("--") else 1
        flags[name] = value.replace("%%", "%").replace("$$", "$")
    return flags


class _Missing(Exception):
    """What a setting needs is not on the node (a unit, or its configuration file)."""


def _unit_flags(
    benchmark: Benchmark, component: str, node: Mapping[str, NodeFile]
) -> dict[str, str]:
    unit = benchmark.components[component].unit
    found = node.get(unit)
    if found is None or found.text is None:
        raise _Missing(f"{component}: unit {unit} missing")
    return exec_start_flags(found.text)


def _config(
    benchmark: Benchmark, component: str, flag: str, node: Mapping[str, NodeFile]
) -> tuple[str, Any]:
    path = _unit_flags(benchmark, component, node).get(flag)
    if path is None:
        raise _Missing(f"{component}: its unit has no --{flag}")
    found = node.get(path)
    if found is None or found.text is None:
        raise _Missing(f"{component}: {path} (--{flag}) missing")
    return path, yaml.safe_load(found.text)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _setting_value(
    benchmark: Benchmark, rule: SettingRule, node: Mapping[str, NodeFile]
) -> tuple[str, str | None]:
    """(where the value came from, the value or None when unset). A unit flag wins over the
    configuration file, as in the components themselves."""
    unit_flags = _unit_flags(benchmark, rule.component, node)
    if rule.flag is not None and (rule.key is None or rule.flag in unit_flags):
        return f"{rule.component} --{rule.flag}", unit_flags.get(rule.flag)
    assert rule.key is not None
    config_flag = benchmark.components[rule.component].config_flag
    assert config_flag is not None  # validated in Benchmark
    path, data = _config(benchmark, rule.component, config_flag, node)
    value = _lookup(data, rule.key)
    return f"{rule.component} {rule.key} ({path})", None if value is None else _text(value)


_ZERO_DURATION = re.compile(r"(?:0+(?:\.0*)?(?:h|m|s|ms|us|ns)?)+")


def _meets(rule: SettingRule, value: str) -> tuple[bool, str]:
    kind, wanted = rule.expectation
    elements = [e.strip() for e in value.split(",")]
    if kind == "equals":
        # Booleans are spelt either way on command lines (--profiling=False).
        boolean = str(wanted) in ("true", "false")
        same = value.lower() == wanted if boolean else value == str(wanted)
        return same, f"wanted {wanted}"
    if kind == "not_equals":
        zero = str(wanted) == "0" and _ZERO_DURATION.fullmatch(value) is not None
        return value != str(wanted) and not zero, f"wanted anything but {wanted}"
    if kind == "includes":
        return str(wanted) in elements, f"wanted it to include {wanted}"
    if kind == "excludes":
        return str(wanted) not in elements, f"wanted it not to include {wanted}"
    if kind == "contains":
        return str(wanted) in value, f"wanted it to contain {wanted}"
    if kind == "at_least":
        assert isinstance(wanted, int)
        try:
            return int(value) >= wanted, f"wanted {wanted} or more"
        except ValueError:
            return False, f"wanted a number, {wanted} or more"
    if kind == "within":
        assert isinstance(wanted, tuple)
        outside = [e for e in elements if e not in wanted]
        return not outside, f"not allowed: {', '.join(outside)}" if outside else "all allowed"
    # set: true (present) -- absent values never reach here
    return bool(wanted) and value != "", "wanted it set" if wanted else "wanted it unset"


def _setting(
    benchmark: Benchmark, rule: SettingRule, node: Mapping[str, NodeFile]
) -> tuple[bool, list[str]]:
    try:
        where, value = _setting_value(benchmark, rule, node)
    except _Missing as missing:
        return False, [str(missing)]
    if value is None:
        kind, wanted = rule.expectation
        if rule.unset_passes or (kind == "set" and wanted is False):
            return True, [f"{where}: unset (acceptable)"]
        return False, [f"{where}: unset"]
    ok, wanted_text = _meets(rule, value)
    shown = value if len(value) <= 120 else value[:117] + "..."
    return ok, [f"{where}={shown}" + ("" if ok else f": {wanted_text}")]


def _encryption(
    benchmark: Benchmark, rule: EncryptionRule, node: Mapping[str, NodeFile]
) -> tuple[bool, list[str]]:
    try:
        path, data = _config(benchmark, rule.component, rule.flag, node)
    except _Missing as missing:
        return False, [str(missing)]
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(resources, list) or not resources:
        return False, [f"{path}: no resources"]
    firsts = []
    for resource in resources:
        providers = resource.get("providers") if isinstance(resource, dict) else None
        first = providers[0] if isinstance(providers, list) and providers else None
        firsts.append(next(iter(first)) if isinstance(first, dict) and first else "none")
    outside = [p for p in firsts if p not in rule.within]
    line = f"{path}: first providers {', '.join(firsts)}"
    if outside:
        return False, [f"{line}: wanted one of {', '.join(rule.within)}"]
    return True, [line]
