"""`kubesmith image build`: the Debian node image the local backend launches nodes from."""

from __future__ import annotations

import typer

from kubesmith.cli.console import download_progress, out, reporter
from kubesmith.cli.options import LocalStack
from kubesmith.local.connection import connect
from kubesmith.local.image import build_stack_image
from kubesmith.local.stackspec import load_lxd_spec
from kubesmith.progress import duration

app = typer.Typer(help="Build the node image for the local backend.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="image")


@app.command("build")
def build(
    stack: str = LocalStack,
    force: bool = typer.Option(
        False, "--force", help="Rebuild even when the inputs are unchanged."
    ),
) -> None:
    """Build the image under lxd.image (skipped when unchanged, or when lxd.remoteImage is set)."""
    spec, lxd = load_lxd_spec(stack)
    if lxd.remote_image:
        out.print(f"stack {stack} uses lxd.remoteImage {lxd.remote_image}; nothing to build")
        return
    client = connect()
    with reporter() as progress, download_progress() as downloads:
        result = build_stack_image(
            client, spec, force=force, reporter=progress, download_progress=downloads
        )
    state = "built" if result.built else "up to date"
    out.print(
        f"image {result.alias}: {state} in {duration(result.seconds)} "
        f"(fingerprint {result.fingerprint[:12]}, inputs {result.input_hash[:12]})"
    )
