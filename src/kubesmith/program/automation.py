"""Run `pulumi preview`, `up` and `destroy` for a stack through Pulumi's Automation API.

State lives in a local file backend under the state directory (`file://<state>/pulumi`)
unless PULUMI_BACKEND_URL names another backend. Secrets use the passphrase provider: the
passphrase comes from PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE when set;
otherwise a random one is generated once into `<state>/pulumi-passphrase` (mode 0600) and
handed to Pulumi as PULUMI_CONFIG_PASSPHRASE_FILE. On a stack's first `up`, Pulumi records
the passphrase's salt (`encryptionsalt:`, not a secret) in Pulumi.<stack>.yaml.

Verified here: the environment Pulumi gets (backend URL, passphrase) and the missing-CLI
error, by unit tests. Unverified: everything that calls the Pulumi CLI (`open_stack`,
`preview`, `up`, `destroy`, `stack_output`): the development machines have no Pulumi CLI or
engine, so these paths have never run; they follow the Automation API's documented calls.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubesmith.errors import KubesmithError, ToolMissingError, UserError
from kubesmith.state.files import check_private
from kubesmith.state.paths import state_dir

if TYPE_CHECKING:
    from pulumi import automation as auto

INSTALL_DOCS = "https://www.pulumi.com/docs/iac/download-install/"
PASSPHRASE_FILE = "pulumi-passphrase"

Echo = Callable[[str], Any]


def require_cli(command: str) -> str:
    """The Pulumi CLI's path, or a one-line ToolMissingError naming the command that needs it."""
    path = shutil.which("pulumi")
    if path is None:
        raise ToolMissingError(
            f"`kubesmith {command}` needs the Pulumi CLI, and there is no 'pulumi' on PATH",
            hint=f"install it as described at {INSTALL_DOCS} and run the command again",
        )
    return path


def backend_url(state: Path, environ: Mapping[str, str]) -> str:
    """PULUMI_BACKEND_URL when set, else a file backend in the state directory."""
    configured = environ.get("PULUMI_BACKEND_URL")
    if configured:
        return configured
    directory = state / "pulumi"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory.resolve().as_uri()


def passphrase_env(state: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Extra environment for the passphrase secrets provider (empty when the user set one)."""
    # An empty PULUMI_CONFIG_PASSPHRASE is a valid (if weak) choice Pulumi accepts; respect it.
    if "PULUMI_CONFIG_PASSPHRASE" in environ or environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return {}
    path = state / PASSPHRASE_FILE
    try:
        # O_EXCL + mode at creation: never readable by others, and two racing runs keep one.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_private(path, "the Pulumi passphrase file")
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}


def pulumi_env(state: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables added to the environment of every Pulumi command kubesmith runs."""
    environ = os.environ if environ is None else environ
    return {
        "PULUMI_BACKEND_URL": backend_url(state, environ),
        **passphrase_env(state, environ),
        # No version check against Pulumi's servers on every command.
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }


@contextmanager
def _pulumi_errors(action: str, stack: str) -> Iterator[None]:
    """Turn Automation API failures into one line; Pulumi's own output was streamed above."""
    from pulumi import automation as auto

    try:
        yield
    except auto.StackNotFoundError:
        raise UserError(
            f"stack {stack!r} does not exist in the Pulumi backend",
            hint=f"create it with: kubesmith up -s {stack}",
        ) from None
    except auto.ConcurrentUpdateError:
        raise KubesmithError(
            f"stack {stack!r} is locked by another update",
            hint="wait for it to finish, or run `pulumi cancel` if it died",
        ) from None
    except auto.CommandError:
        raise KubesmithError(f"pulumi {action} failed for stack {stack!r} (output above)") from None
    except auto.InvalidVersionError as exc:
        raise ToolMissingError(f"the installed Pulumi CLI is too old: {exc}") from None


def open_stack(stack: str, root: Path, *, create: bool) -> auto.Stack:
    """The stack of the project in ``root``, running the program in infra/ (Pulumi.yaml)."""
    from pulumi import automation as auto

    options = auto.LocalWorkspaceOptions(
        env_vars=pulumi_env(state_dir(root)), secrets_provider="passphrase"
    )
    with _pulumi_errors("stack select", stack):
        if create:
            return auto.create_or_select_stack(stack, work_dir=str(root), opts=options)
        return auto.select_stack(stack, work_dir=str(root), opts=options)


def preview(stack: str, root: Path, echo: Echo) -> dict[str, int]:
    """Show what `up` would change; the change counts by operation."""
    handle = open_stack(stack, root, create=True)
    with _pulumi_errors("preview", stack):
        result = handle.preview(on_output=echo, on_error=echo)
    return {str(op): count for op, count in result.change_summary.items()}


def up(stack: str, root: Path, echo: Echo) -> dict[str, Any]:
    """Create or update the stack's resources; its outputs."""
    handle = open_stack(stack, root, create=True)
    with _pulumi_errors("up", stack):
        result = handle.up(on_output=echo, on_error=echo)
    return {name: output.value for name, output in result.outputs.items()}


def destroy(stack: str, root: Path, echo: Echo, *, remove: bool) -> None:
    """Delete the stack's resources; with ``remove``, also its state in the backend.

    The stack file (Pulumi.<stack>.yaml) is kept: it is the project's source of truth.
    """
    handle = open_stack(stack, root, create=False)
    with _pulumi_errors("destroy", stack):
        handle.destroy(on_output=echo, on_error=echo)
        if remove:
            handle.workspace.remove_stack(stack, preserve_config=True)


def stack_output(stack: str, root: Path, name: str) -> Any:
    """One output of an existing stack, or a UserError saying how to produce it."""
    handle = open_stack(stack, root, create=False)
    with _pulumi_errors("stack output", stack):
        outputs = handle.outputs()
    if name not in outputs:
        raise UserError(
            f"stack {stack!r} has no {name!r} output yet",
            hint=f"run: kubesmith up -s {stack}",
        )
    return outputs[name].value
