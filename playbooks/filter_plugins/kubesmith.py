"""Filters that build node files from data, shared by the roles.

- ``kubeconfig``: the kubeconfig shape of kubesmith.state.kubeconfig (one definition for
  the nodes' files and the admin kubeconfig the controller exports);
- ``systemd_command``: a binary and a mapping of flags as one ExecStart value, one flag per
  continuation line, escaped for systemd (``%`` and ``$`` doubled, values with spaces or
  quotes double-quoted);
- ``systemd_unit``: an INI unit from {section: {key: value}} (list values repeat the key);
- ``binary_releases``: Kubernetes binaries in the release role's format, so the roles install
  them with that role (versioned directory, links in the bin directory);
- ``kubeconfig_files``: the kubeconfigs a role writes, as managed files;
- ``file_specs``: managed-file entries reduced to what the ``kubesmith_files`` module takes
  (roles tag entries with their own keys, such as ``restart`` or ``service``);
- ``files_probe_json`` / ``directories_probe_json`` / ``paths_probe`` / ``stale_files`` /
  ``stale_directories``: the roles' probe-then-write pattern. A role's raw probe prints one
  JSON document (read with ``from_json``); these fragments print its part for the managed
  paths: {path: "<sha1> <mode> <owner> <group>"} per existing file, {path: "<mode> <owner>
  <group>"} per directory (``paths_probe``: files and directories in one object, directories
  as "directory <mode> <owner> <group>"). All three come from one generator: bash, one
  ``sha1sum`` and one ``stat`` for all paths, so a probe's cost does not grow with the number of
  files. ``stale_files`` keeps the files whose state differs from what the role would write, so
  a converged node costs that one command and no module.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kubesmith.state.kubeconfig import kubeconfig

_NEEDS_QUOTES = frozenset(" \t\"\\'")


def _escape(value: str) -> str:
    value = value.replace("%", "%%").replace("$", "$$")
    if any(c in _NEEDS_QUOTES for c in value) or not value:
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def systemd_command(binary: str, flags: Mapping[str, Any]) -> str:
    """``binary --a=1 --b=2`` for ExecStart=, sorted by flag name, one flag per line."""
    if not isinstance(flags, Mapping):
        raise TypeError(f"systemd_command needs a mapping of flags, got {type(flags).__name__}")
    parts = [_escape(binary)]
    for name in sorted(flags):
        value = flags[name]
        if value is None:
            continue
        parts.append(f"--{name}={_escape(_flag_value(value))}")
    return " \\\n    ".join(parts)


def systemd_unit(sections: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, entries in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in entries.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            lines.extend(f"{key}={_flag_value(v)}" for v in values)
    return "\n".join(lines) + "\n"


def binary_releases(
    files: Mapping[str, Mapping[str, str]], names: list[str], version: str, bin_dir: str
) -> list[dict[str, Any]]:
    """release role items for ``names``, from {binary: where to take it from} (the controller's
    verified file, its read-only mount on the node, or the release URL with its pin)."""
    missing = [name for name in names if name not in files]
    if missing:
        raise ValueError(f"no verified file for {', '.join(missing)} (run through kubesmith)")
    return [
        {
            **files[name],
            "name": name,
            "version": version,
            "format": "binary",
            "binaries": {name: name},
            "bin_dir": bin_dir,
        }
        for name in names
    ]


def kubeconfig_files(
    entries: Sequence[Mapping[str, str]], server: str, cluster: str, pki_dir: str, config_dir: str
) -> list[dict[str, str]]:
    """Managed-file entries (dest, content, mode 0600, service) for kubeconfigs given as
    {file, user, cert, service}: each names <pki_dir>/<cert>.crt/.key and the cluster CA."""
    files = []
    for entry in entries:
        # str(): Ansible hands in tagged string subclasses, which yaml.safe_dump refuses.
        data = kubeconfig(
            cluster=str(cluster),
            server=str(server),
            user=str(entry["user"]),
            ca=f"{pki_dir}/ca.crt",
            cert=f"{pki_dir}/{entry['cert']}.crt",
            key=f"{pki_dir}/{entry['cert']}.key",
        )
        files.append(
            {
                "dest": f"{config_dir}/{entry['file']}",
                "content": yaml.safe_dump(data, sort_keys=False, default_flow_style=False),
                "mode": "0600",
                "service": str(entry.get("service", "")),
            }
        )
    return files


#: Characters a path may not hold to be written into the probe's JSON and read back by `read`.
_UNSAFE_PATH = re.compile(r'["\\\s]')


def _existing(paths: Sequence[str], test: str) -> str:
    """Shell line collecting those of ``paths`` that pass ``test`` (-f, -d) into $found."""
    quoted = []
    for path in paths:
        if _UNSAFE_PATH.search(str(path)):
            raise ValueError(
                f"{path!r}: a managed path must not hold quotes, backslashes or spaces"
            )
        quoted.append(shlex.quote(str(path)))
    return (
        f'found=(); for path in {" ".join(quoted)}; do [ {test} "$path" ] && found+=("$path"); done'
    )


def _json_entries(
    paths: Sequence[str], test: str, fields: Sequence[str], source: str, label: str = ""
) -> str:
    """Shell lines printing ``"path": "<label><fields>"`` JSON members (``$sep`` between them)
    for those of ``paths`` that pass ``test``, read from ``source``: one line
    "<fields...> <path>" per path ("_" skips a field)."""
    names = [name for name in fields if name != "_"]
    layout = label + " ".join(["%s"] * len(names))
    values = " ".join(f'"${name}"' for name in names)
    return (
        _existing(paths, test) + "\n"
        "if [ ${#found[@]} -gt 0 ]; then\n"
        f"  while read -r {' '.join(fields)} path; do\n"
        f'    printf \'%s"%s": "{layout}"\' "$sep" "$path" {values}\n'
        "    sep=', '\n"
        f"  done < <({source})\n"
        "fi\n"
    )


def _json_object(*members: str) -> str:
    return "sep=''\nprintf '{'\n" + "".join(members) + "printf '}'"


_STAT = "stat -c '%a %U %G %n' -- \"${found[@]}\""


# Bash (arrays, process substitution); one sha1sum and one stat for all paths, so the cost
# does not grow with the number of files (the pki role has dozens).
_FILE_FIELDS = ("sum", "_", "mode", "owner", "group")
_FILE_SOURCE = f"paste -d ' ' <(sha1sum -- \"${{found[@]}}\") <({_STAT})"
_DIRECTORY_FIELDS = ("mode", "owner", "group")


def files_probe_json(paths: Sequence[str]) -> str:
    """Shell lines printing {path: "<sha1> <mode> <owner> <group>"} of the existing files."""
    return _json_object(_json_entries(paths, "-f", _FILE_FIELDS, _FILE_SOURCE))


def directories_probe_json(paths: Sequence[str]) -> str:
    """Shell lines printing {path: "<mode> <owner> <group>"} of the existing directories."""
    return _json_object(_json_entries(paths, "-d", _DIRECTORY_FIELDS, _STAT))


def paths_probe(paths: Sequence[str]) -> str:
    """Files and directories in one object: {path: "<sha1> <mode> <owner> <group>"} per file,
    {path: "directory <mode> <owner> <group>"} per directory."""
    return _json_object(
        _json_entries(paths, "-f", _FILE_FIELDS, _FILE_SOURCE),
        _json_entries(paths, "-d", _DIRECTORY_FIELDS, _STAT, label="directory "),
    )


def _octal(mode: object) -> str:
    return str(mode).lstrip("0") or "0"


def _wanted_file(item: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(str(item["content"]).encode("utf-8"), usedforsecurity=False).hexdigest()
    owner, group = item.get("owner") or "root", item.get("group") or "root"
    return f"{digest} {_octal(item['mode'])} {owner} {group}"


def stale_files(files: Sequence[Mapping[str, Any]], probed: Mapping[str, str]) -> list[Any]:
    """The ``files`` ({dest, content, mode, ...}) that differ from what the probe found
    (files_probe_json's or paths_probe's object)."""
    return [item for item in files if probed.get(item["dest"]) != _wanted_file(item)]


def stale_directories(
    directories: Sequence[Mapping[str, Any]], probed: Mapping[str, str]
) -> list[Any]:
    """The ``directories`` ({path, mode}) missing or with another mode in directories_probe_json's
    object. Owners are compared only where an entry names them ({path, mode, owner, group}):
    otherwise they are left as found (a package may own a directory the role only needs)."""
    stale = []
    for item in directories:
        found = str(probed.get(item["path"], "")).split(" ")
        wanted = [_octal(item["mode"])]
        if item.get("owner") or item.get("group"):
            wanted += [item.get("owner") or "root", item.get("group") or "root"]
        if found[: len(wanted)] != wanted:
            stale.append(item)
    return stale


#: The options of playbooks/library/kubesmith_files.py for one file.
_FILE_SPEC_KEYS = ("dest", "content", "mode", "owner", "group", "validate")


def file_specs(files: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: f[k] for k in _FILE_SPEC_KEYS if f.get(k) is not None} for f in files]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "kubeconfig": lambda server, **kw: kubeconfig(server=server, **kw),
            "systemd_command": systemd_command,
            "systemd_unit": systemd_unit,
            "binary_releases": binary_releases,
            "file_specs": file_specs,
            "paths_probe": paths_probe,
            "files_probe_json": files_probe_json,
            "directories_probe_json": directories_probe_json,
            "kubeconfig_files": kubeconfig_files,
            "stale_files": stale_files,
            "stale_directories": stale_directories,
        }
