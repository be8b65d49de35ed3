"""`kubesmith lxd init`: install and start LXD, then create the stack's pool, bridge and profile."""

from __future__ import annotations

import typer

from kubesmith.cli.console import err, out, reporter
from kubesmith.cli.options import LocalStack
from kubesmith.local import daemon, host
from kubesmith.local.connection import connect, socket_path
from kubesmith.local.stackspec import load_lxd_spec

#: The local backend's commands default to the `local` stack.

app = typer.Typer(help="Prepare this machine's LXD for the local backend.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="lxd")


@app.command("init")
def init(stack: str = LocalStack) -> None:
    """Install LXD if missing, start it, create the storage pool, bridge and node profile."""
    _, lxd = load_lxd_spec(stack)
    with reporter() as progress:
        installed = daemon.ensure_packages(progress)
    if installed:
        err.print(f"installed {', '.join(installed)}")
    socket = socket_path()
    if daemon.ensure_daemon(socket):
        err.print(f"started LXD (log: {daemon.log_file()})")
    for line in daemon.raise_kernel_limits():
        out.print(line)
    for line in host.init_host(connect(socket), stack, lxd):
        out.print(line)
