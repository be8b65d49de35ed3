"""pki_bundle_files: a node's certificate bundle as the files and directories the role manages.

The controller issues each node's certificates and keys as one tar (kubesmith.state.pki:
files 0600/0644, directories 0755, owner root). Reading it here, on the controller, lets the
role converge them like every other role's files: one probe, then one ``kubesmith_files``
write of what differs, instead of unpacking the archive on the node.
"""

from __future__ import annotations

import tarfile
from pathlib import PurePosixPath
from typing import Any


def pki_bundle_files(archive: str, pki_dir: str) -> dict[str, list[dict[str, str]]]:
    """{files: [{dest, content, mode}], directories: [{path, mode}]} of the bundle at
    ``archive`` (a path on the controller), laid out under ``pki_dir``."""
    root = str(pki_dir).rstrip("/")
    files: list[dict[str, str]] = []
    directories = [{"path": root, "mode": "0755"}]
    with tarfile.open(str(archive)) as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"{archive}: {member.name} would land outside {root}")
            dest, mode = f"{root}/{name}", f"0{member.mode & 0o7777:o}"
            if member.isdir():
                directories.append({"path": dest, "mode": mode})
            elif member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                try:
                    content = extracted.read().decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(f"{archive}: {member.name} is not text (PEM)") from error
                files.append({"dest": dest, "content": content, "mode": mode})
            else:
                raise ValueError(f"{archive}: {member.name} is neither a file nor a directory")
    return {"files": files, "directories": directories}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pki_bundle_files": pki_bundle_files}
