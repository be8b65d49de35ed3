"""Pod Security admission and OIDC on a real LXD control plane, at configuration level.

kube-apiserver cannot run here (no Kubernetes binaries), so whether it admits or refuses a
pod is checked only in the e2e tier (tests/e2e). One lab (a single control plane) is
provisioned with `kubesmith provision --no-kubernetes-binaries` and a spec in the inventory
that sets non-default Pod Security levels and OIDC with a CA file on the controller; the
test reads what the control_plane role left on the node: both configuration files with the
content kubesmith built for the spec, root-only, named by the apiserver unit's flags. Then a
second run changes nothing, and a changed level rewrites the admission configuration and
marks kube-apiserver (only) for a restart: the role's handlers restart what that fact
names (they are skipped without binaries; docs/cluster.md, "Restarts").
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.provision import flags
from kubesmith.provision.apiserver_config import (
    admission_configuration,
    authentication_configuration,
)
from kubesmith.spec import parse_cluster
from tests.integration.conftest import REPO, LxdHost, kubesmith, unique_name
from tests.integration.test_cluster import Cluster

pytestmark = pytest.mark.integration

ADMISSION = "/etc/kubernetes/admission-config.yaml"
AUTHENTICATION = "/etc/kubernetes/authentication-config.yaml"
APISERVER_UNIT = "/etc/systemd/system/kube-apiserver.service"
#: The control_plane role's task whose fact names the services its handlers restart.
RESTART_NOTE = "Control plane | note the services whose files changed"


def issuer_ca(path: Path) -> str:
    """A self-signed CA certificate (the OIDC issuer's), written to ``path``; its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubesmith test issuer CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    path.write_text(pem, encoding="utf-8")
    return pem


def set_security(
    inventory: Path, pod_security: dict[str, str], oidc: dict[str, Any] | None
) -> None:
    data = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    cluster = data["all"]["vars"]["kubesmith_cluster"]
    cluster["podSecurity"] = pod_security
    cluster.pop("oidc", None)
    if oidc is not None:
        cluster["oidc"] = oidc
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def restarts_noted(artifacts: Path, before: set[Path]) -> dict[str, list[str]]:
    """Host -> the services the control_plane role marked for restart, in the runs whose
    artifact directories are not in ``before``."""
    noted: dict[str, list[str]] = {}
    for run in set(artifacts.glob("*")) - before:
        for path in sorted(run.glob("job_events/*.json")):
            event = json.loads(path.read_text(encoding="utf-8"))
            data = event.get("event_data", {})
            if event.get("event") == "runner_on_ok" and data.get("task") == RESTART_NOTE:
                facts = data["res"]["ansible_facts"]
                noted[data["host"]] = facts["__control_plane_restart_services"]
    return noted


def provision(inventory: Path, *more: str) -> str:
    result = kubesmith(
        "provision", "--inventory", str(inventory), "--no-kubernetes-binaries", *more
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_admission_and_authentication_configuration_on_a_real_control_plane(
    lxd_ready: LxdHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBESMITH_PROJECT", str(REPO))
    ca_pem = issuer_ca(tmp_path / "issuer-ca.pem")
    levels = {"enforce": "restricted", "warn": "restricted", "audit": "baseline"}
    oidc = {
        "issuerUrl": "https://login.example.test/realms/k8s",
        "clientId": "kubernetes",
        "usernameClaim": "email",
        "usernamePrefix": "",
        "groupsClaim": "roles",
        "groupsPrefix": "sso:",
        "caFile": str(tmp_path / "issuer-ca.pem"),
    }
    name = unique_name()
    try:
        made = create_lab(
            name, stack=lxd_ready.stack, control_planes=1, workers=0, socket=lxd_ready.socket
        )
        inventory = made.inventory_path
        artifacts = inventory.parent / "ansible" / "artifacts"
        set_security(inventory, levels, oidc)
        lab = Cluster(inventory, made.directory, provision(inventory))
        (host,) = lab.hosts
        spec = parse_cluster(lab.vars["kubesmith_cluster"])

        found = lab.snapshot(host, [ADMISSION, AUTHENTICATION, APISERVER_UNIT])
        for path in (ADMISSION, AUTHENTICATION):
            assert (found[path]["mode"], found[path]["owner"], found[path]["group"]) == (
                "600",
                "root",
                "root",
            ), path
        admission = yaml.safe_load(found[ADMISSION]["text"])
        assert admission == admission_configuration(spec)
        (plugin,) = admission["plugins"]
        defaults = plugin["configuration"]["defaults"]
        assert {mode: defaults[mode] for mode in levels} == levels

        authentication = yaml.safe_load(found[AUTHENTICATION]["text"])
        assert authentication == authentication_configuration(spec)
        (jwt,) = authentication["jwt"]
        assert jwt["issuer"]["url"] == oidc["issuerUrl"]
        assert jwt["issuer"]["audiences"] == ["kubernetes"]
        assert jwt["issuer"]["certificateAuthority"] == ca_pem
        assert jwt["claimMappings"]["username"] == {"claim": "email", "prefix": ""}
        assert jwt["claimMappings"]["groups"] == {"claim": "roles", "prefix": "sso:"}

        _, apiserver = flags.parse_exec_start(found[APISERVER_UNIT]["text"])
        assert apiserver["admission-control-config-file"] == ADMISSION
        assert apiserver["authentication-config"] == AUTHENTICATION
        assert not [f for f in apiserver if f.startswith("oidc-")]
        assert flags.problems("kube-apiserver", spec.kubernetes_minor, apiserver) == []

        # A second run changes nothing.
        assert "1 hosts provisioned, 0 changes" in provision(inventory)

        # A changed level rewrites the admission configuration only, and marks kube-apiserver
        # (and nothing else) for a restart.
        before = set(artifacts.glob("*"))
        set_security(inventory, {**levels, "enforce": "baseline"}, oidc)
        provision(inventory, "--tags", "control_plane")
        after = lab.snapshot(host, [ADMISSION, AUTHENTICATION, APISERVER_UNIT])
        changed = yaml.safe_load(after[ADMISSION]["text"])
        assert changed["plugins"][0]["configuration"]["defaults"]["enforce"] == "baseline"
        assert after[AUTHENTICATION]["text"] == found[AUTHENTICATION]["text"]
        assert after[APISERVER_UNIT]["text"] == found[APISERVER_UNIT]["text"]
        assert restarts_noted(artifacts, before) == {host: ["kube-apiserver"]}

        # Without oidc the apiserver is no longer told to read the authentication file.
        before = set(artifacts.glob("*"))
        set_security(inventory, {**levels, "enforce": "baseline"}, None)
        provision(inventory, "--tags", "control_plane")
        _, apiserver = flags.parse_exec_start(
            lab.snapshot(host, [APISERVER_UNIT])[APISERVER_UNIT]["text"]
        )
        assert "authentication-config" not in apiserver
        assert apiserver["admission-control-config-file"] == ADMISSION
        assert restarts_noted(artifacts, before) == {host: ["kube-apiserver"]}
    finally:
        destroy_lab(name, socket=lxd_ready.socket)
