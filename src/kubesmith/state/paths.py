"""Where kubesmith keeps its files.

Everything a run creates on the controller (SSH keys, PKI, known_hosts, Pulumi state, the
artifact cache, lab inventories) lives under one state directory: ``$KUBESMITH_HOME`` when
set, else ``.kubesmith/`` in the project (git-ignored), else, outside any project (an
installed kubesmith run from anywhere), ``$XDG_STATE_HOME/kubesmith`` (``~/.local/state``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubesmith.errors import UserError

#: Files that mark the project root.
_ROOT_MARKERS = ("Pulumi.yaml",)


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory with a Pulumi.yaml at or above $KUBESMITH_PROJECT, start or cwd."""
    env = os.environ.get("KUBESMITH_PROJECT")
    here = (Path(env) if env else (start or Path.cwd())).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).is_file() for marker in _ROOT_MARKERS):
            return candidate
    return None


def project_root(start: Path | None = None) -> Path:
    """``find_project_root``, or a one-line error for commands that need a project."""
    found = find_project_root(start)
    if found is not None:
        return found
    env = os.environ.get("KUBESMITH_PROJECT")
    here = (Path(env) if env else (start or Path.cwd())).resolve()
    raise UserError(
        f"no Pulumi.yaml found in {here} or its parents; run kubesmith inside the project "
        "or set KUBESMITH_PROJECT"
    )


def state_dir(root: Path | None = None) -> Path:
    """The controller-side state directory (created 0700 on first use)."""
    env = os.environ.get("KUBESMITH_HOME")
    project = root or find_project_root()
    if env:
        path = Path(env)
    elif project is not None:
        path = project / ".kubesmith"
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = Path(xdg) / "kubesmith"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def stack_dir(stack: str, root: Path | None = None) -> Path:
    """Per-stack state: SSH key, known_hosts, PKI, inventories."""
    path = _stack_path(stack, root)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _stack_path(stack: str, root: Path | None) -> Path:
    return state_dir(root) / "stacks" / stack


def forget_stack(stack: str, root: Path | None = None) -> Path | None:
    """Delete the stack's controller-side state (its PKI, SSH key, known_hosts, pod ranges,
    version and pod-network records, inventories); the directory it was in, or None when
    there was none. A stack created again under the name starts clean."""
    path = _stack_path(stack, root)
    if not path.exists():
        return None
    shutil.rmtree(path)
    return path
