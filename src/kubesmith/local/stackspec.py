"""The stack settings the local backend reads: a cluster spec whose backend is lxd."""

from __future__ import annotations

from pathlib import Path

from kubesmith.errors import UserError
from kubesmith.spec import ClusterSpec, LxdSpec
from kubesmith.stackfile import load_spec, stack_file


def load_lxd_spec(stack: str, root: Path | None = None) -> tuple[ClusterSpec, LxdSpec]:
    spec = load_spec(stack, root)
    if spec.backend != "lxd" or spec.lxd is None:
        raise UserError(
            f"{stack_file(stack, root).name}: kubesmith:cluster.backend is {spec.backend!r}; "
            "the local backend needs a stack with backend: lxd"
        )
    return spec, spec.lxd
