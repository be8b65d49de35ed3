"""The project's own files, located one way.

kubesmith ships its playbooks, its templates (add-ons and apps) and the data files beside its
code (versions.yaml, component_flags.yaml, the node image's root file system overlay). In a
source checkout they are the checkout's own ``playbooks/`` and ``templates/`` (beside
``src/``); in an installed wheel the same directories travel as package data under
``kubesmith/_project/`` (pyproject.toml's ``force-include``). Every module asks here, never
relative to its own ``__file__`` or the working directory.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
#: Where a wheel carries playbooks/ and templates/ (see pyproject.toml).
_BUNDLED = _PACKAGE / "_project"


@cache
def project_files() -> Path:
    """The directory holding playbooks/ and templates/: the wheel's copy, else the checkout."""
    if (_BUNDLED / "playbooks").is_dir():
        return _BUNDLED
    checkout = _PACKAGE.parents[1]
    if (checkout / "playbooks").is_dir():
        return checkout
    raise RuntimeError(f"kubesmith is installed without its playbooks (looked in {_BUNDLED})")


def playbooks_dir() -> Path:
    return project_files() / "playbooks"


def templates_dir() -> Path:
    return project_files() / "templates"


def package_file(*parts: str) -> Path:
    """A data file that lives inside the package (versions.yaml, provision/component_flags.yaml)."""
    return _PACKAGE.joinpath(*parts)
