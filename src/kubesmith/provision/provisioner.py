"""One provisioning run: PKI, verified artifacts, then the playbook.

Order matters for safety: the certificates are issued and every release download (the
Kubernetes server tarball included, see cluster.py) is fetched and checked against its pinned
checksum before ansible-runner starts, so a wrong checksum or an unusable PKI stops the run
while no node has been touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import ansible_runner

from kubesmith import versions
from kubesmith.downloads import download
from kubesmith.downloads.download import Download
from kubesmith.errors import KubesmithError
from kubesmith.provision import kubernetes, scope
from kubesmith.provision.runner import (
    EventHandler,
    RunRequest,
    RunResult,
    ansible_path_env,
    run_playbook,
)
from kubesmith.provision.target import Target
from kubesmith.provision.variables import (
    BINARIES_VAR,
    cluster_variables,
    node_base_variables,
    release_needs,
)
from kubesmith.resources import playbooks_dir
from kubesmith.state import records
from kubesmith.state.lock import cluster_lock
from kubesmith.state.pki import PkiReport


@dataclass(frozen=True)
class Options:
    playbook: str = "site.yml"
    tags: Sequence[str] = ()
    limit: str | None = None
    check: bool = False
    #: Extra variables for this playbook (e.g. etcd_restore_snapshot).
    extravars: Mapping[str, object] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


#: The playbook that builds the cluster; only it needs the Kubernetes variables (cluster.py).
SITE_PLAYBOOK = "site.yml"
#: site.yml's first part (node_prep, pki, containerd, etcd), run alone for base-only tags.
BASE_PLAYBOOK = "base.yml"


@dataclass
class Outcome:
    pki: PkiReport
    downloaded: list[Download]
    run: RunResult


def probe_architectures(target: Target, hosts: Sequence[str]) -> dict[str, str]:
    """Each host's release architecture (amd64, arm64), read with one `uname -m`."""
    machines: dict[str, str] = {}
    failures: list[str] = []

    def collect(event: dict[str, object]) -> bool:
        data = event.get("event_data")
        if isinstance(data, dict):
            host, res = str(data.get("host")), data.get("res") or {}
            if event.get("event") == "runner_on_ok" and isinstance(res, dict):
                machines[host] = str(res.get("stdout", "")).strip()
            elif event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
                failures.append(host)
        return False

    target.runner_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ansible_runner.run(
        private_data_dir=str(target.runner_dir),
        inventory=str(target.inventory.path),
        host_pattern=",".join(hosts),
        module="ansible.builtin.command",
        module_args="uname -m",
        envvars={"ANSIBLE_CONFIG": str(playbooks_dir() / "ansible.cfg"), **ansible_path_env()},
        event_handler=collect,
        quiet=True,
        rotate_artifacts=1,
    )
    missing = sorted(set(hosts) - set(machines))
    if missing:
        raise KubesmithError(
            f"cannot read the architecture of {', '.join(missing)} (unreachable or failing); "
            "release downloads need it"
        )
    return {host: download.release_arch(machine) for host, machine in machines.items()}


def fetch_releases(
    target: Target,
) -> tuple[dict[tuple[str, str], Download], dict[str, str], list[Download]]:
    """Fetch and verify every release download the hosts need (nothing when all is distro)."""
    needs = release_needs(target)
    if not needs:
        return {}, {}, []
    arch_of = probe_architectures(target, sorted(needs))
    planned = {
        (name, arch_of[host]): download.node_component(
            versions.component(name),
            arch_of[host],
            target.cache_dir,
            target.artifacts.mirror_base_url,
        )
        for host, names in needs.items()
        for name in names
    }
    downloaded = download.fetch_all(planned.values())
    return planned, arch_of, downloaded


#: site.yml's tags for the node base (node_prep, pki, containerd, etcd): runs limited to these
#: run base.yml and need none of the Kubernetes preparation.
BASE_TAGS = ("prep", "pki", "runtime", "etcd")
#: site.yml's tags for the Kubernetes plays, in play order.
KUBERNETES_TAGS = ("api_proxy", "control_plane", "cni", "kubelet", "kube_proxy", "coredns")
#: Every tag `kubesmith provision --tags` accepts (tests check them against the playbooks).
TAGS = BASE_TAGS + KUBERNETES_TAGS


def _runs_kubernetes(tags: Sequence[str]) -> bool:
    return not tags or not set(tags) <= set(BASE_TAGS)


def provision(
    target: Target,
    options: Options,
    on_event: EventHandler | None = None,
    attach: kubernetes.Attach | None = None,
) -> Outcome:
    """Run ``options.playbook`` on ``target``. ``attach`` gives nodes the read-only mounts of
    the verified binaries (kubesmith.local.shares on LXD); without it, or in check mode, the
    release role copies the binaries over SSH instead. Holds the cluster's change lock
    (kubesmith.state.lock): another change of the same cluster is refused."""
    what = f"{options.playbook}{' --check' if options.check else ''}"
    with cluster_lock(target.state_dir, f"provisioning ({what})"):
        return _provision(target, options, on_event, attach)


def _provision(
    target: Target,
    options: Options,
    on_event: EventHandler | None,
    attach: kubernetes.Attach | None,
) -> Outcome:
    pki = kubernetes.cluster_pki(target)
    report = pki.ensure(target.inventory.identities())
    releases, arch_of, fetched = fetch_releases(target)
    downloaded: list[Download] = list(fetched)
    extravars = cluster_variables(target.inventory.cluster).extravars()
    # The Kubernetes roles' Debian packages join node_prep's one apt transaction.
    kubernetes_packages: dict[str, list[str]] = {}
    playbook = options.playbook
    if playbook == SITE_PLAYBOOK and not _runs_kubernetes(options.tags):
        # The same plays without the Kubernetes ones: nothing of theirs is prepared, parsed or
        # argument-checked (no download, no pod ranges allocated, works offline).
        playbook = BASE_PLAYBOOK
    if playbook == SITE_PLAYBOOK:
        prepared = kubernetes.prepare(target, arch_of, dict(options.extravars), probe_architectures)
        extravars |= prepared.variables.extravars()
        kubernetes_packages = prepared.packages
        downloaded += prepared.downloaded
        if prepared.mounts and attach is not None and not options.check:
            attach(prepared.mounts)
    base = node_base_variables(target, pki, releases, arch_of, kubernetes_packages)
    extravars |= base.extravars()
    extravars.update(options.extravars)
    request = RunRequest(
        private_data_dir=target.runner_dir,
        inventory=target.inventory.path,
        playbook=playbook,
        extravars=extravars,
        tags=options.tags,
        limit=options.limit,
        check=options.check,
        env=options.env,
    )
    result = run_playbook(request, on_event)
    if not options.check:
        binaries = extravars.get(BINARIES_VAR) if playbook == SITE_PLAYBOOK else None
        records.record_run(
            target.state_dir,
            ok=result.ok,
            changed=sum(s.changed for s in result.stats.values()),
            failure=result.failures[0].describe() if result.failures else result.error,
            kubernetes_binaries=binaries if isinstance(binaries, bool) else None,
        )
        if result.ok and playbook in (SITE_PLAYBOOK, BASE_PLAYBOOK):
            # What each host ran with: `provision --limit` compares against it (scope.py).
            scope.record_run(target.state_dir, target.inventory, list(result.stats))
    return Outcome(report, downloaded, result)
