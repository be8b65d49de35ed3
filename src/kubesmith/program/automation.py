"""Run `pulumi preview`, `up` and `destroy` for a stack through Pulumi's Automation API.

The CLI: a `pulumi` on PATH when the Automation API accepts its version, else the one
kubesmith installs into the state directory (kubesmith.downloads.pulumi), handed to the API
as `PulumiCommand(root=...)`. The provider plugins the program loads are installed into
$PULUMI_HOME/plugins first (PULUMI_HOME is passed on, so Pulumi looks where they went).

State lives in a local file backend under the state directory (`file://<state>/pulumi`)
unless PULUMI_BACKEND_URL names another backend. Secrets use the passphrase provider: the
passphrase comes from PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE when set;
otherwise a random one is generated once into `<state>/pulumi-passphrase` (mode 0600) and
handed to Pulumi as PULUMI_CONFIG_PASSPHRASE_FILE. On a stack's first `up`, Pulumi records
the passphrase's salt (`encryptionsalt:`, not a secret) in Pulumi.<stack>.yaml.

Verified here, by unit tests: the choice between PATH and kubesmith's CLI (with small scripts
that print a version), the download, verification and unpacking of the CLI and the plugins
(with tarballs the tests make), the environment Pulumi gets and the offline error.
`preview`'s per-host lines are computed from the engine's step events by
`provisioning_plan`, tested with events built as the Automation API parses them.
Unverified: everything that runs the real Pulumi CLI (`open_stack`, `preview`, `up`,
`destroy`, `stack_output`): the development machines cannot obtain it, so these paths have
never run; they follow the Automation API's documented calls.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubesmith.downloads import pulumi as pulumi_tools
from kubesmith.downloads.download import ByteProgress
from kubesmith.errors import KubesmithError, ToolMissingError, UserError
from kubesmith.program import hostdiff
from kubesmith.provision.target import artifact_cache_dir
from kubesmith.state.files import check_private
from kubesmith.state.paths import state_dir

if TYPE_CHECKING:
    from pulumi import automation as auto

PASSPHRASE_FILE = "pulumi-passphrase"

Echo = Callable[[str], Any]


def pulumi_command(
    root: Path,
    mirror_base_url: str | None,
    echo: Echo,
    progress: ByteProgress | None = None,
    *,
    plugins: bool = True,
) -> auto.PulumiCommand:
    """The CLI to run: a supported `pulumi` from PATH, else kubesmith's own (installed when
    missing). With ``plugins``, the provider plugins are installed first."""
    from pulumi import automation as auto

    cache = artifact_cache_dir()
    if plugins:
        home = pulumi_tools.pulumi_home()
        pulumi_tools.install_plugins(home, cache, mirror_base_url, progress=progress)
    on_path = _cli_on_path(echo)
    if on_path is not None:
        return on_path
    cli_root = pulumi_tools.install_cli(state_dir(root), cache, mirror_base_url, progress=progress)
    try:
        return auto.PulumiCommand(root=str(cli_root))
    except (auto.InvalidVersionError, subprocess.CalledProcessError, OSError) as exc:
        raise KubesmithError(f"{cli_root}/bin/pulumi does not run: {exc}") from None


def _cli_on_path(echo: Echo) -> auto.PulumiCommand | None:
    """`pulumi` from PATH when the Automation API accepts its version; else None, said why."""
    from pulumi import automation as auto

    path = shutil.which("pulumi")
    if path is None:
        return None
    try:
        return auto.PulumiCommand()
    except auto.InvalidVersionError as exc:
        reason = str(exc)
    except (subprocess.CalledProcessError, OSError) as exc:
        reason = f"`pulumi version` failed: {exc}"
    echo(f"not using {path}: {reason}; using the Pulumi CLI kubesmith installs")
    return None


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
        # Where kubesmith installed the plugins is where Pulumi looks for them.
        "PULUMI_HOME": str(pulumi_tools.pulumi_home(environ)),
        # No version check against Pulumi's servers on every command.
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        **PROVIDER_ENV,
    }


#: For the dynamic providers' process, a gRPC server whose provisioning forks ansible-runner's
#: children (pexpect): with gRPC's fork support on, gRPC restarts its pollers in a forked
#: child, which then dies before ansible-playbook starts (seen on real LXD through the SDK's
#: provider server, tests/integration/test_pulumi_up.py). The engine hands its environment on.
PROVIDER_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "false"}


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


def open_stack(stack: str, root: Path, command: auto.PulumiCommand, *, create: bool) -> auto.Stack:
    """The stack of the project in ``root``, running the program in infra/ (Pulumi.yaml)."""
    from pulumi import automation as auto

    options = auto.LocalWorkspaceOptions(
        env_vars=pulumi_env(state_dir(root)),
        secrets_provider="passphrase",
        pulumi_command=command,
    )
    with _pulumi_errors("stack select", stack):
        if create:
            return auto.create_or_select_stack(stack, work_dir=str(root), opts=options)
        return auto.select_stack(stack, work_dir=str(root), opts=options)


@dataclass
class PreviewSummary:
    """What `up` would do: change counts by operation, and a line per host provisioning would
    run on (``host: reason``, kubesmith.program.hostdiff)."""

    changes: dict[str, int]
    hosts: list[str] = field(default_factory=list)


def provisioning_plan(event: auto.EngineEvent) -> hostdiff.Plan | None:
    """The per-host plan of the Provisioning resource's step in ``event``, if it is one.

    The engine's step event carries the resource's last outputs (``old``) and new inputs
    (``new``): the same two maps the provider's diff compares, unknowns included.
    """
    pre = event.resource_pre_event
    if pre is None or pre.metadata.new is None:
        return None
    news = pre.metadata.new.inputs or {}
    hosts = news.get(hostdiff.HOSTS_KEY)
    if not isinstance(hosts, Mapping) or hostdiff.CLUSTER_KEY not in news:
        return None
    old = pre.metadata.old
    if old is None:
        names = sorted(hosts)
        return hostdiff.Plan(dict.fromkeys(names, hostdiff.NEW_NODE), full=True, hosts=tuple(names))
    return hostdiff.plan(old.outputs or {}, news)


def preview(stack: str, root: Path, command: auto.PulumiCommand, echo: Echo) -> PreviewSummary:
    """Show what `up` would change; the change counts and provisioning's hosts."""
    handle = open_stack(stack, root, command, create=True)
    plans: list[hostdiff.Plan] = []

    def collect(event: auto.EngineEvent) -> None:
        found = provisioning_plan(event)
        if found is not None:
            plans.append(found)

    with _pulumi_errors("preview", stack):
        result = handle.preview(on_output=echo, on_error=echo, on_event=collect)
    changes = {str(op): count for op, count in result.change_summary.items()}
    return PreviewSummary(changes, [line for found in plans for line in found.lines()])


def up(stack: str, root: Path, command: auto.PulumiCommand, echo: Echo) -> dict[str, Any]:
    """Create or update the stack's resources; its outputs."""
    handle = open_stack(stack, root, command, create=True)
    with _pulumi_errors("up", stack):
        result = handle.up(on_output=echo, on_error=echo)
    return {name: output.value for name, output in result.outputs.items()}


def destroy(
    stack: str, root: Path, command: auto.PulumiCommand, echo: Echo, *, remove: bool
) -> None:
    """Delete the stack's resources; with ``remove``, also its state in the backend.

    The stack file (Pulumi.<stack>.yaml) is kept: it is the project's source of truth.
    """
    handle = open_stack(stack, root, command, create=False)
    with _pulumi_errors("destroy", stack):
        handle.destroy(on_output=echo, on_error=echo)
        if remove:
            handle.workspace.remove_stack(stack, preserve_config=True)


def stack_output(stack: str, root: Path, command: auto.PulumiCommand, name: str) -> Any:
    """One output of an existing stack, or a UserError saying how to produce it."""
    handle = open_stack(stack, root, command, create=False)
    with _pulumi_errors("stack output", stack):
        outputs = handle.outputs()
    if name not in outputs:
        raise UserError(
            f"stack {stack!r} has no {name!r} output yet",
            hint=f"run: kubesmith up -s {stack}",
        )
    return outputs[name].value
