#!/usr/bin/python
"""Ansible module: write many small managed files (and their directories) in one call.

A role that manages N configuration files with `ansible.builtin.copy` in a loop pays one
remote Python start per file; on small nodes that start, not the write, is most of the run.
This module takes every file a role renders and converges them in a single execution:
content, mode and owner are compared, and only what differs is rewritten (atomically, via a
temporary file in the same directory and rename). Check mode reports what would change.
File contents are never returned or logged (`no_log` on the option): they may hold keys.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: kubesmith_files
short_description: Converge several files and directories in one module run
description:
  - Writes each file whose content, mode or owner differs, atomically (temporary file and rename).
  - Creates missing directories and corrects their mode and owner.
  - Never returns or logs file contents.
options:
  files:
    description: Files to manage.
    type: list
    elements: dict
    default: []
    suboptions:
      dest: {description: Absolute path., type: path, required: true}
      content: {description: The file's full content., type: str, required: true}
      mode: {description: Octal mode such as 0644., type: str, required: true}
      owner: {description: Owning user., type: str, default: root}
      group: {description: Owning group., type: str, default: root}
      validate:
        description: Command run on the new content before it replaces the file; %s is its path.
        type: str
  directories:
    description: Directories to create before the files are written.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      mode: {description: Octal mode such as 0755., type: str, required: true}
      owner: {description: Owning user., type: str, default: root}
      group: {description: Owning group., type: str, default: root}
"""

RETURN = r"""
changed_paths:
  description: Paths written or corrected (in check mode, those that would be).
  type: list
  elements: str
  returned: always
"""

_FILE_OPTIONS = {
    "dest": {"type": "path", "required": True},
    "content": {"type": "str", "required": True, "no_log": True},
    "mode": {"type": "str", "required": True},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
    "validate": {"type": "str"},
}
_DIRECTORY_OPTIONS = {
    "path": {"type": "path", "required": True},
    "mode": {"type": "str", "required": True},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
}


class FileError(Exception):
    """A problem with one managed path; the message names it."""


class UnknownOwner(FileError):
    """The owner or group does not exist (yet: in check mode, an earlier task would create it)."""


def _ids(owner: str, group: str, path: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as error:
        raise UnknownOwner(f"{path}: unknown owner or group {owner}:{group}") from error


def _mode(text: str, path: str) -> int:
    try:
        return int(text, 8)
    except ValueError as error:
        raise FileError(f"{path}: mode {text!r} is not octal") from error


def _attributes_differ(info: os.stat_result, mode: int, uid: int, gid: int) -> bool:
    return stat.S_IMODE(info.st_mode) != mode or info.st_uid != uid or info.st_gid != gid


def converge_directory(spec: dict[str, str], check: bool) -> bool:
    path = Path(spec["path"])
    mode = _mode(spec["mode"], str(path))
    uid, gid = _ids(spec["owner"], spec["group"], str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        if not check:
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chown(path, uid, gid)
            path.chmod(mode)  # mkdir's mode is filtered by the umask
        return True
    if not stat.S_ISDIR(info.st_mode):
        raise FileError(f"{path}: exists and is not a directory")
    if not _attributes_differ(info, mode, uid, gid):
        return False
    if not check:
        os.chown(path, uid, gid)
        path.chmod(mode)
    return True


def _validate(command: str, candidate: Path, dest: Path) -> None:
    if "%s" not in command:
        raise FileError(f"{dest}: validate command must contain %s")
    argv = shlex.split(command.replace("%s", shlex.quote(str(candidate))))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise FileError(
            f"{dest}: new content rejected by `{argv[0]}` (exit {done.returncode})"
            + (f": {detail[-1]}" if detail else "")
        )


def converge_file(spec: dict[str, str], check: bool) -> bool:
    dest = Path(spec["dest"])
    data = spec["content"].encode()
    mode = _mode(spec["mode"], str(dest))
    uid, gid = _ids(spec["owner"], spec["group"], str(dest))
    try:
        info: os.stat_result | None = dest.stat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"{dest}: exists and is not a regular file")
        same_content = info.st_size == len(data) and dest.read_bytes() == data
        if same_content and not _attributes_differ(info, mode, uid, gid):
            return False
        if same_content:
            if not check:
                os.chown(dest, uid, gid)
                dest.chmod(mode)
            return True
    if check:
        return True
    if not dest.parent.is_dir():
        raise FileError(f"{dest}: directory {dest.parent} does not exist")
    handle, name = tempfile.mkstemp(dir=dest.parent, prefix=".kubesmith-")
    candidate = Path(name)
    try:
        # The temporary file gets its final mode and owner before any byte is written.
        os.fchown(handle, uid, gid)
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if spec.get("validate"):
            _validate(spec["validate"], candidate, dest)
        candidate.replace(dest)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    return True


def _converges(
    converge: Callable[[dict[str, str], bool], bool], spec: dict[str, str], check: bool
) -> bool:
    """Whether ``converge`` changes (would change) ``spec``. In check mode an owner that does
    not exist yet (a user a role creates in an earlier task) means a change, not an error."""
    try:
        return converge(spec, check)
    except UnknownOwner:
        if check:
            return True
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": _FILE_OPTIONS,
            },
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": _DIRECTORY_OPTIONS,
            },
        },
        supports_check_mode=True,
    )
    changed: list[str] = []
    try:
        for directory in module.params["directories"]:
            if _converges(converge_directory, directory, module.check_mode):
                changed.append(directory["path"])
        for spec in module.params["files"]:
            if _converges(converge_file, spec, module.check_mode):
                changed.append(spec["dest"])
    except (FileError, OSError) as error:
        module.fail_json(msg=str(error), changed_paths=changed, changed=bool(changed))
    module.exit_json(changed=bool(changed), changed_paths=changed)


if __name__ == "__main__":
    main()
