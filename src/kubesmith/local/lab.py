"""Labs: throwaway sets of nodes for role development, integration tests and benchmarks.

A lab is the stack's cluster shape under another name, created straight on LXD (no Pulumi
engine), with the same node code, image and profile as the stack's node pool. `create_lab`
returns once every node answers SSH with the stack's key and its host key is pinned, and
writes an Ansible inventory with the stack's groups and variables; `destroy_lab` removes the
lab's nodes and its directory. Both are idempotent.
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pylxd

from kubesmith.errors import ConfigError, UserError
from kubesmith.local import host
from kubesmith.local.connection import connect, label, labels
from kubesmith.local.image import find_image
from kubesmith.local.instances import (
    ADDRESS_TIMEOUT_S,
    delete_node,
    ensure_node,
    get_instance,
    image_source,
    in_parallel,
    managed_instances,
    stack_node,
)
from kubesmith.local.ssh import SSH_TIMEOUT_S, KnownHosts, load_key, wait_for_ssh
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.nodes import Node, Role, node_plan
from kubesmith.progress import SILENT, Reporter
from kubesmith.provision.inventory import api_endpoint, build_inventory, dump_inventory
from kubesmith.spec import ClusterSpec, LxdSpec, parse_cluster
from kubesmith.state.paths import state_dir
from kubesmith.state.sshkeys import KeyPair, stack_key

SSH_USER = "root"
_LAB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
#: Lab settings the user gives on the command line, by the spec key they override.
_OPTION_FOR_KEY = {
    "kubesmith:cluster.name": "lab name",
    "kubesmith:cluster.controlPlanes": "--control-planes",
    "kubesmith:cluster.workers": "--workers",
}


@dataclass(frozen=True)
class Lab:
    name: str
    stack: str
    spec: ClusterSpec
    nodes: tuple[Node, ...]
    directory: Path
    key: KeyPair

    @property
    def inventory_path(self) -> Path:
        return self.directory / "inventory.yml"

    @property
    def known_hosts_path(self) -> Path:
        return self.directory / "known_hosts"


@dataclass(frozen=True)
class Teardown:
    deleted: tuple[str, ...]
    removed_directory: bool

    @property
    def found(self) -> bool:
        return bool(self.deleted) or self.removed_directory


def check_lab_name(name: str) -> str:
    if not _LAB_NAME.fullmatch(name):
        raise UserError(
            f"lab name {name!r}: use 1-40 lowercase letters, digits or '-' "
            "(it prefixes the node names)"
        )
    return name


def lab_dir(name: str, root: Path | None = None) -> Path:
    return state_dir(root) / "labs" / check_lab_name(name)


def lab_spec(base: ClusterSpec, name: str, control_planes: int, workers: int) -> ClusterSpec:
    """The stack's spec with the lab's name and node counts, validated like a stack's."""
    raw = base.model_dump(by_alias=True, exclude_none=True)
    raw.update(name=name, controlPlanes=control_planes, workers=workers)
    try:
        return parse_cluster(raw)
    except ConfigError as exc:
        problems = []
        for problem in exc.problems:
            for key, option in _OPTION_FOR_KEY.items():
                problem = problem.replace(f"{key}:", f"{option}:")
            problems.append(problem)
        raise UserError("; ".join(problems)) from None


def _check_host_ready(client: pylxd.Client, stack: str, lxd: LxdSpec) -> None:
    profile = host.profile_name(stack)
    if not client.profiles.exists(profile):
        raise UserError(
            f"LXD has no profile {profile} for stack {stack}",
            hint=f"run: kubesmith lxd init -s {stack}",
        )
    if not lxd.remote_image and find_image(client, lxd.image) is None:
        raise UserError(
            f"LXD has no node image {lxd.image}",
            hint=f"run: kubesmith image build -s {stack}",
        )


def create_lab(
    name: str,
    *,
    stack: str = "local",
    control_planes: int | None = None,
    workers: int | None = None,
    root: Path | None = None,
    socket: Path | None = None,
    address_timeout: float = ADDRESS_TIMEOUT_S,
    ssh_timeout: float = SSH_TIMEOUT_S,
    reporter: Reporter = SILENT,
) -> Lab:
    """Create (or reuse) the lab's nodes, wait for SSH, pin host keys, write the inventory.

    ``reporter`` gets one phase for the nodes and a line per step of each node.
    """
    check_lab_name(name)
    base, lxd = load_lxd_spec(stack, root)
    spec = lab_spec(
        base,
        name,
        base.control_planes if control_planes is None else control_planes,
        base.workers if workers is None else workers,
    )
    client = connect(socket)
    _check_host_ready(client, stack, lxd)
    key = stack_key(stack, root)
    directory = lab_dir(name, root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    known_hosts = KnownHosts(directory / "known_hosts")
    private_key = load_key(key.private_path)
    image = image_source(lxd)

    plan = node_plan(spec)
    wanted = {node for node, _ in plan}
    existing = managed_instances(client, lab=name)
    for instance in existing:
        if label(instance.config, "stack") != stack:
            raise UserError(
                f"lab {name} belongs to stack {label(instance.config, 'stack')}, not {stack}; "
                f"run: kubesmith lab down {name}"
            )
    extra = [i.name for i in existing if i.name not in wanted]
    if extra:
        reporter.phase(f"lab {name}: removing nodes no longer in it: {', '.join(extra)}")
        in_parallel(extra, lambda node: delete_node(connect(socket), node))

    answering: list[str] = []
    counting = threading.Lock()

    def bring_up(entry: tuple[str, Role]) -> Node:
        node, role = entry
        lxd_client = connect(socket)
        fresh = get_instance(lxd_client, node) is None
        address = ensure_node(
            lxd_client,
            stack_node(
                stack,
                lxd,
                node,
                image=image,
                labels=labels(stack=stack, cluster=name, lab=name, role=role, owner="lab"),
                public_key=key.public_key,
            ),
            address_timeout,
            lambda step: reporter.note(f"{node}: {step}"),
        )
        if fresh:
            # A new node may get an address an earlier node had: that pin is stale.
            known_hosts.forget([address])
        wait_for_ssh(
            node,
            address,
            user=SSH_USER,
            key=private_key,
            known_hosts=known_hosts,
            timeout=ssh_timeout,
        )
        reporter.note(f"{node}: SSH ready")
        with counting:
            answering.append(node)
            reporter.detail(f"{len(answering)}/{len(plan)} answer SSH")
        return Node(node, role, address, None, SSH_USER)

    reporter.phase(f"lab {name}: {len(plan)} node(s) from stack {stack}")
    nodes = tuple(in_parallel(plan, bring_up))
    inventory = build_inventory(
        spec,
        nodes,
        endpoint=api_endpoint(spec, nodes),
        ssh_private_key_file=key.private_path,
        known_hosts_file=known_hosts.path,
    )
    lab = Lab(name, stack, spec, nodes, directory, key)
    temporary = lab.inventory_path.with_suffix(".tmp")
    temporary.write_text(dump_inventory(inventory), encoding="utf-8")
    temporary.replace(lab.inventory_path)
    return lab


def destroy_lab(
    name: str,
    *,
    root: Path | None = None,
    socket: Path | None = None,
    reporter: Reporter = SILENT,
) -> Teardown:
    """Delete every node of lab ``name`` and its directory; nothing to do is not an error."""
    directory = lab_dir(name, root)
    client = connect(socket)
    nodes = [i.name for i in managed_instances(client, lab=name)]

    def delete(node: str) -> tuple[str, bool]:
        gone = delete_node(connect(socket), node)
        reporter.note(f"{node}: {'deleted' if gone else 'already gone'}")
        return node, gone

    if nodes:
        reporter.phase(f"lab {name}: deleting {len(nodes)} node(s)")
    deleted = in_parallel(nodes, delete)
    removed = directory.exists()
    if removed:
        shutil.rmtree(directory)
    return Teardown(tuple(node for node, gone in deleted if gone), removed)
