"""`kubesmith preview|up|destroy|inventory -s STACK`: the stack's machines, through Pulumi;
`kubesmith stack new|sweep`: ephemeral stacks (CI) made from a template and swept when stale.

Every command validates Pulumi.STACK.yaml first, so configuration errors show before anything
is downloaded; then it gets the Pulumi CLI (PATH's when supported, else kubesmith's own) and,
except `inventory`, the provider plugins, from the stack's artifacts mirror when it names one
(see kubesmith.program.automation for what runs and what is unverified without a real CLI).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from kubesmith.cli.console import download_progress, out, progress
from kubesmith.cli.options import Stack, confirmed
from kubesmith.errors import KubesmithError, UserError
from kubesmith.program import automation, sweep
from kubesmith.spec import ClusterSpec
from kubesmith.stackfile import load_spec, new_stack_file
from kubesmith.state.paths import forget_stack, project_root, stack_dir

if TYPE_CHECKING:
    from pulumi import automation as auto


def register(root: typer.Typer) -> None:
    root.command("preview")(preview)
    root.command("up")(up)
    root.command("destroy")(destroy)
    root.command("inventory")(inventory)
    stacks = typer.Typer(
        help="Ephemeral stacks: make one from a template, sweep stale ones.",
        no_args_is_help=True,
    )
    stacks.command("new")(new)
    stacks.command("sweep")(sweep_stacks)
    root.add_typer(stacks, name="stack")


def _progress(line: str) -> None:
    # Pulumi's lines go out as they come (no markup, no rewrapping), like all progress.
    progress.out(line, highlight=False)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ready(stack: str, *, plugins: bool = True) -> auto.PulumiCommand:
    """The checked stack's Pulumi CLI, with the plugins installed unless not needed."""
    return _tools(load_spec(stack), plugins=plugins)


def _tools(spec: ClusterSpec, *, plugins: bool = True) -> auto.PulumiCommand:
    with download_progress() as progress:
        return automation.pulumi_command(
            project_root(), spec.artifacts.mirror_base_url, _progress, progress, plugins=plugins
        )


def confirm_destroy(
    stack: str,
    *,
    yes: bool,
    interactive: bool,
    ask: Callable[[str], bool],
    remove: bool = False,
) -> bool:
    """Whether to go ahead: --yes, or a person at a terminal who says so."""
    also = (
        ", its Pulumi stack and its controller state (PKI, SSH key, pod ranges, records)"
        if remove
        else ""
    )
    question = f"Destroy every resource of stack {stack!r}{also}?"
    return confirmed(
        f"destroy stack {stack!r}", question, yes=yes, interactive=interactive, ask=ask
    )


def preview(stack: str = Stack) -> None:
    """Show what `up` would create, change or delete for the stack."""
    command = _ready(stack)
    found = automation.preview(stack, project_root(), command, _progress)
    summary = ", ".join(f"{count} to {op}" for op, count in sorted(found.changes.items()))
    out.print(f"stack {stack}: {summary or 'no changes'}")
    if found.hosts:
        out.print("provisioning, host by host:")
        for line in found.hosts:
            out.print(f"  {line}", highlight=False, markup=False)


def up(stack: str = Stack) -> None:
    """Create or update the stack's machines and print where its API is."""
    command = _ready(stack)
    outputs = automation.up(stack, project_root(), command, _progress)
    nodes = outputs.get("nodes") or []
    out.print(
        f"stack {stack} is up: {len(nodes)} nodes, API at {outputs.get('apiEndpoint')}; "
        f"inventory: kubesmith inventory -s {stack}"
    )


def destroy(
    stack: str = Stack,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; needed without a terminal."),
    remove: bool = typer.Option(
        False,
        "--remove",
        help="Also remove the stack from the Pulumi backend and its controller state (PKI, "
        "SSH key, pod ranges, version records), so a new stack of that name starts clean; "
        "Pulumi.STACK.yaml is kept.",
    ),
) -> None:
    """Delete every resource of the stack."""
    spec = load_spec(stack)
    confirmed = confirm_destroy(
        stack, yes=yes, interactive=_stdin_is_terminal(), ask=typer.confirm, remove=remove
    )
    if not confirmed:
        out.print("destroy cancelled; nothing was changed")
        raise typer.Exit(1)
    command = _tools(spec)
    root = project_root()
    automation.destroy(stack, root, command, _progress, remove=remove)
    if remove:
        removed = forget_stack(stack, root)
        where = f"; its state in {removed} is deleted" if removed else ""
        out.print(f"stack {stack} destroyed and removed{where}")
    else:
        out.print(
            f"stack {stack} destroyed; its controller state (PKI, SSH key, pod ranges) is "
            f"kept in {stack_dir(stack, root)} (destroy --remove deletes it)",
            highlight=False,
        )


def inventory(stack: str = Stack) -> None:
    """Print the stack's Ansible inventory (YAML) as recorded by its last `up`."""
    command = _ready(stack, plugins=False)
    text = automation.stack_output(stack, project_root(), command, "inventory")
    typer.echo(str(text), nl=False)


def new(
    name: str = typer.Argument(..., help="The new stack's name (also its cluster's name)."),
    source: str = typer.Option(
        ..., "--from", help="The stack whose Pulumi.<stack>.yaml is copied (an AWS stack)."
    ),
) -> None:
    """Write Pulumi.NAME.yaml from a template stack, its cluster named NAME."""
    path = new_stack_file(name, source, project_root())
    out.print(f"{path.name} written from Pulumi.{source}.yaml; next: kubesmith up -s {name}")


def sweep_stacks(
    prefix: str = typer.Option(..., "--prefix", help="Only stacks whose name starts so."),
    older_than: str = typer.Option(
        ..., "--older-than", help="Age of the last update, such as 6h, 90m or 2d."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list what would be destroyed; change nothing."
    ),
) -> None:
    """Destroy and remove the stacks named PREFIX* whose last update is older than a limit."""
    if not prefix:
        raise UserError("--prefix '': an empty prefix would sweep every stack")
    limit = sweep.parse_age(older_than)
    root = project_root()
    with download_progress() as downloads:
        # Plugins only when something may be destroyed; the listing needs none.
        command = automation.pulumi_command(root, None, _progress, downloads, plugins=not dry_run)
    found = sweep.candidates(sweep.list_stacks(root, command), prefix, limit, datetime.now(UTC))
    failed: list[str] = []
    for stack in found:
        age = sweep.describe_age(stack.age)
        if not stack.stale:
            out.print(f"{stack.short_name}: kept ({stack.reason}, {age})", highlight=False)
        elif dry_run:
            out.print(f"{stack.short_name}: would destroy (last update {age})", highlight=False)
        else:
            out.print(f"{stack.short_name}: destroying (last update {age})", highlight=False)
            try:
                automation.destroy(stack.name, root, command, _progress, remove=True)
            except KubesmithError as exc:
                failed.append(f"{stack.short_name} ({exc.message})")
                continue
            forget_stack(stack.short_name, root)
    stale = sum(stack.stale for stack in found)
    if failed:
        raise KubesmithError(
            f"sweep: {len(failed)} of {stale} stale stacks not destroyed: {'; '.join(failed)}"
        )
    done = "would destroy" if dry_run else "destroyed"
    out.print(f"sweep {prefix}* older than {older_than}: {done} {stale}, kept {len(found) - stale}")
