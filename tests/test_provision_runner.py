"""The ansible-runner glue on real ansible (no nodes needed): failures name host and task."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.errors import KubesmithError
from kubesmith.provision.runner import RunRequest, TaskOutputs, _message, run_playbook
from kubesmith.resources import playbooks_dir
from tests.clusterlab import unreachable_inventory
from tests.conftest import load_plugin

BASE = ("prep", "pki", "runtime", "etcd")


def test_unreachable_host_is_reported_with_its_name(tmp_path: Path) -> None:
    inventory = unreachable_inventory(tmp_path)
    result = run_playbook(
        RunRequest(private_data_dir=tmp_path / "run", inventory=inventory, tags=["prep"])
    )
    assert not result.ok
    assert result.stats["t1-cp-1"].unreachable == 1
    [failure] = result.failures
    assert failure.unreachable
    assert failure.host == "t1-cp-1"
    with pytest.raises(KubesmithError, match=r"^provision failed on t1-cp-1: unreachable: .*"):
        result.raise_for_failure("provision")
    # The run's artifacts are kept, under the private data dir given.
    assert result.artifact_dir is not None
    assert result.artifact_dir.is_relative_to(tmp_path / "run")


def test_cli_reports_an_unreachable_host_in_one_line(tmp_path: Path) -> None:
    inventory = unreachable_inventory(tmp_path)
    result = CliRunner().invoke(app, ["provision", "-i", str(inventory), "--tags", ",".join(BASE)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: provision failed on t1-cp-1: unreachable:")
    assert "Traceback" not in result.output
    # The PKI was issued beside the inventory before any host was contacted.
    assert (tmp_path / "pki" / "etcd" / "ca.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["provision"], "give exactly one of --stack/-s STACK or --inventory FILE"),
        (["provision", "-s", "local", "-i", "x.yml"], "give exactly one of"),
        (["provision", "-i", "INV", "--tags", "etcd,dns"], "--tags: unknown tag dns"),
        (["provision", "-i", "INV", "--source", "tarball"], "--source: must be distro or release"),
        (["provision", "-i", "INV", "--mirror", "ftp://x"], "--mirror: must be an http(s) URL"),
        (["provision", "-s", "local", "--source", "release"], "--source and --mirror only apply"),
        (
            ["etcd", "restore", "-i", "INV", "--snapshot", "/nonexistent.db"],
            "--snapshot: /nonexistent.db: no such file",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(
    tmp_path: Path, args: list[str], message: str
) -> None:
    inventory = unreachable_inventory(tmp_path)
    argv = [str(inventory) if a == "INV" else a for a in args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_stack_without_inventory_points_at_kubesmith_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["provision", "-s", "local", "--tags", "etcd"])
    assert result.exit_code == 2
    assert "stack local: no inventory at" in result.output
    assert "kubesmith up -s local" in result.output


def _toml_filter() -> object:
    path = playbooks_dir() / "roles" / "containerd" / "filter_plugins" / "toml.py"
    return load_plugin(path, "kubesmith_toml_filter").to_toml


def test_to_toml_round_trips_a_containerd_config() -> None:
    to_toml = _toml_filter()
    config = {
        "version": 2,
        "grpc": {"address": "/run/containerd/containerd.sock"},
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": 'registry.k8s.io/pause:3.10 "quoted"',
                "containerd": {
                    "runtimes": {
                        "runc": {"options": {"SystemdCgroup": True, "BinaryName": "/usr/sbin/runc"}}
                    }
                },
                "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": "/etc/cni/net.d"},
                "max_items": 3,
                "mirrors": ["a", "b"],
            }
        },
    }
    text = to_toml(config)  # type: ignore[operator]
    assert tomllib.loads(text) == config
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]' in text


def test_to_toml_refuses_what_it_cannot_write() -> None:
    to_toml = _toml_filter()
    with pytest.raises(TypeError, match="cannot write a set"):
        to_toml({"a": {1, 2}})  # type: ignore[operator]


def test_a_check_run_does_not_make_the_next_run_a_check(tmp_path: Path) -> None:
    inventory = unreachable_inventory(tmp_path)
    request = RunRequest(private_data_dir=tmp_path / "run", inventory=inventory, tags=["prep"])
    checked = run_playbook(RunRequest(**{**request.__dict__, "check": True}))
    real = run_playbook(request)
    assert checked.artifact_dir is not None
    assert real.artifact_dir is not None
    assert "--check" in (checked.artifact_dir / "command").read_text()
    assert "--check" not in (real.artifact_dir / "command").read_text()


def test_a_run_that_fails_outside_any_task_says_why(tmp_path: Path) -> None:
    inventory = unreachable_inventory(tmp_path)
    result = run_playbook(
        RunRequest(
            private_data_dir=tmp_path / "run",
            inventory=inventory,
            tags=["prep"],
            limit="no-such-host",
        )
    )
    assert not result.ok
    assert not result.failures
    with pytest.raises(
        KubesmithError, match=r"^provision failed: ansible-runner ended .*: .+"
    ) as e:
        result.raise_for_failure("provision")
    assert "no-such-host" in str(e.value) or "limit" in str(e.value)


def test_a_failed_command_is_reported_by_its_last_stderr_line() -> None:
    """raw and command results say only "non-zero return code": stderr says what failed."""
    res = {
        "msg": "non-zero return code",
        "rc": 1,
        "stderr": "package installation failed:\nE: Unable to locate package nope\n",
    }
    assert _message(res) == "E: Unable to locate package nope"
    # Without stderr the message stays; other modules' messages are kept as they are.
    assert _message({"msg": "non-zero return code", "rc": 1}) == "non-zero return code"
    assert _message({"msg": "Could not find the file", "stderr": "x"}) == "Could not find the file"


def test_task_outputs_keep_each_hosts_stdout_of_the_named_tasks_and_pass_events_on() -> None:
    seen: list[str] = []
    outputs = TaskOutputs("Probe | read", "Probe | act", then=lambda e: seen.append(e["event"]))
    events = [
        {"event": "runner_on_ok", "event_data": {"task": "Probe | read", "host": "a",
                                                  "res": {"stdout": "one\ntwo"}}},
        {"event": "runner_on_ok", "event_data": {"task": "Other", "host": "a",
                                                  "res": {"stdout": "not kept"}}},
        {"event": "runner_on_failed", "event_data": {"task": "Probe | act", "host": "b",
                                                      "res": {"stdout": "failed: not kept"}}},
        {"event": "runner_on_ok", "event_data": {"task": "Probe | act ", "host": "b",
                                                  "res": {}}},
    ]  # fmt: skip
    for event in events:
        outputs(event)
    assert outputs.stdout == {"Probe | read": {"a": "one\ntwo"}, "Probe | act": {"b": ""}}
    assert seen == ["runner_on_ok", "runner_on_ok", "runner_on_failed", "runner_on_ok"]


class _DeadChild:
    """What ansible-runner returns when its forked child died before ansible-playbook
    started (seen in Pulumi's multi-threaded gRPC provider process): no exit status."""

    status = "failed"
    rc = None

    def __init__(self, artifacts: Path) -> None:
        self.config = type("Config", (), {"artifact_dir": str(artifacts)})()


def test_a_child_that_never_started_is_tried_again_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ansible_runner

    inventory = unreachable_inventory(tmp_path)
    request = RunRequest(private_data_dir=tmp_path / "run", inventory=inventory, tags=["prep"])
    real = ansible_runner.run
    calls: list[int] = []

    def dies_once(**kwargs: object) -> object:
        calls.append(1)
        return _DeadChild(tmp_path) if len(calls) == 1 else real(**kwargs)

    monkeypatch.setattr(ansible_runner, "run", dies_once)
    result = run_playbook(request)
    assert len(calls) == 2
    assert result.rc != 0  # the second try ran for real (its host is unreachable)
    assert result.failures

    # Dying every time: a failure saying so, never "no host matched".
    monkeypatch.setattr(ansible_runner, "run", lambda **_: _DeadChild(tmp_path))
    dead = run_playbook(request)
    with pytest.raises(KubesmithError, match="ansible-playbook did not start"):
        dead.raise_for_failure("provision")
