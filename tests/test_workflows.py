"""The GitHub Actions workflows in .github/workflows: every `kubesmith` command they run parses
with this CLI, the ephemeral stack is always destroyed, credentials stay scoped, and the two
linters `make lint` runs (actionlint, zizmor offline) catch what they are there for.

The workflows have not run on GitHub from here (no GitHub access); these checks are static.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clilines import cli_args, kubesmith_lines, parses
from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent
#: `uses: owner/repo@<40 hex>  # vX.Y.Z`: a commit, and the release it is.
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+$")


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def workflows() -> dict[str, dict[str, Any]]:
    return {path.name: load(path) for path in sorted(WORKFLOWS.glob("*.yml"))}


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def all_kubesmith_lines() -> list[tuple[str, str]]:
    return [
        (name, line)
        for name, document in workflows().items()
        for step in steps(document)
        for line in kubesmith_lines(step.get("run", ""))
    ]


def test_the_workflows_run_the_commands_of_the_ephemeral_stack_and_the_sweeper() -> None:
    lines = {line for _, line in all_kubesmith_lines()}
    assert lines == {
        'kubesmith stack new "$STACK" --from "$TEMPLATE"',
        'kubesmith up -s "$STACK"',
        'kubesmith smoke -s "$STACK"',
        'kubesmith destroy -s "$STACK" --remove --yes',
        'kubesmith stack sweep --prefix ci- --older-than "$OLDER_THAN" --dry-run',
        'kubesmith stack sweep --prefix ci- --older-than "$OLDER_THAN"',
    }


@pytest.mark.parametrize(("workflow", "line"), all_kubesmith_lines())
def test_every_kubesmith_command_in_a_workflow_parses(workflow: str, line: str) -> None:
    ok, output = parses(line)
    assert ok, f"{workflow}: {line}\n{output}"
    command = " ".join(w for w in cli_args(line)[:2] if not w.startswith("-"))
    assert f"Usage: kubesmith {command}".replace(" placeholder", "") in output


def runbook_lines() -> list[str]:
    text = (REPO / "docs" / "runbooks" / "ci.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line for block in blocks for line in kubesmith_lines(block)]


def test_the_runbook_s_commands_are_the_workflows_and_parse() -> None:
    lines = runbook_lines()
    assert lines == [
        "kubesmith stack sweep --prefix ci- --older-than 6h",
        "kubesmith stack sweep --prefix ci- --older-than 6h --dry-run",
        "kubesmith stack sweep --prefix ci- --older-than 6h",
    ]
    for line in lines:
        assert parses(line)[0], line
    cron = workflows()["sweep-stacks.yml"]
    assert cron["jobs"]["sweep"]["env"]["OLDER_THAN"] == "${{ inputs.older-than || '6h' }}"


@pytest.mark.parametrize(
    "line",
    [
        'kubesmith destroy -s "$STACK" --purge --yes',  # a renamed flag
        'kubesmith stack create "$STACK" --from "$TEMPLATE"',  # a renamed command
        'kubesmith stack sweep --prefix ci- --max-age "$OLDER_THAN"',
    ],
)
def test_a_renamed_flag_or_command_fails_the_check(line: str) -> None:
    assert parses(line)[0] is False


def test_the_ephemeral_stack_is_destroyed_whatever_happened_before() -> None:
    document = workflows()["ephemeral-stack.yml"]
    assert "workflow_call" in document["on"]
    (job,) = document["jobs"].values()
    names = [step.get("run", "") for step in job["steps"]]
    new = next(i for i, run in enumerate(names) if run.startswith("kubesmith stack new"))
    up = next(i for i, run in enumerate(names) if run.startswith("kubesmith up"))
    smoke = next(i for i, run in enumerate(names) if run.startswith("kubesmith smoke"))
    destroy = next(i for i, run in enumerate(names) if run.startswith("kubesmith destroy"))
    assert new < up < smoke < destroy == len(names) - 1
    # The stack is named from the run, so every run and re-run gets its own.
    assert job["env"]["STACK"] == "ci-${{ github.run_id }}-${{ github.run_attempt }}"
    assert job["steps"][new]["id"] == "new"
    teardown = job["steps"][destroy - 1 : destroy + 1]
    for step in teardown:  # fresh credentials, then the destroy: both after any failure
        assert step["if"] == "always() && steps.new.outcome == 'success'"
    # Timeouts: each long step has its own, inside the job's, so a hung up leaves time to
    # destroy; a running job is never cancelled by the next one.
    assert job["concurrency"]["cancel-in-progress"] is False
    step_limits = [job["steps"][i]["timeout-minutes"] for i in (up, smoke, destroy)]
    assert job["timeout-minutes"] >= 60 + sum(step_limits[1:]) + 10
    assert document["on"]["workflow_call"]["inputs"]["up-timeout-minutes"]["default"] == 60


def test_secrets_reach_only_the_kubesmith_steps_and_aws_only_through_oidc() -> None:
    for name, document in workflows().items():
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        assert "aws-access-key-id" not in text, name
        assert "AWS_SECRET_ACCESS_KEY" not in text, name
        assert "secrets: inherit" not in text, name
        for job in document["jobs"].values():
            assert "secrets." not in str(job.get("env", {})), f"{name}: secrets in job env"
            for step in job.get("steps", []):
                if "secrets." in str(step.get("env", {})):
                    assert (
                        step["run"].startswith("kubesmith ")
                        or "kubesmith stack sweep" in (step["run"])
                    ), f"{name}: {step}"
                assert not re.search(r"echo.*(PASSPHRASE|BACKEND)", step.get("run", ""))


def test_permissions_are_least_and_id_token_only_where_oidc_is_used() -> None:
    for name, document in workflows().items():
        assert document["permissions"] == {}, f"{name}: no workflow-wide permissions"
        for job_name, job in document["jobs"].items():
            assert "timeout-minutes" in job or "uses" in job, f"{name}: {job_name}"
            permissions = job["permissions"]
            assert set(permissions) <= {"contents", "id-token"}, f"{name}: {job_name}"
            assert permissions["contents"] == "read"
            oidc = any(
                str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")
                for step in job.get("steps", [])
            ) or "ephemeral-stack.yml" in str(job.get("uses", ""))
            assert (permissions.get("id-token") == "write") is oidc, f"{name}: {job_name}"


def test_every_action_is_pinned_to_a_commit_with_its_version_named() -> None:
    seen = set()
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*(?:-\s*)?uses:\s*(\S+)\s*(.*)$", line)
            if match is None or match[1].startswith("$/"):
                continue
            assert _PINNED.match(match[1]), f"{path.name}: {line.strip()}"
            assert _VERSION_COMMENT.search(match[2]), f"{path.name}: {line.strip()}"
            seen.add(match[1].split("@")[0])
    assert seen == {
        "actions/checkout",
        "actions/setup-python",
        "aws-actions/configure-aws-credentials",
    }


# --- the linters ------------------------------------------------------------------------


def lint(tool: str, directory: Path) -> subprocess.CompletedProcess[str]:
    command = {
        "actionlint": [str(BIN / "actionlint")],
        "zizmor": [str(BIN / "zizmor"), "--offline", "--persona", "pedantic", ".github"],
    }[tool]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)


@pytest.fixture
def copy_of_the_workflows(tmp_path: Path) -> Path:
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


@pytest.mark.parametrize("tool", ["actionlint", "zizmor"])
def test_the_workflows_lint_clean(tool: str) -> None:
    result = lint(tool, REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("tool", "old", "new", "finding"),
    [
        # A reusable workflow called without a required input.
        ("actionlint", "      template: dev\n", "", 'input "template" is required'),
        # A step reading a user-controlled value straight into its script.
        (
            "zizmor",
            'run: kubesmith up -s "$STACK"',
            "run: echo ${{ github.event.pull_request.title }}",
            "template-injection",
        ),
        # An action by tag instead of by commit.
        (
            "zizmor",
            "aws-actions/configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c",
            "aws-actions/configure-aws-credentials@v6",
            "unpinned-uses",
        ),
        # A checkout that leaves its token in .git/config (the default).
        ("zizmor", "        with:\n          persist-credentials: false\n", "", "artipacked"),
    ],
)
def test_the_linters_catch_a_planted_mistake_offline(
    copy_of_the_workflows: Path, tool: str, old: str, new: str, finding: str
) -> None:
    changed = False
    for path in (copy_of_the_workflows / ".github" / "workflows").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        if old in text:
            path.write_text(text.replace(old, new, 1), encoding="utf-8")
            changed = True
            break
    assert changed, f"nothing to change: {old!r}"
    result = lint(tool, copy_of_the_workflows)
    assert result.returncode != 0
    assert finding in result.stdout + result.stderr
