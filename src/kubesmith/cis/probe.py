"""What one node has, gathered in one SSH round trip: a Python script for the node's python3.

The request names files to read (units: their flags), files to stat only (mode and owner:
kubeconfigs and the like are never read), trees (mode and owner of everything below a
directory) and units whose flags name further files to read (a component's configuration
file). Private keys (``*.key``) are never read, and every ``secret:`` value (the keys of an
EncryptionConfiguration) is blanked on the node, so no key leaves it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from kubesmith.cis.benchmark import Benchmark, Role

#: Files larger than this are stat'ed but not read (configuration files are a few KiB).
_MAX_TEXT = 1 << 20

_SCRIPT = r"""
import fnmatch, grp, json, os, pwd, re, stat, sys

request = json.loads(sys.argv[1])
found = {}

def name(table, ident):
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)

def record(path, read):
    try:
        st = os.lstat(path)
    except OSError:
        return
    entry = {"mode": stat.S_IMODE(st.st_mode), "owner": name(pwd.getpwuid, st.st_uid),
             "group": name(grp.getgrgid, st.st_gid), "directory": stat.S_ISDIR(st.st_mode),
             "text": None}
    if read and stat.S_ISREG(st.st_mode) and not path.endswith(".key") and st.st_size <= MAX:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        entry["text"] = re.sub(r"(?m)^(\s*(?:-\s+)?secret:\s*)\S.*$", r"\1REDACTED", text)
    found[path] = entry

for path in request["files"]:
    record(path, True)
for path in request["stats"]:
    if path not in found:
        record(path, False)
for root in request["trees"]:
    for top, dirs, files in os.walk(root):
        for entry in [top] + [os.path.join(top, f) for f in files]:
            record(entry, False)
for unit, flag in request["follow"]:
    text = (found.get(unit) or {}).get("text") or ""
    match = re.search("--" + re.escape(flag) + r"[= ]+(\S+)", text)
    if match:
        record(match.group(1).strip("'\"\\"), True)
print(json.dumps(found))
"""


@dataclass(frozen=True)
class NodeFile:
    mode: int
    owner: str
    group: str
    directory: bool
    #: None for directories, private keys and files that were not asked to be read.
    text: str | None


@dataclass(frozen=True)
class Request:
    #: Read: units (their flags).
    files: tuple[str, ...]
    #: Mode and owner only.
    stats: tuple[str, ...]
    trees: tuple[str, ...]
    #: (unit file, flag): read the file the unit's flag names too.
    follow: tuple[tuple[str, str], ...]

    def command(self) -> str:
        """A shell command for the node: prints what it found as one JSON document."""
        script = _SCRIPT.replace("MAX", str(_MAX_TEXT))
        payload = json.dumps(
            {
                "files": self.files,
                "stats": self.stats,
                "trees": self.trees,
                "follow": [list(f) for f in self.follow],
            }
        )
        return f"python3 -c {shlex.quote(script)} {shlex.quote(payload)}"


def request_for(benchmark: Benchmark, role: Role) -> Request:
    """Everything the items of ``role`` look at."""
    files: dict[str, None] = {}
    stats: dict[str, None] = {}
    trees: dict[str, None] = {}
    follow: dict[tuple[str, str], None] = {}
    for item in benchmark.for_role(role):
        for check in item.checks:
            if check.file is not None:
                if check.file.path is not None:
                    stats[check.file.path] = None
                if check.file.under is not None:
                    trees[check.file.under] = None
            rule = check.setting or check.encryption
            if rule is None:
                continue
            component = benchmark.components[rule.component]
            files[component.unit] = None
            if check.encryption is not None:
                follow[(component.unit, check.encryption.flag)] = None
            elif check.setting is not None and check.setting.key is not None:
                assert component.config_flag is not None  # validated in Benchmark
                follow[(component.unit, component.config_flag)] = None
    return Request(tuple(files), tuple(stats), tuple(trees), tuple(follow))


def parse_output(stdout: str) -> dict[str, NodeFile]:
    """The probe's JSON document as typed entries, by path."""
    loaded: dict[str, dict[str, Any]] = json.loads(stdout)
    return {
        path: NodeFile(
            mode=int(entry["mode"]),
            owner=str(entry["owner"]),
            group=str(entry["group"]),
            directory=bool(entry["directory"]),
            text=entry["text"],
        )
        for path, entry in loaded.items()
    }
