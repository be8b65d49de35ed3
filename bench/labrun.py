"""What the provisioning benchmarks share: a temporary state directory, a lab made and removed
around a case, a timed run with the CPU it cost, and the rows they print.

`node_cpu_s` is the CPU time the lab's containers used during the run (their cgroups, read
through LXD), `controller_cpu_s` that of Ansible on this machine (the run's child processes),
and `cpu_floor_s` their sum divided by this machine's cores: no run can be faster than that on
this machine, whose cores also run every node.
"""

from __future__ import annotations

import os
import resource
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubesmith.local import daemon
from kubesmith.local.connection import connect, socket_path
from kubesmith.local.host import init_host
from kubesmith.local.image import build_stack_image, stack_node_base
from kubesmith.local.lab import create_lab, destroy_lab
from kubesmith.local.shares import attach
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.provision.provisioner import Options, provision
from kubesmith.provision.runner import EventHandler, RunResult
from kubesmith.provision.target import for_inventory


@contextmanager
def bench_home(prefix: str) -> Iterator[None]:
    """A fresh KUBESMITH_HOME for the bench's labs and state, the caller's restored after."""
    previous = os.environ.get("KUBESMITH_HOME")
    with tempfile.TemporaryDirectory(prefix=prefix) as home:
        os.environ["KUBESMITH_HOME"] = home
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("KUBESMITH_HOME", None)
            else:
                os.environ["KUBESMITH_HOME"] = previous


def prepare_stack(stack: str) -> tuple[str, int]:
    """Make sure the stack's LXD objects and image exist (not timed): the storage pool's
    driver, and how many node-base packages the image carries."""
    spec, lxd = load_lxd_spec(stack)
    daemon.ensure_daemon(socket_path())
    daemon.raise_kernel_limits()
    client = connect()
    init_host(client, stack, lxd)
    build_stack_image(client, spec)
    return str(client.storage_pools.get(lxd.storage_pool).driver), len(stack_node_base(spec))


@contextmanager
def lab(prefix: str, planes: int, workers: int = 0) -> Iterator[tuple[Path, list[str]]]:
    """A lab of the local stack answering SSH (not timed): its inventory and node names."""
    name = f"{prefix}-{secrets.token_hex(2)}"
    try:
        made = create_lab(name, control_planes=planes, workers=workers)
        yield made.inventory_path, [node.name for node in made.nodes]
    finally:
        destroy_lab(name)


def nodes_cpu_seconds(names: list[str]) -> float:
    """CPU time the instances ``names`` used since they started (their cgroups)."""
    client = connect()
    return float(sum(client.instances.get(name).state().cpu["usage"] for name in names)) / 1e9


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (Ansible, the provider server)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Run:
    seconds: float
    changed: int
    node_cpu: float
    controller_cpu: float

    def fields(self) -> dict[str, object]:
        cores = os.cpu_count() or 1
        return {
            "seconds": round(self.seconds, 1),
            "changed": self.changed,
            "node_cpu_s": round(self.node_cpu, 1),
            "controller_cpu_s": round(self.controller_cpu, 1),
            "cpu_floor_s": round((self.node_cpu + self.controller_cpu) / cores, 1),
        }


def timed_run(
    inventory: Path,
    nodes: list[str],
    options: Options,
    on_event: EventHandler | None = None,
    mirror: str | None = None,
) -> Run:
    """One provisioning run of ``inventory``: wall time, changes, and the CPU it cost.
    ``mirror``: release downloads come from there (kubesmith provision --mirror)."""
    target = for_inventory(inventory, mirror_base_url=mirror)
    return measured(nodes, lambda: provision(target, options, on_event, attach).run)


def measured(nodes: list[str], action: Callable[[], RunResult], *, with_self: bool = False) -> Run:
    """``action`` (one playbook run) timed, with the CPU the nodes and Ansible spent, plus
    this process's own (``with_self``: the controller's downloads, checksums, unpacking)."""

    def controller() -> float:
        own = time.process_time() if with_self else 0.0
        return children_cpu_seconds() + own

    node_cpu, controller_cpu = nodes_cpu_seconds(nodes), controller()
    started = time.monotonic()
    result = action()
    seconds = time.monotonic() - started
    result.raise_for_failure("provisioning")
    return Run(
        seconds,
        sum(s.changed for s in result.stats.values()),
        nodes_cpu_seconds(nodes) - node_cpu,
        controller() - controller_cpu,
    )


def row(case: str, run: Run, targets: Mapping[str, float], **extra: object) -> dict[str, object]:
    """A table row: the run's fields, and whether it met its target when it has one."""
    found: dict[str, object] = {"case": case, **run.fields()}
    if case in targets:
        found["target"] = targets[case]
        found["met"] = run.seconds <= targets[case]
    return found | extra


def ratio_row(case: str, larger: float, smaller: float, limit: float) -> dict[str, object]:
    """How a larger lab's cold time compares with a smaller one's."""
    ratio = larger / smaller
    return {
        "case": case,
        "seconds": round(larger, 1),
        "ratio": round(ratio, 2),
        "target": f"ratio <= {limit}",
        "met": ratio <= limit,
    }
