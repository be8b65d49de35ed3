"""The node-base roles (node_prep, pki, containerd, etcd, release, api_proxy) keep the roles
contract: inputs only through meta/argument_specs.yml with constant defaults, no cluster-wide
kubesmith_* variable inside a role, probes that print one JSON document, one kubesmith_files
write per role, restart-and-wait handlers. Their behaviour on nodes is covered by
tests/integration/test_provision.py; this file checks the files and the filters they use.
"""

from __future__ import annotations

import getpass
import grp
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, load_plugin

ROLES = REPO / "playbooks" / "roles"
BASE_ROLES = ("node_prep", "pki", "containerd", "etcd", "release", "api_proxy")
#: Inputs a role cannot default sensibly: argument_specs marks them required.
REQUIRED = {"etcd": {"etcd_address", "etcd_members"}}
# The sandbox image has no default: any default would be an image not pinned in versions.yaml.
REQUIRED["containerd"] = {"containerd_sandbox_image"}


@pytest.fixture(scope="module")
def filters() -> ModuleType:
    return load_plugin(REPO / "playbooks" / "filter_plugins" / "kubesmith.py", "kubesmith_filters")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _role_files(role: str) -> list[Path]:
    return [
        p for p in sorted((ROLES / role).rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    ]


@pytest.mark.parametrize("role", BASE_ROLES)
def test_no_cluster_wide_variable_inside_the_role(role: str) -> None:
    used = {
        f"{path.relative_to(ROLES)}: {name}"
        for path in _role_files(role)
        for name in re.findall(r"\bkubesmith_(?!files\b)\w+", path.read_text(encoding="utf-8"))
    }
    assert used == set()


@pytest.mark.parametrize("role", BASE_ROLES)
def test_defaults_are_constants_and_declared_with_the_same_value(role: str) -> None:
    defaults = _yaml(ROLES / role / "defaults" / "main.yml") or {}
    specs = _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    options = specs["main"]["options"]
    for name, value in defaults.items():
        assert "{{" not in yaml.safe_dump(value), f"{role}: {name} is not a constant"
        assert name in options, f"{role}: {name} has a default but is not declared"
        assert options[name].get("default") == value, f"{role}: {name} default differs"
    for name, option in options.items():
        if option.get("required"):
            assert name not in defaults, f"{role}: required {name} has a default"
        else:
            assert name in defaults, f"{role}: {name} is declared without a default"
    assert {n for n, o in options.items() if o.get("required")} == REQUIRED.get(role, set())


@pytest.mark.parametrize("role", BASE_ROLES)
def test_every_input_the_role_reads_is_declared(role: str) -> None:
    specs = _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    declared = {name for entry in specs.values() for name in entry["options"]}
    text = "\n".join(
        p.read_text(encoding="utf-8")
        for p in _role_files(role)
        if p.suffix in (".yml", ".j2") and p.parent.name != "meta"
    )
    # Not preceded by a word character: internal names (__<role>_*) are not inputs; a name
    # followed by "(" is a filter.
    read = set(re.findall(rf"(?<!\w)({role}_\w+)\b(?!\()", text))
    assert read <= declared, sorted(read - declared)


def _tasks(role: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted((ROLES / role).glob("*/*.yml")):
        # etcd's restore.yml is an operation of its own (etcd-restore.yml), not the role's run.
        if path.parent.name in ("tasks", "handlers") and path.name != "restore.yml":
            found += _yaml(path) or []
    return found


@pytest.mark.parametrize("role", ["node_prep", "pki", "containerd", "etcd", "api_proxy"])
def test_one_json_probe_and_one_write(role: str) -> None:
    tasks = _tasks(role)
    writes = [t for t in tasks if "kubesmith_files" in t]
    assert len(writes) == 1, [t["name"] for t in writes]
    assert not [
        t["name"] for t in tasks if "ansible.builtin.copy" in t or "ansible.builtin.template" in t
    ]
    probes = [t for t in tasks if t.get("register") == f"__{role}_probe"]
    assert len(probes) == 1
    assert all("ansible.builtin.raw" in t for t in probes)
    vars_text = "\n".join(p.read_text(encoding="utf-8") for p in (ROLES / role).glob("*/main.yml"))
    assert "from_json" in vars_text
    assert "stdout_lines" not in vars_text
    assert "regex" not in vars_text


@pytest.mark.parametrize(
    ("role", "topic", "restart_module"),
    [
        ("containerd", "containerd restart", "ansible.builtin.systemd_service"),
        ("etcd", "etcd restart", "ansible.builtin.systemd_service"),
        ("api_proxy", "api_proxy reload", "ansible.builtin.systemd_service"),
    ],
)
def test_restart_then_wait_on_one_topic(role: str, topic: str, restart_module: str) -> None:
    handlers = _yaml(ROLES / role / "handlers" / "main.yml")
    assert {h["listen"] for h in handlers} == {topic}
    assert any(restart_module in h for h in handlers)
    waits = [h for h in handlers if "until" in h]
    assert len(waits) == 1
    assert waits[0]["changed_when"] is False
    assert "retries" in waits[0]
    assert "delay" in waits[0]
    assert "for " not in yaml.safe_dump(handlers), "no shell loops in handlers"


def test_etcd_members_restart_one_at_a_time() -> None:
    handlers = _yaml(ROLES / "etcd" / "handlers" / "main.yml")
    healthy = next(h for h in handlers if h["name"].startswith("Etcd | restart a healthy"))
    assert healthy["throttle"] == 1


def test_etcd_lists_each_managed_file_once() -> None:
    variables = (ROLES / "etcd" / "vars" / "main.yml").read_text(encoding="utf-8")
    for path in (
        "/usr/local/sbin/kubesmith-etcdctl",
        "/etc/systemd/system/kubesmith-etcd-snapshot.timer",
    ):
        assert variables.count(path) == 1, path


# --- the JSON probe filters ----------------------------------------------------------------


def _run(script: str) -> str:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _as_root(found: dict[str, str]) -> dict[str, str]:
    """The probe's owner and group as they would be on a node (files owned by root)."""
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    return {path: value.replace(f" {user} {group}", " root root") for path, value in found.items()}


@pytest.mark.parametrize("probe", ["files_probe_json", "paths_probe"])
def test_json_probe_and_stale_files_agree_on_real_files(
    filters: ModuleType, tmp_path: Path, probe: str
) -> None:
    """A file is written only when its probed state differs from the wanted one (both probe
    shapes, the node-base roles' and the Kubernetes roles')."""
    same, changed, loose = tmp_path / "same", tmp_path / "changed", tmp_path / "loose"
    wanted = [
        {"dest": str(path), "content": "kind: Config\n", "mode": "0600"}
        for path in (same, changed, loose, tmp_path / "missing")
    ]
    for path in (same, changed, loose):
        path.write_text("kind: Config\n" if path != changed else "kind: Other\n")
        path.chmod(0o600 if path != loose else 0o644)
    found = yaml.safe_load(_run(getattr(filters, probe)([w["dest"] for w in wanted])))
    assert sorted(found) == [str(changed), str(loose), str(same)]
    stale = filters.stale_files(wanted, _as_root(found))
    assert [Path(s["dest"]).name for s in stale] == ["changed", "loose", "missing"]


def test_paths_probe_reports_directories_as_such(filters: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    (tmp_path / "dir").chmod(0o700)
    found = _as_root(yaml.safe_load(_run(filters.paths_probe([str(tmp_path / "dir")]))))
    assert found == {str(tmp_path / "dir"): "directory 700 root root"}


@pytest.mark.parametrize("probe", ["files_probe_json", "directories_probe_json", "paths_probe"])
def test_json_probe_of_nothing_is_an_empty_object(
    filters: ModuleType, tmp_path: Path, probe: str
) -> None:
    assert _run(getattr(filters, probe)([str(tmp_path / "none")])) == "{}"
    assert _run(getattr(filters, probe)([])) == "{}"
    with pytest.raises(ValueError, match="must not hold quotes"):
        getattr(filters, probe)(['/etc/"quoted"'])


def test_stale_directories_are_missing_or_of_another_mode(
    filters: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "right").mkdir(mode=0o700)
    (tmp_path / "right").chmod(0o700)
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide").chmod(0o755)
    wanted = [{"path": str(tmp_path / n), "mode": "0700"} for n in ("right", "wide", "missing")]
    found = yaml.safe_load(_run(filters.directories_probe_json([w["path"] for w in wanted])))
    stale = filters.stale_directories(wanted, found)
    assert [Path(s["path"]).name for s in stale] == ["wide", "missing"]


def test_stale_directories_compare_owners_only_where_named(
    filters: ModuleType, tmp_path: Path
) -> None:
    """etcd's data directory must be etcd's; a directory a package owns and the role only
    needs (no owner named) is left to it."""
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data").chmod(0o700)
    path = str(tmp_path / "data")
    found = yaml.safe_load(_run(filters.directories_probe_json([path])))
    me, my_group = found[path].split(" ")[1:]
    unnamed = {"path": path, "mode": "0700"}
    mine = unnamed | {"owner": me, "group": my_group}
    others = unnamed | {"owner": "etcd-kubesmith-test", "group": my_group}
    other_group = unnamed | {"owner": me, "group": "etcd-kubesmith-test"}
    stale = filters.stale_directories([unnamed, mine, others, other_group], found)
    assert stale == [others, other_group]


@pytest.mark.parametrize("path", ['/etc/a"b', "/etc/a b", "/etc/a\\b"])
def test_paths_that_would_break_the_probe_are_refused(filters: ModuleType, path: str) -> None:
    with pytest.raises(ValueError, match="managed path"):
        filters.files_probe_json([path])


# --- pki: the bundle as managed files --------------------------------------------------------


def _bundle(path: Path, members: list[tuple[str, int, bytes | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def pki_filter() -> ModuleType:
    return load_plugin(ROLES / "pki" / "filter_plugins" / "pki_bundle.py", "pki_bundle")


def test_pki_bundle_becomes_files_and_directories_with_their_modes(
    pki_filter: ModuleType, tmp_path: Path
) -> None:
    archive = tmp_path / "node.tar"
    _bundle(
        archive,
        [
            ("ca.crt", 0o644, b"CERT\n"),
            ("etcd", 0o755, None),
            ("etcd/peer.key", 0o600, b"KEY\n"),
        ],
    )
    bundle = pki_filter.pki_bundle_files(str(archive), "/etc/kubernetes/pki/")
    assert bundle["directories"] == [
        {"path": "/etc/kubernetes/pki", "mode": "0755"},
        {"path": "/etc/kubernetes/pki/etcd", "mode": "0755"},
    ]
    assert bundle["files"] == [
        {"dest": "/etc/kubernetes/pki/ca.crt", "content": "CERT\n", "mode": "0644"},
        {"dest": "/etc/kubernetes/pki/etcd/peer.key", "content": "KEY\n", "mode": "0600"},
    ]


@pytest.mark.parametrize("name", ["../escape.key", "/etc/passwd"])
def test_pki_bundle_members_stay_under_the_directory(
    pki_filter: ModuleType, tmp_path: Path, name: str
) -> None:
    archive = tmp_path / "node.tar"
    _bundle(archive, [(name, 0o600, b"x")])
    with pytest.raises(ValueError, match="outside"):
        pki_filter.pki_bundle_files(str(archive), "/etc/kubernetes/pki")
