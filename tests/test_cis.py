"""The CIS benchmark data and its evaluator, on crafted node contents (no node needed).

The probe script itself runs for real here, on files in a temporary directory, with this
machine's python3: what it sends back (modes, owners, texts, secrets blanked, keys unread).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.cis import benchmark as cis
from kubesmith.cis.evaluate import Result, evaluate, exec_start_flags, failures
from kubesmith.cis.probe import NodeFile, Request, parse_output, request_for
from kubesmith.cis.run import NodeReport, check_target
from kubesmith.cli import app
from kubesmith.errors import KubesmithError
from kubesmith.provision.runner import EventHandler, HostStats, RunRequest, RunResult
from kubesmith.provision.target import Target, for_inventory
from tests.clusterlab import local_spec, write_inventory

PKI = "/etc/kubernetes/pki"
SUITES = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"


def unit(binary: str, **flags: str) -> str:
    args = " \\\n    ".join(f"--{name.replace('_', '-')}={value}" for name, value in flags.items())
    return f"# Managed\n[Service]\nExecStart={binary} \\\n    {args}\nRestart=always\n"


def private(text: str | None = None, mode: int = 0o600, owner: str = "root") -> NodeFile:
    return NodeFile(mode=mode, owner=owner, group=owner, directory=False, text=text)


def directory(mode: int = 0o755, owner: str = "root") -> NodeFile:
    return NodeFile(mode=mode, owner=owner, group=owner, directory=True, text=None)


KUBELET_CONFIG = {
    "kind": "KubeletConfiguration",
    "authentication": {"anonymous": {"enabled": False}, "x509": {"clientCAFile": f"{PKI}/ca.crt"}},
    "authorization": {"mode": "Webhook"},
    "readOnlyPort": 0,
    "tlsCertFile": f"{PKI}/kubelet-server.crt",
    "tlsPrivateKeyFile": f"{PKI}/kubelet-server.key",
    "tlsCipherSuites": SUITES.split(","),
    "rotateCertificates": True,
    "makeIPTablesUtilChains": True,
    "podPidsLimit": 4096,
    "seccompDefault": True,
}
ENCRYPTION = """apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox:
          keys:
            - name: key1
              secret: REDACTED
      - identity: {}
"""


def good_node() -> dict[str, NodeFile]:
    """What a passing control plane has (the shape kubesmith's roles write)."""
    apiserver = unit(
        "/usr/local/bin/kube-apiserver",
        anonymous_auth="false",
        authorization_mode="Node,RBAC",
        enable_admission_plugins="NodeRestriction,DenyServiceExternalIPs",
        profiling="false",
        audit_log_path="/var/log/kubernetes/audit/audit.log",
        audit_log_maxage="30",
        audit_log_maxbackup="10",
        audit_log_maxsize="100",
        audit_policy_file="/etc/kubernetes/audit-policy.yaml",
        client_ca_file=f"{PKI}/ca.crt",
        encryption_provider_config="/etc/kubernetes/encryption-config.yaml",
        etcd_cafile=f"{PKI}/etcd/ca.crt",
        etcd_certfile=f"{PKI}/apiserver-etcd-client.crt",
        etcd_keyfile=f"{PKI}/apiserver-etcd-client.key",
        kubelet_certificate_authority=f"{PKI}/ca.crt",
        kubelet_client_certificate=f"{PKI}/apiserver-kubelet-client.crt",
        kubelet_client_key=f"{PKI}/apiserver-kubelet-client.key",
        service_account_key_file=f"{PKI}/sa.pub",
        service_account_lookup="true",
        service_account_extend_token_expiration="false",
        tls_cert_file=f"{PKI}/apiserver.crt",
        tls_private_key_file=f"{PKI}/apiserver.key",
        tls_cipher_suites=SUITES,
    )
    manager = unit(
        "/usr/local/bin/kube-controller-manager",
        bind_address="127.0.0.1",
        profiling="false",
        root_ca_file=f"{PKI}/ca.crt",
        service_account_private_key_file=f"{PKI}/sa.key",
        terminated_pod_gc_threshold="1000",
        use_service_account_credentials="true",
    )
    scheduler = unit(
        "/usr/local/bin/kube-scheduler",
        bind_address="127.0.0.1",
        config="/etc/kubernetes/kube-scheduler.yaml",
    )
    etcd_tls = {
        "cert-file": f"{PKI}/etcd/server.crt",
        "key-file": f"{PKI}/etcd/server.key",
        "trusted-ca-file": f"{PKI}/etcd/ca.crt",
        "client-cert-auth": True,
    }
    etcd = {"client-transport-security": etcd_tls, "peer-transport-security": etcd_tls}
    units = "/etc/systemd/system"
    return {
        f"{units}/kube-apiserver.service": private(apiserver),
        f"{units}/kube-controller-manager.service": private(manager),
        f"{units}/kube-scheduler.service": private(scheduler),
        "/etc/kubernetes/kube-scheduler.yaml": private("enableProfiling: false\n"),
        f"{units}/etcd.service": private(
            "[Service]\nExecStart=/usr/bin/etcd --config-file /etc/etcd/etcd.conf.yml\n"
        ),
        "/etc/etcd/etcd.conf.yml": private(yaml.safe_dump(etcd)),
        "/var/lib/etcd": directory(0o700, owner="etcd"),
        "/etc/kubernetes/encryption-config.yaml": private(ENCRYPTION),
        **{f"/etc/kubernetes/{n}": private("") for n in ("admin.conf", "super-admin.conf")},
        **{f"/etc/kubernetes/{n}": private("") for n in ("scheduler.conf", "kube-proxy.conf")},
        **{
            f"/etc/kubernetes/{n}": private("") for n in ("controller-manager.conf", "kubelet.conf")
        },
        "/etc/cni/net.d": directory(),
        "/etc/cni/net.d/10-kubesmith.conflist": private(None),
        PKI: directory(),
        f"{PKI}/etcd": directory(),
        f"{PKI}/ca.crt": private(None, mode=0o644),
        f"{PKI}/ca.key": private(None),
        f"{PKI}/etcd/ca.crt": private(None, mode=0o644),
        f"{PKI}/etcd/server.key": private(None),
        f"{units}/kubelet.service": private(
            unit("/usr/local/bin/kubelet", config="/var/lib/kubelet/config.yaml")
        ),
        "/var/lib/kubelet/config.yaml": private(yaml.safe_dump(KUBELET_CONFIG)),
        f"{units}/kube-proxy.service": private(
            unit("/usr/local/bin/kube-proxy", config="/var/lib/kube-proxy/config.yaml")
        ),
        "/var/lib/kube-proxy/config.yaml": private("metricsBindAddress: 127.0.0.1:10249\n"),
    }


def judged(node: dict[str, NodeFile], role: cis.Role = "control_plane") -> dict[str, Result]:
    return {r.id: r for r in evaluate(cis.load(), role, node)}


def failed(node: dict[str, NodeFile], role: cis.Role = "control_plane") -> dict[str, Result]:
    return {r.id: r for r in failures(evaluate(cis.load(), role, node))}


def with_flag(node: dict[str, NodeFile], unit_name: str, old: str, new: str) -> None:
    path = f"/etc/systemd/system/{unit_name}.service"
    text = node[path].text
    assert text is not None
    assert old in text
    node[path] = replace(node[path], text=text.replace(old, new))


# --- the data ---------------------------------------------------------------------------------


def test_every_recorded_item_is_judged_or_carries_a_reason() -> None:
    data = cis.load()
    recorded = data.recorded_ids
    assert len(recorded.automated) == 92
    assert len(recorded.manual) == 5
    items = {item.id: item for item in data.items}
    assert set(items) == set(recorded.automated) | set(recorded.manual)
    for item_id in recorded.automated:
        item = items[item_id]
        # An automated item is checked, or deliberately excepted/inapplicable with a reason:
        # never waved through as "manual".
        assert item.checks or item.exception or item.not_applicable, item_id
        assert item.manual is None, item_id
    for item_id in recorded.manual:
        assert items[item_id].manual, item_id
    for item in data.items:
        for reason in (item.exception, item.not_applicable, item.manual):
            assert reason is None or len(reason) > 30, item.id


def test_the_data_is_refused_when_an_item_is_neither_judged_nor_reasoned() -> None:
    with pytest.raises(ValueError, match="exactly one of checks"):
        cis.Item(id="9.9", title="t", roles=("worker",), maps="m")
    with pytest.raises(ValueError, match="exactly one of equals"):
        cis.SettingRule(component="kubelet", flag="x", equals="a", excludes="b")
    with pytest.raises(ValueError, match="path and under"):
        cis.FileRule(mode="600")


def test_every_item_of_sections_1_to_4_applies_to_the_nodes_that_run_it() -> None:
    data = cis.load()
    for item in data.items:
        section = item.id.split(".")[0]
        expected = ("control_plane", "worker") if section == "4" else ("control_plane",)
        assert item.roles == expected, item.id


# --- the evaluator --------------------------------------------------------------------------------


def test_a_hardened_node_passes_every_checked_item() -> None:
    for role in cis.ROLES:
        results = judged(good_node(), role)
        assert failed(good_node(), role) == {}
        assert {r.status for r in results.values()} <= {"pass", "exception", "manual"}
    assert judged(good_node(), "worker").keys() == {
        i.id for i in cis.load().items if i.id.startswith("4.")
    }


def test_a_private_key_readable_by_others_fails_with_its_path_and_mode() -> None:
    node = good_node()
    node[f"{PKI}/etcd/server.key"] = private(None, mode=0o644)
    assert set(failed(node)) == {"1.1.21"}
    assert failed(node)["1.1.21"].evidence == (
        f"{PKI}/etcd/server.key: mode 644, wanted 600 or more restrictive",
    )


def test_a_missing_flag_fails() -> None:
    node = good_node()
    with_flag(node, "kube-apiserver", "--profiling=false", "--v=2")
    assert set(failed(node)) == {"1.2.15"}
    assert failed(node)["1.2.15"].evidence == ("kube-apiserver --profiling: unset",)


def test_a_flag_with_a_wrong_value_fails() -> None:
    node = good_node()
    with_flag(node, "kube-apiserver", "--anonymous-auth=false", "--anonymous-auth=true")
    with_flag(node, "kube-apiserver", "--audit-log-maxage=30", "--audit-log-maxage=7")
    with_flag(node, "kube-apiserver", "Node,RBAC", "AlwaysAllow")
    assert set(failed(node)) == {"1.2.1", "1.2.6", "1.2.7", "1.2.8", "1.2.17"}
    assert failed(node)["1.2.1"].evidence == ("kube-apiserver --anonymous-auth=true: wanted false",)
    assert failed(node)["1.2.17"].evidence == (
        "kube-apiserver --audit-log-maxage=7: wanted 30 or more",
    )


def test_booleans_compare_in_either_spelling_but_paths_exactly() -> None:
    node = good_node()
    with_flag(node, "kube-apiserver", "--anonymous-auth=false", "--anonymous-auth=False")
    assert failed(node) == {}
    with_flag(node, "kube-apiserver", f"--client-ca-file={PKI}/ca.crt", "--client-ca-file=/X")
    assert failed(node) == {}
    with_flag(node, "kube-apiserver", "--client-ca-file=/X", f"--client-ca-file={PKI}/etcd/ca.crt")
    assert set(failed(node)) == {"2.7"}  # clients and etcd must not share a CA


def test_a_weak_cipher_suite_fails_and_names_it() -> None:
    node = good_node()
    with_flag(node, "kube-apiserver", SUITES, SUITES + ",TLS_RSA_WITH_AES_128_CBC_SHA")
    assert failed(node)["1.2.29"].evidence[0].endswith("not allowed: TLS_RSA_WITH_AES_128_CBC_SHA")


def test_kubelet_settings_come_from_its_config_file_and_a_unit_flag_wins() -> None:
    node = good_node()
    config = dict(KUBELET_CONFIG, readOnlyPort=10255)
    del config["seccompDefault"]
    node["/var/lib/kubelet/config.yaml"] = private(yaml.safe_dump(config))
    assert set(failed(node, "worker")) == {"4.2.4", "4.2.14"}
    assert failed(node, "worker")["4.2.4"].evidence == (
        "kubelet readOnlyPort (/var/lib/kubelet/config.yaml)=10255: wanted 0",
    )
    with_flag(node, "kubelet", "--config=", "--read-only-port=0 --anonymous-auth=true --config=")
    assert set(failed(node, "worker")) == {"4.2.1", "4.2.14"}


def test_a_missing_unit_or_config_file_fails_its_items() -> None:
    node = good_node()
    del node["/var/lib/kube-proxy/config.yaml"]
    del node["/etc/systemd/system/kube-scheduler.service"]
    assert set(failed(node)) == {"4.3.1", "1.1.5", "1.1.6", "1.4.1", "1.4.2"}
    assert failed(node)["1.4.2"].evidence == (
        "kube-scheduler: unit /etc/systemd/system/kube-scheduler.service missing",
    )


def test_etcd_data_owned_by_root_inside_an_etcd_owned_directory_fails() -> None:
    node = good_node()
    node["/var/lib/etcd/member"] = directory(0o700)
    assert failed(node)["1.1.12"].evidence == (
        "/var/lib/etcd/member: owned by root:root, wanted etcd:etcd",
    )
    node["/var/lib/etcd/member"] = directory(0o700, owner="etcd")
    assert failed(node) == {}


def test_etcd_reads_its_config_through_its_group_but_nobody_else_does() -> None:
    node = good_node()
    node["/etc/etcd/etcd.conf.yml"] = replace(
        node["/etc/etcd/etcd.conf.yml"], mode=0o640, group="etcd"
    )
    assert failed(node) == {}
    node["/etc/etcd/etcd.conf.yml"] = replace(node["/etc/etcd/etcd.conf.yml"], owner="etcd")
    node["/etc/systemd/system/etcd.service"] = replace(
        node["/etc/systemd/system/etcd.service"], mode=0o640
    )
    # A failing item's evidence shows its passing checks too.
    assert failed(node)["1.1.8"].evidence == (
        "/etc/systemd/system/etcd.service: mode 640, root:root",
        "/etc/etcd/etcd.conf.yml: owned by etcd:etcd, wanted root:root or root:etcd",
    )
    assert failed(node)["1.1.7"].evidence == (
        "/etc/systemd/system/etcd.service: mode 640, wanted 600 or more restrictive",
        "/etc/etcd/etcd.conf.yml: mode 640, etcd:etcd",
    )


def test_etcd_ownership_and_encryption_providers() -> None:
    node = good_node()
    node["/var/lib/etcd"] = directory(0o755)
    node["/etc/kubernetes/encryption-config.yaml"] = private(
        ENCRYPTION.replace("      - identity: {}\n", "").replace("secretbox", "identity")
    )
    assert set(failed(node)) == {"1.1.11", "1.1.12", "1.2.28"}
    assert failed(node)["1.1.12"].evidence == (
        "/var/lib/etcd: owned by root:root, wanted etcd:etcd",
    )


def test_an_optional_tree_passes_empty_but_a_loose_file_in_it_fails() -> None:
    node = good_node()
    del node["/etc/cni/net.d/10-kubesmith.conflist"]
    assert failed(node) == {}
    node["/etc/cni/net.d/10-flannel.conflist"] = private(None, mode=0o644)
    assert set(failed(node)) == {"1.1.9"}


def test_exec_start_flags_in_both_spellings() -> None:
    text = "[Service]\nExecStart=/bin/x --a=1 \\\n  --b 2 --c \\\n  --d='x y' --e\n"
    assert exec_start_flags(text) == {"a": "1", "b": "2", "c": "true", "d": "x y", "e": "true"}


# --- the probe, run for real on local files --------------------------------------------------


def test_the_probe_reports_modes_follows_config_flags_and_keeps_secrets_home(
    tmp_path: Path,
) -> None:
    unit_file = tmp_path / "kube-apiserver.service"
    config = tmp_path / "encryption.yaml"
    unit_file.write_text(f"[Service]\nExecStart=/bin/x --encryption-provider-config={config}\n")
    config.write_text(ENCRYPTION.replace("REDACTED", "c2VjcmV0IGtleQ=="))
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "a.key").write_text("PRIVATE")
    (tmp_path / "pki" / "a.key").chmod(0o640)
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("client-key-data: PRIVATE")
    request = Request(
        files=(str(unit_file), str(tmp_path / "absent")),
        stats=(str(kubeconfig),),
        trees=(str(tmp_path / "pki"),),
        follow=((str(unit_file), "encryption-provider-config"),),
    )
    result = subprocess.run(
        ["sh", "-c", request.command()], capture_output=True, text=True, check=True
    )
    assert "c2VjcmV0" not in result.stdout
    assert "PRIVATE" not in result.stdout
    found = parse_output(result.stdout)
    assert found[str(kubeconfig)].text is None
    assert set(found) == {
        str(kubeconfig),
        str(unit_file),
        str(config),
        str(tmp_path / "pki"),
        str(tmp_path / "pki" / "a.key"),
    }
    key = found[str(tmp_path / "pki" / "a.key")]
    assert (key.mode, key.directory, key.text) == (0o640, False, None)
    assert found[str(tmp_path / "pki")].directory
    assert "secret: REDACTED" in (found[str(config)].text or "")


def test_the_request_asks_for_what_the_role_s_items_read() -> None:
    worker = request_for(cis.load(), "worker")
    assert "/etc/systemd/system/kube-apiserver.service" not in worker.files
    assert "/etc/kubernetes/kubelet.conf" in worker.stats
    assert "/etc/kubernetes/kubelet.conf" not in worker.files
    assert ("/etc/systemd/system/kubelet.service", "config") in worker.follow
    control_plane = request_for(cis.load(), "control_plane")
    assert PKI in control_plane.trees
    assert (
        "/etc/systemd/system/kube-apiserver.service",
        "encryption-provider-config",
    ) in control_plane.follow
    assert ("/etc/systemd/system/etcd.service", "config-file") in control_plane.follow


# --- the command and its run (Ansible replaced by a function that replays its events) --------

cli = CliRunner()


def probe_json(node: dict[str, NodeFile]) -> str:
    return json.dumps({path: asdict(entry) for path, entry in node.items()})


def replay(outputs: dict[str, str]) -> Callable[[RunRequest, EventHandler | None], RunResult]:
    """Stands in for ansible-runner: the probe task's events with these outputs (the real run
    is tests/integration/test_cis.py's)."""

    def run(request: RunRequest, handler: EventHandler | None) -> RunResult:
        assert request.playbook == "cis.yml"
        commands = request.extravars["cis_probe_commands"]
        assert set(commands) == {"control_plane", "worker"}
        assert handler is not None
        for host, stdout in outputs.items():
            data = {"host": host, "task": "CIS | probe the node's files and units"}
            handler({"event": "runner_on_ok", "event_data": {**data, "res": {"stdout": stdout}}})
        return RunResult(status="successful", rc=0, stats={h: HostStats() for h in outputs})

    return run


def test_a_target_s_nodes_are_judged_by_their_role(tmp_path: Path) -> None:
    target = for_inventory(write_inventory(tmp_path, local_spec(1, 1)).path)
    control_plane, worker = target.inventory.hosts_in("k8s_cluster")
    loose = good_node()
    loose["/etc/kubernetes/kubelet.conf"] = private("", mode=0o644)
    outputs = {control_plane: probe_json(good_node()), worker: "\r\n" + probe_json(loose)}
    reports = check_target(target, run=replay(outputs))
    assert [(r.host, r.role) for r in reports] == [
        (control_plane, "control_plane"),
        (worker, "worker"),
    ]
    assert failures(reports[0].results) == []
    assert [r.id for r in failures(reports[1].results)] == ["4.1.5"]


def test_a_node_without_output_or_with_garbage_is_named(tmp_path: Path) -> None:
    target = for_inventory(write_inventory(tmp_path, local_spec(1, 1)).path)
    control_plane, worker = target.inventory.hosts_in("k8s_cluster")
    with pytest.raises(KubesmithError, match=f"no output from {worker}"):
        check_target(target, run=replay({control_plane: probe_json(good_node())}))
    garbage = {control_plane: probe_json(good_node()), worker: "Traceback (most recent"}
    with pytest.raises(KubesmithError, match=f"{worker} sent something else than its files"):
        check_target(target, run=replay(garbage))


def test_cis_check_needs_exactly_one_of_stack_and_inventory(tmp_path: Path) -> None:
    for args in ([], ["-s", "local", "-i", str(tmp_path / "inv.yml")]):
        result = cli.invoke(app, ["cis", "check", *args])
        assert result.exit_code == 2
        assert "give exactly one of --stack/-s STACK or --inventory FILE" in result.output
    missing = cli.invoke(app, ["cis", "check", "-i", str(tmp_path / "nope.yml")])
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope.yml'}: no such inventory file" in missing.output


def test_cis_check_prints_counts_and_each_failing_item_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = write_inventory(tmp_path, local_spec(1, 1))
    control_plane, worker = inventory.hosts_in("k8s_cluster")
    loose = good_node()
    loose["/etc/kubernetes/kubelet.conf"] = private("", mode=0o644)
    outputs = {control_plane: probe_json(good_node()), worker: probe_json(loose)}

    def judged_by_replay(target: Target, events: EventHandler) -> list[NodeReport]:
        return check_target(target, events, run=replay(outputs))

    monkeypatch.setattr("kubesmith.cli.cis.check_target", judged_by_replay)
    table = cli.invoke(app, ["cis", "check", "-i", str(inventory.path)])
    assert table.exit_code == 1
    lines = table.output.splitlines()
    assert f"{control_plane} (control_plane): 3 exception, 5 manual, 89 pass" in lines
    assert f"{worker} (worker): 1 exception, 1 fail, 23 pass" in lines
    assert (
        "  FAIL 4.1.5 kubelet kubeconfig permissions 600 or more restrictive: "
        "/etc/kubernetes/kubelet.conf: mode 644, wanted 600 or more restrictive"
    ) in lines
    assert f"error: 1 CIS item(s) fail, on {worker}" in lines
    as_json = cli.invoke(app, ["cis", "check", "-i", str(inventory.path), "--json"])
    # CliRunner mixes the progress lines (stderr) in; the document starts on its own line.
    output = as_json.output
    document = json.loads(output[output.index("\n{") : output.rindex("}") + 1])
    assert [n["role"] for n in document["nodes"]] == ["control_plane", "worker"]
    assert len(document["nodes"][1]["results"]) == 25
