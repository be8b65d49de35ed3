"""`kubesmith config check`: good stacks pass; every kind of bad config fails in one line per
problem, naming the key the user wrote, with exit code 2 and no traceback."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubesmith.cli import app
from tests.conftest import REPO

runner = CliRunner()
Mutation = Callable[[dict[str, Any]], None]


def base(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(document["config"]["kubesmith:cluster"])


def write_project(root: Path, stack: str, cluster: Any) -> None:
    (root / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    (root / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": {"kubesmith:cluster": cluster}})
    )


def check(root: Path, stack: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(root))
    return runner.invoke(app, ["config", "check", "-s", stack])


def setter(path: str, value: Any) -> Mutation:
    def mutate(cluster: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = cluster
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return mutate


def deleter(path: str) -> Mutation:
    def mutate(cluster: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = cluster
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


# (stack to start from, mutation, key path that must be named, words the message must hold)
BAD_CASES: list[tuple[str, str, Mutation, str, str]] = [
    ("even-control-planes", "local", setter("controlPlanes", 2), "controlPlanes", "odd number"),
    ("zero-control-planes", "local", setter("controlPlanes", 0), "controlPlanes", "got 0"),
    ("negative-workers", "local", setter("workers", -1), "workers", ">= 0"),
    ("count-as-word", "local", setter("workers", "three"), "workers", "whole number"),
    (
        "count-as-string-digit",
        "local",
        setter("controlPlanes", "3"),
        "controlPlanes",
        "whole number",
    ),
    ("bool-as-string", "local", setter("production", "yes"), "production", "true or false"),
    ("malformed-pod-cidr", "local", setter("podCidr", "10.244.0.0/33"), "podCidr", "CIDR"),
    (
        "host-bits-service-cidr",
        "local",
        setter("serviceCidr", "10.96.0.1/12"),
        "serviceCidr",
        "host bits",
    ),
    ("cidr-not-a-string", "local", setter("podCidr", 10), "podCidr", "must be a string"),
    (
        "pod-overlaps-service",
        "local",
        setter("podCidr", "10.96.0.0/16"),
        "podCidr",
        "overlaps serviceCidr",
    ),
    (
        "pod-overlaps-subnet",
        "local",
        setter("podCidr", "10.203.0.0/16"),
        "podCidr",
        "overlaps lxd.subnet",
    ),
    (
        "service-overlaps-vpc",
        "dev",
        setter("serviceCidr", "10.20.0.0/16"),
        "serviceCidr",
        "overlaps aws.vpcCidr",
    ),
    (
        "dns-outside-service",
        "local",
        setter("clusterDns", "10.200.0.10"),
        "clusterDns",
        "outside serviceCidr",
    ),
    ("dns-is-api-address", "local", setter("clusterDns", "10.96.0.1"), "clusterDns", "reserved"),
    ("dns-not-an-address", "local", setter("clusterDns", "ten"), "clusterDns", "IPv4 address"),
    (
        "unpinned-version",
        "local",
        setter("kubernetesVersion", "1.20.0"),
        "kubernetesVersion",
        "not pinned",
    ),
    (
        "malformed-version",
        "local",
        setter("kubernetesVersion", "v1.35"),
        "kubernetesVersion",
        "version such as",
    ),
    ("unknown-backend", "local", setter("backend", "gcp"), "backend", "must be one of"),
    ("missing-backend", "local", deleter("backend"), "backend", "required"),
    ("missing-lxd-section", "local", deleter("lxd"), "lxd", "required when backend is 'lxd'"),
    ("missing-aws-section", "dev", deleter("aws"), "aws", "required when backend is 'aws'"),
    ("missing-aws-region", "dev", deleter("aws.region"), "aws.region", "required"),
    ("bad-aws-region", "dev", setter("aws.region", "Europe"), "aws.region", "AWS region"),
    (
        "world-open-admin-in-prod",
        "prod",
        setter("aws.adminCidrs", ["0.0.0.0/0"]),
        "aws.adminCidrs[0]",
        "production",
    ),
    ("empty-admin-cidrs", "dev", setter("aws.adminCidrs", []), "aws.adminCidrs", "not be empty"),
    ("missing-admin-cidrs", "dev", deleter("aws.adminCidrs"), "aws.adminCidrs", "required"),
    (
        "bad-admin-cidr-item",
        "dev",
        setter("aws.adminCidrs", ["10.0.0.0/8", "nope"]),
        "aws.adminCidrs[1]",
        "CIDR",
    ),
    (
        "prod-ha-in-one-zone",
        "prod",
        setter("aws.availabilityZones", ["eu-west-1a"]),
        "aws.availabilityZones",
        "3 zones",
    ),
    (
        "repeated-zone",
        "dev",
        setter("aws.availabilityZones", ["a", "a"]),
        "aws.availabilityZones",
        "repeat",
    ),
    ("vpc-too-small", "dev", setter("aws.vpcCidr", "10.20.0.0/28"), "aws.vpcCidr", "/16 to /24"),
    (
        "typo-top-level",
        "local",
        setter("contolPlanes", 3),
        "contolPlanes",
        "did you mean 'controlPlanes'",
    ),
    (
        "typo-nested",
        "local",
        setter("lxd.subnett", "10.1.0.0/24"),
        "lxd.subnett",
        "did you mean 'subnet'",
    ),
    ("unknown-key-no-match", "local", setter("flavour", "x"), "flavour", "unknown key"),
    ("invalid-name-uppercase", "local", setter("name", "My_Cluster"), "name", "DNS-1123"),
    ("invalid-name-too-long", "local", setter("name", "a" * 41), "name", "at most 40"),
    ("lxd-bad-memory", "local", setter("lxd.memory", "2 gigs"), "lxd.memory", "size such as"),
    ("lxd-zero-cpu", "local", setter("lxd.cpu", 0), "lxd.cpu", ">= 1"),
    (
        "lxd-bad-network-name",
        "local",
        setter("lxd.network", "Bridge_0"),
        "lxd.network",
        "lowercase",
    ),
    ("lxd-tiny-subnet", "local", setter("lxd.subnet", "10.203.0.0/30"), "lxd.subnet", "/29"),
    ("app-without-name", "local", setter("apps", [{"values": {}}]), "apps[0].name", "required"),
    ("app-bad-name", "local", setter("apps", [{"name": "Hello"}]), "apps[0].name", "DNS-1123"),
    (
        "app-listed-twice",
        "local",
        setter("apps", [{"name": "a"}, {"name": "a"}]),
        "apps",
        "more than once",
    ),
    ("apps-not-a-list", "local", setter("apps", "hello"), "apps", "must be a list"),
    # Pod Security admission and OIDC (docs/cluster.md, "Security").
    (
        "pod-security-level-misspelt",
        "local",
        setter("podSecurity.enforce", "strict"),
        "podSecurity.enforce",
        "'privileged', 'baseline' or 'restricted'",
    ),
    (
        "pod-security-key-misspelt",
        "local",
        setter("podSecurity.wran", "baseline"),
        "podSecurity.wran",
        "did you mean 'warn'",
    ),
    (
        "oidc-issuer-over-http",
        "local",
        setter("oidc", {"issuerUrl": "http://login.example.com", "clientId": "k"}),
        "oidc.issuerUrl",
        "https URL",
    ),
    (
        "oidc-without-client",
        "local",
        setter("oidc", {"issuerUrl": "https://login.example.com"}),
        "oidc.clientId",
        "is required",
    ),
    (
        "oidc-ca-file-missing",
        "local",
        setter(
            "oidc",
            {"issuerUrl": "https://i.example", "clientId": "k", "caFile": "/nonexistent/ca.pem"},
        ),
        "oidc.caFile",
        "cannot read /nonexistent/ca.pem",
    ),
    (
        "oidc-ca-file-not-pem",
        "local",
        setter("oidc", {"issuerUrl": "https://i.example", "clientId": "k", "caFile": __file__}),
        "oidc.caFile",
        "holds no PEM certificate",
    ),
    (
        "oidc-system-prefix",
        "local",
        setter(
            "oidc", {"issuerUrl": "https://i.example", "clientId": "k", "groupsPrefix": "system:"}
        ),
        "oidc.groupsPrefix",
        "reserved",
    ),
]


@pytest.mark.parametrize(
    ("stack", "mutate", "key", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CASES],
)
def test_bad_config_fails_in_one_line_naming_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stack: str,
    mutate: Mutation,
    key: str,
    words: str,
) -> None:
    cluster = base(stack)
    mutate(cluster)
    write_project(tmp_path, "t", cluster)
    result = check(tmp_path, "t", monkeypatch)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines
    assert all(line.startswith("error: ") for line in lines), lines
    matching = [line for line in lines if f"kubesmith:cluster.{key}:" in line]
    assert matching, f"no line names kubesmith:cluster.{key}: {lines}"
    assert any(words in line for line in matching), matching
    assert result.stdout == ""


def test_the_bad_case_matrix_is_broad() -> None:
    assert len(BAD_CASES) >= 25
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_shipped_stacks_pass_and_print_the_resolved_spec(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    result = runner.invoke(app, ["config", "check", "-s", stack])
    assert result.exit_code == 0, result.output
    assert f"Pulumi.{stack}.yaml is valid" in result.stdout
    # Defaults the user did not write are shown resolved.
    assert "clusterDns" in result.stdout
    assert "10.96.0.10" in result.stdout
    assert "kubernetesVersion" in result.stdout


def test_missing_stack_file_names_the_file_and_the_known_stacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    result = runner.invoke(app, ["config", "check", "-s", "staging"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "error: Pulumi.staging.yaml: no such stack file (stacks here: dev, local, prod)"
    )


def test_invalid_yaml_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    (tmp_path / "Pulumi.t.yaml").write_text("config:\n  kubesmith:cluster:\n    name: [unclosed\n")
    result = check(tmp_path, "t", monkeypatch)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: Pulumi.t.yaml:")
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.output


def test_missing_cluster_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    (tmp_path / "Pulumi.t.yaml").write_text("config:\n  aws:region: eu-west-1\n")
    result = check(tmp_path, "t", monkeypatch)
    assert result.exit_code == 2
    assert "no 'kubesmith:cluster' key" in result.stderr


def test_cluster_that_is_not_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, "t", ["name", "x"])
    result = check(tmp_path, "t", monkeypatch)
    assert result.exit_code == 2
    assert "kubesmith:cluster: must be a mapping" in result.stderr


def test_bad_stack_name_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    result = runner.invoke(app, ["config", "check", "-s", "../etc/passwd"])
    assert result.exit_code == 2
    assert "stack name '../etc/passwd'" in result.stderr


def test_outside_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a project the stacks kubesmith ships are read (labs and checks work anywhere)."""
    monkeypatch.delenv("KUBESMITH_PROJECT", raising=False)
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "check", "-s", "local"])
    assert result.exit_code == 0, result.output
    assert "kubesmith0" in result.stdout
    unknown = runner.invoke(app, ["config", "check", "-s", "mine"])
    assert unknown.exit_code == 2
    assert "Pulumi.mine.yaml: no such stack file (stacks here: dev, local, prod)" in unknown.stderr
