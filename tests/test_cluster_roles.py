"""The Kubernetes roles keep the roles contract (docs of issue 10, "roles in one dialect"):
inputs only through meta/argument_specs.yml with constant defaults, nothing of the inventory
read inside a role (site.yml binds every input), one raw probe parsed as JSON, one
kubesmith_files task per entry point, restart and readiness wait as two handlers per topic."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

ROLES = REPO / "playbooks" / "roles"
K8S_ROLES = ("control_plane", "kubelet", "kube_proxy", "cni", "coredns")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def role_files(role: str) -> Iterator[Path]:
    yield from sorted(p for p in (ROLES / role).rglob("*.yml"))


def tasks(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        for key in ("block", "rescue", "always"):
            yield from tasks(item.get(key, []))


def options(role: str) -> dict[str, dict[str, Any]]:
    specs = load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    return {name: spec for entry in specs.values() for name, spec in entry["options"].items()}


@pytest.mark.parametrize("role", K8S_ROLES)
def test_defaults_are_constants_declared_in_the_argument_specs(role: str) -> None:
    defaults = load(ROLES / role / "defaults" / "main.yml")
    declared = options(role)
    for name, value in defaults.items():
        assert name in declared, f"{role}: {name} is not in meta/argument_specs.yml"
        if isinstance(value, str) and "{{" in value:
            # The node's own name is the only non-constant a default may hold.
            assert value == "{{ inventory_hostname }}", f"{role}: {name} is not a constant"
        elif "default" in declared[name]:
            assert declared[name]["default"] == value, f"{role}: {name}'s default differs"
    for name, spec in declared.items():
        assert name in defaults or spec.get("required"), f"{role}: {name} has no default"


@pytest.mark.parametrize("role", K8S_ROLES)
def test_every_input_a_role_reads_is_declared(role: str) -> None:
    declared = options(role)
    pattern = re.compile(rf"\b{role}_[a-z0-9_]+")
    for path in role_files(role):
        if path.parent.name == "meta":
            continue
        for name in set(pattern.findall(path.read_text(encoding="utf-8"))):
            assert name in declared, f"{path.relative_to(REPO)} reads {name}, not declared"


@pytest.mark.parametrize("role", K8S_ROLES)
def test_a_role_reads_nothing_of_the_inventory(role: str) -> None:
    for path in sorted((ROLES / role).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8").replace("kubesmith_files:", "")
        # The one use of hostvars allowed: the role's own facts of the play's other hosts
        # (which control planes restart which service, for the rolling restart handlers).
        text = text.replace("map('extract', hostvars, '__control_plane_", "")
        for forbidden in ("kubesmith_", "groups[", "hostvars"):
            assert forbidden not in text, f"{path.relative_to(REPO)} mentions {forbidden}"


@pytest.mark.parametrize("role", K8S_ROLES)
def test_probe_then_write_in_one_dialect(role: str) -> None:
    entries = [
        p
        for p in (ROLES / role / "tasks").glob("*.yml")
        if p.stem in ("main", "flannel", "network_policy")
    ]
    for path in sorted((ROLES / role / "tasks").glob("*.yml")):
        found = list(tasks(load(path)))
        modules = Counter(k for t in found for k in t if k.startswith(("ansible.", "kubesmith_")))
        for banned in ("ansible.builtin.copy", "ansible.builtin.template", "ansible.builtin.shell"):
            assert banned not in modules, f"{path.relative_to(REPO)} uses {banned}"
        for task in found:
            if "probe" in task.get("name", ""):
                assert "ansible.builtin.raw" in task, task["name"]
                assert task.get("check_mode") is False
    # One write task per entry point (main, with bridge.yml imported; flannel and
    # network_policy, each with addon.yml imported).
    for entry in entries:
        imported = [
            entry.parent / t["ansible.builtin.import_tasks"]
            for t in tasks(load(entry))
            if "ansible.builtin.import_tasks" in t
        ]
        paths = [entry, *imported]
        writes = [t for p in paths for t in tasks(load(p)) if "kubesmith_files" in t]
        assert len(writes) == 1, f"{role} {entry.stem}: {len(writes)} kubesmith_files tasks"


@pytest.mark.parametrize("role", ["kubelet", "kube_proxy"])
def test_each_restart_topic_restarts_then_waits(role: str) -> None:
    handlers = load(ROLES / role / "handlers" / "main.yml")
    topics: dict[str, list[dict[str, Any]]] = {}
    for handler in handlers:
        topics.setdefault(handler["listen"], []).append(handler)
        assert "ansible.builtin.shell" not in handler
    restarts = {t: h for t, h in topics.items() if t.endswith("restart")}
    assert restarts, role
    for topic, (restart, wait) in restarts.items():
        assert restart["ansible.builtin.systemd_service"]["state"] == "restarted", topic
        assert restart["ansible.builtin.systemd_service"]["daemon_reload"] is True, topic
        assert {"until", "retries", "delay"} <= set(wait), topic
        assert wait["changed_when"] is False, topic


def test_control_planes_restart_one_after_another_each_ready_before_the_next() -> None:
    """A control-plane service restarts, then is waited for, on one node before the next: each
    topic's handler runs once and walks the changed control planes through tasks/restart.yml
    (a restart, then a wait with retries, both delegated to that node)."""
    handlers = load(ROLES / "control_plane" / "handlers" / "main.yml")
    services = {h["listen"].removesuffix(" restart") for h in handlers}
    assert services == {"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    for handler in handlers:
        service = handler["listen"].removesuffix(" restart")
        assert handler["ansible.builtin.include_tasks"] == "restart.yml"
        assert handler["run_once"] is True
        assert handler["vars"]["__control_plane_restart_service"] == service
        assert f"'contains', '{service}'" in handler["loop"]
        assert handler["loop_control"]["loop_var"] == "__control_plane_restart_host"
    restart, *waits = load(ROLES / "control_plane" / "tasks" / "restart.yml")
    assert restart["ansible.builtin.systemd_service"]["state"] == "restarted"
    assert restart["ansible.builtin.systemd_service"]["daemon_reload"] is True
    for task in (restart, *waits):
        assert task["delegate_to"] == "{{ __control_plane_restart_host }}"
    for wait in waits:
        assert {"until", "retries", "delay"} <= set(wait)
        assert wait["changed_when"] is False
