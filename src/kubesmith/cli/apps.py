"""`kubesmith render` and `kubesmith validate`: application manifests without a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml

from kubesmith import versions
from kubesmith.apps import (
    ValuesLayer,
    check_objects,
    dump_stream,
    render_app,
    schema_version,
    write_manifests,
)
from kubesmith.apps.kubeschema import ManifestProblem, load_stream
from kubesmith.apps.render import stack_values
from kubesmith.cli.console import err
from kubesmith.cli.options import stack_option
from kubesmith.errors import KubesmithError, UserError
from kubesmith.stackfile import load_spec

_YAML_SUFFIXES = (".yaml", ".yml")


def register(root: typer.Typer) -> None:
    root.command("render")(render)
    root.command("validate")(validate)


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        # The parser's message may quote the file's text: never echo secret material.
        raise UserError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise UserError(f"{path}: must be a mapping of NAME: value strings")
    return data


def _fail_on(problems: list[ManifestProblem], what: str) -> None:
    if problems:
        for problem in problems:
            typer.echo(str(problem))
        raise KubesmithError(f"{len(problems)} problem(s) in {what}")


def render(
    app: str = typer.Argument(..., help="App name: a directory under templates/apps/."),
    env: str = typer.Option(..., "--env", "-e", help="Environment: reads values-<env>.yaml."),
    output_dir: Path | None = typer.Option(
        None,
        "--output-dir",
        "-o",
        help="Write one <index>-<kind>-<name>.yaml per object here instead of printing.",
        file_okay=False,
    ),
    stack: str | None = stack_option(
        None,
        "Apply the stack's kubesmith:cluster.apps[].values and check against its "
        "Kubernetes version.",
    ),
    secrets_file: Path | None = typer.Option(
        None,
        "--secrets-file",
        help="YAML mapping NAME: value of the app's secrets. Without it Secret values are "
        "printed as <redacted>.",
        dir_okay=False,
    ),
) -> None:
    """Render APP for an environment; the objects are checked against the Kubernetes schema."""
    overrides: ValuesLayer | None = None
    kubernetes_version = versions.default_kubernetes_version()
    if stack is not None:
        spec = load_spec(stack)
        overrides, kubernetes_version = stack_values(spec, stack, app), spec.kubernetes_version
    secrets = _read_secrets(secrets_file) if secrets_file is not None else None
    objects = render_app(app, env, overrides, secrets)
    _fail_on(check_objects(objects, kubernetes_version, f"{app}/{env}"), f"rendered {app}")
    if output_dir is None:
        typer.echo(dump_stream(objects), nl=False)
        return
    written = write_manifests(objects, output_dir)
    err.print(f"wrote {len(written)} manifests to {output_dir}", highlight=False, markup=False)


def _read_path(path: str) -> list[tuple[str, str]]:
    """(name, text) of every manifest file PATH names."""
    if path == "-":
        return [("<stdin>", sys.stdin.read())]
    target = Path(path)
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in _YAML_SUFFIXES)
        if not files:
            raise UserError(f"{path}: no .yaml or .yml files in this directory")
    elif target.is_file():
        files = [target]
    else:
        raise UserError(f"{path}: no such file or directory")
    read: list[tuple[str, str]] = []
    for file in files:
        try:
            read.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{file}: cannot read ({exc})") from None
    return read


def validate(
    path: str = typer.Argument(..., help="A manifest file, a directory of them, or - for stdin."),
    kubernetes_version: str | None = typer.Option(
        None,
        "--kubernetes-version",
        help="Validate against this version's schemas (default: the stack's, else the pinned "
        "default).",
    ),
    stack: str | None = stack_option(None, "Use the Kubernetes version of Pulumi.<stack>.yaml."),
) -> None:
    """Check manifests against the Kubernetes OpenAPI schema in strict mode (offline).

    Every problem is printed as FILE:DOCUMENT-INDEX:FIELD-PATH: MESSAGE (documents count from
    0); the exit code is 1 when there is any.
    """
    if kubernetes_version is not None and stack is not None:
        raise UserError("give --kubernetes-version or --stack, not both")
    version: str
    if kubernetes_version is not None:
        version = kubernetes_version
    elif stack is not None:
        version = load_spec(stack).kubernetes_version
    else:
        version = versions.default_kubernetes_version()
    schema = schema_version(version)  # an unsupported version fails before any file is read
    problems: list[ManifestProblem] = []
    count = 0
    for name, text in _read_path(path):
        documents, syntax = load_stream(text, name)
        problems.extend(check_objects(documents, version, name) + syntax)
        count += sum(1 for document in documents if document is not None)
    _fail_on(problems, path)
    typer.echo(f"ok: {count} document(s) valid for Kubernetes {version} (schemas {schema}, strict)")
