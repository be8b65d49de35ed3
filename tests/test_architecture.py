"""The package layering of docs/architecture.md, enforced on every module's imports.

Each package may import only the packages listed for it; a module never imports another
module's private (underscore) name; the AWS program never loads anything of LXD. A new import
that crosses a layer fails here, naming the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from kubesmith.provision.provisioner import BASE_TAGS, TAGS
from kubesmith.provision.variables import (
    PREFIX,
    ClusterVariables,
    KubernetesVariables,
    NodeBaseVariables,
)
from kubesmith.resources import playbooks_dir

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "kubesmith"

_BELOW = frozenset({"errors", "versions", "resources", "spec", "cluster", "progress"})
#: Package (or top-level module) -> what it may import of kubesmith, besides itself.
#: Lower layers first; see docs/architecture.md for what each one owns.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "resources": frozenset(),
    "progress": frozenset(),
    "versions": frozenset({"errors", "resources"}),
    "spec": frozenset({"errors", "versions"}),
    "cluster": frozenset({"spec", "versions"}),
    "nodes": frozenset({"spec"}),
    "state": frozenset({"errors", "versions", "resources", "spec", "cluster", "nodes"}),
    "stackfile": frozenset({"errors", "resources", "spec", "state"}),
    "downloads": frozenset({"errors", "versions", "spec", "state"}),
    "apps": frozenset({"errors", "versions", "resources", "spec", "state"}),
    "cis": _BELOW | {"provision"},
    "provision": _BELOW | {"stackfile", "nodes", "state", "downloads", "apps"},
    # Labs are LXD nodes plus the inventory provisioning reads; the node image may carry
    # verified downloads (the Kubernetes binaries).
    "local": _BELOW | {"stackfile", "nodes", "state", "downloads", "provision"},
    "program": _BELOW | {"stackfile", "nodes", "state", "downloads", "apps", "provision", "local"},
    "cli": _BELOW
    | {"cis", "stackfile", "nodes", "state", "downloads", "apps", "provision", "local", "program"},
}
#: Narrower rules inside a package: module prefix -> kubesmith prefixes it must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The AWS program must not load pylxd or anything of the local backend.
    "kubesmith.program.backends.aws": ("kubesmith.local", "kubesmith.program.backends.lxd"),
    # The Pulumi program and the provisioning resource reach LXD only through its backend.
    "kubesmith.program.provisioning": ("kubesmith.local",),
    "kubesmith.program.automation": ("kubesmith.local",),
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_project" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every kubesmith import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "kubesmith":
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "kubesmith"
            ]
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _targets(module: str, names: list[str]) -> list[str]:
    """The kubesmith modules an import reaches (``from kubesmith import versions`` -> versions)."""
    if module == "kubesmith":
        return [f"kubesmith.{name}" for name in names]
    return [module]


def _violations() -> list[str]:
    problems = []
    for path in _modules():
        here = _module_name(path)
        layer = _layer(here)
        if not layer:
            continue
        allowed = ALLOWED.get(layer)
        where = path.relative_to(SRC.parent)
        if allowed is None:
            problems.append(f"{where}: package {layer!r} has no rule in ALLOWED")
            continue
        for line, module, names in _imports(path):
            for target in _targets(module, names):
                other = _layer(target)
                if other != layer and other not in allowed:
                    problems.append(f"{where}:{line}: {layer} may not import {target}")
                for prefix, banned in FORBIDDEN.items():
                    if here.startswith(prefix) and target.startswith(banned):
                        problems.append(f"{where}:{line}: {here} may not import {target}")
            private = [n for n in names if n.startswith("_") and module != "__future__"]
            if private and module != here:
                problems.append(f"{where}:{line}: imports private {', '.join(private)} of {module}")
    return problems


def test_every_import_follows_the_layering() -> None:
    assert _violations() == []


def test_every_package_has_a_rule_and_a_line_in_the_architecture_doc() -> None:
    doc = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    packages = {_layer(_module_name(p)) for p in _modules() if _layer(_module_name(p))}
    assert packages <= set(ALLOWED)
    missing = [name for name in sorted(packages) if f"`{name}" not in doc]
    assert missing == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        (
            "program/backends/aws",
            "from kubesmith.local.instances import stack_node\n",
            "kubesmith.program.backends.aws.bad may not import kubesmith.local.instances",
        ),
        ("state", "from kubesmith.provision import target\n", "state may not import"),
        ("apps", "from kubesmith.state.files import _private\n", "imports private _private"),
    ],
)
def test_the_checker_catches_a_crossing_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer: str, source: str, expected: str
) -> None:
    """The check itself: a planted bad import is reported (so the test above can fail)."""
    fake = tmp_path / "src" / "kubesmith"
    (fake / layer).mkdir(parents=True)
    (fake / layer / "bad.py").write_text(source, encoding="utf-8")
    monkeypatch.setitem(globals(), "SRC", tmp_path / "src")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert any(expected in problem for problem in _violations())


def _playbook_tags(path: Path) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            tags = node.get("tags")
            if isinstance(tags, list):
                found.update(str(t) for t in tags)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


def test_the_tag_list_is_the_playbooks_own() -> None:
    """`provision --tags` accepts exactly the tags site.yml and base.yml put on their plays."""
    base = _playbook_tags(playbooks_dir() / "base.yml")
    site = _playbook_tags(playbooks_dir() / "site.yml")
    assert set(BASE_TAGS) == base
    assert set(TAGS) == base | site


#: kubesmith_* names that are not playbook variables produced by the controller: the inventory's
#: own (host facts of the node shape, the spec and the endpoint), the files module, and the
#: user's own inventory switches read by the controller before a run.
_NOT_PRODUCED = {
    "kubesmith_node_ip",
    "kubesmith_node_role",
    "kubesmith_cluster",
    "kubesmith_files",
}


def test_every_kubesmith_variable_the_playbooks_read_comes_from_the_variables_module() -> None:
    """One producer: each kubesmith_* name in a playbook is a field of provision.variables."""
    produced = {
        PREFIX + f.name
        for kind in (ClusterVariables, NodeBaseVariables, KubernetesVariables)
        for f in dataclasses.fields(kind)
    }
    read: set[str] = set()
    for playbook in playbooks_dir().glob("*.yml"):
        read |= set(re.findall(r"\bkubesmith_[a-z_]+\b", playbook.read_text(encoding="utf-8")))
    assert read - produced - _NOT_PRODUCED == set()
    # ...and no role reads one: roles take their inputs from the playbooks' bindings.
    for path in (playbooks_dir() / "roles").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".j2"):
            names = set(re.findall(r"\bkubesmith_[a-z_]+\b", path.read_text(encoding="utf-8")))
            assert names <= {"kubesmith_files"}, path
