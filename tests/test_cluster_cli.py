"""`kubesmith kubeconfig`, `kubesmith smoke` and the Kubernetes tags of `kubesmith provision`:
what they write, and the one-line errors for what the user got wrong."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from kubesmith.cli import app
from kubesmith.provision.admin import admin_kubeconfig
from kubesmith.provision.inventory import Inventory
from kubesmith.provision.target import STACK_INVENTORY, for_inventory, for_stack
from kubesmith.state.paths import stack_dir
from kubesmith.state.pki import Pki
from tests.clusterlab import local_spec, write_inventory
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    return "local"


def provisioned(directory: Path, control_planes: int = 1, workers: int = 1) -> Inventory:
    """An inventory whose PKI was issued, as after `kubesmith provision` (no nodes needed)."""
    inventory = write_inventory(directory, local_spec(control_planes, workers))
    Pki(directory / "pki", inventory.cluster).ensure(inventory.identities())
    return inventory


def test_kubeconfig_is_written_0600_with_the_admin_identity(stack: str, tmp_path: Path) -> None:
    inventory = provisioned(stack_dir(stack))
    assert inventory.path.name == STACK_INVENTORY
    output = tmp_path / "kube" / "config"
    result = runner.invoke(app, ["kubeconfig", "-s", stack, "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(output.read_text())
    (cluster,) = config["clusters"]
    # A single control plane: the API endpoint is its address, reachable from here.
    assert cluster["cluster"]["server"] == "https://10.203.0.10:6443"
    ca_pem = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    assert ca_pem == (stack_dir(stack) / "pki" / "ca.crt").read_bytes()
    (user,) = config["users"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "kubesmith:cluster-admins"
    )
    assert b"PRIVATE KEY" in base64.b64decode(user["user"]["client-key-data"])
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))


def test_kubeconfig_of_a_local_ha_cluster_points_at_a_control_plane(tmp_path: Path) -> None:
    """Nodes reach the API on their own loopback (the HA proxy); the controller cannot."""
    inventory = provisioned(tmp_path, control_planes=3, workers=1)
    assert inventory.all_vars["kubesmith_api_endpoint"] == "https://127.0.0.1:6443"
    config = yaml.safe_load(admin_kubeconfig(for_inventory(inventory.path)))
    first = inventory.hostvars["local-cp-1"]["ansible_host"]
    assert config["clusters"][0]["cluster"]["server"] == f"https://{first}:6443"


def test_kubeconfig_default_path_is_in_the_state_dir(stack: str) -> None:
    provisioned(stack_dir(stack))
    result = runner.invoke(app, ["kubeconfig", "-s", stack])
    assert result.exit_code == 0, result.output
    path = stack_dir(stack) / "admin.conf"
    assert str(path) in result.output
    assert path.stat().st_mode & 0o777 == 0o600
    # The program's function returns the same document (for its secret output).
    assert path.read_text() == admin_kubeconfig(for_stack(stack))


def test_kubeconfig_before_provisioning_says_what_to_do(stack: str) -> None:
    write_inventory(stack_dir(stack), local_spec(1, 1))
    result = runner.invoke(app, ["kubeconfig", "-s", stack])
    assert result.exit_code == 2
    assert "stack local: no admin certificate yet" in result.output
    assert "provision the cluster first" in result.output
    assert "Traceback" not in result.output


def test_kubeconfig_of_a_stack_without_nodes(stack: str) -> None:
    result = runner.invoke(app, ["kubeconfig", "-s", stack])
    assert result.exit_code == 2
    assert "stack local: no inventory at" in result.output


def test_kubeconfig_output_must_be_a_file(stack: str, tmp_path: Path) -> None:
    provisioned(stack_dir(stack))
    result = runner.invoke(app, ["kubeconfig", "-s", stack, "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--output: {tmp_path} is a directory" in result.output


@pytest.mark.parametrize("command", ["kubeconfig", "smoke"])
def test_stack_or_inventory_exactly_one(command: str, tmp_path: Path) -> None:
    neither = runner.invoke(app, [command])
    both = runner.invoke(app, [command, "-s", "local", "-i", str(tmp_path / "inv.yml")])
    for result in (neither, both):
        assert result.exit_code == 2
        assert "give exactly one of --stack/-s STACK or --inventory FILE" in result.output


def test_smoke_with_a_missing_inventory_names_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["smoke", "-i", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.yml'}: no such inventory file" in result.output


def test_provision_knows_the_kubernetes_tags(stack: str) -> None:
    write_inventory(stack_dir(stack), local_spec(1, 1))
    result = runner.invoke(app, ["provision", "-s", stack, "-t", "control_plane,kublet"])
    assert result.exit_code == 2
    assert "--tags: unknown tag kublet" in result.output
    for tag in ("api_proxy", "control_plane", "cni", "kubelet", "kube_proxy", "coredns"):
        assert tag in result.output


def test_certs_lists_every_certificate_soonest_first(stack: str) -> None:
    provisioned(stack_dir(stack))
    result = runner.invoke(app, ["certs", "-s", stack])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    paths = [line.split()[-1] for line in lines]
    assert "nodes/local-cp-1/apiserver.crt" in paths
    assert "controller/admin.crt" in paths
    assert "front-proxy-ca.crt" in paths
    # Leaves (1 year) come before the CAs (10 years).
    kinds = [line.split()[2] for line in lines]
    assert kinds == sorted(kinds, key=lambda k: k == "CA")
    assert all(int(line.split()[1].rstrip("d")) > 300 for line in lines if " leaf " in line)


def test_certs_fails_when_a_leaf_is_inside_the_renewal_window(stack: str) -> None:
    inventory = write_inventory(stack_dir(stack), local_spec(1, 1))
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=300)
    pki = Pki(stack_dir(stack) / "pki", inventory.cluster)
    pki.ensure(inventory.identities(), now=issued)
    result = runner.invoke(app, ["certs", "-s", stack])
    assert result.exit_code == 1
    assert "renew" in result.output
    assert "expired or expire within 90 days" in result.output
    assert "kubesmith certs --renew" in result.output
    # A provisioning run renews them (same keys): then nothing is due.
    pki.ensure(inventory.identities())
    assert runner.invoke(app, ["certs", "-s", stack]).exit_code == 0


def test_certs_before_provisioning(stack: str) -> None:
    write_inventory(stack_dir(stack), local_spec(1, 1))
    result = runner.invoke(app, ["certs", "-s", stack])
    assert result.exit_code == 2
    assert "no certificates in" in result.output
