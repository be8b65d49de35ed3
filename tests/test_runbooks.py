"""docs/runbooks: every command a runbook tells an operator to type is one a test runs.

A runbook names the tests that run its commands (a backticked ``tests/...py`` path in its
text). For each shell line of its ```sh blocks:

- a `kubesmith ...` line parses with this CLI (its --help, nothing runs), and its command
  words and options are string literals of a named test (`-s STACK` and `-i INVENTORY` are
  one choice, `cli.options.target_of`, tested on its own; a test may use either);
- any other line (commands on a node, over SSH) starts with a command a named test runs: its
  leading words (up to the first option or placeholder) and its options appear in the
  test's string literals.

What no test here can run is listed in ``NOT_RUN`` with the reason, so that an exception is
a reviewed decision and not a silent gap. The check is textual: it finds a runbook that
names a command or option no test uses (a renamed flag, a step nobody tried), not whether
the test runs the lines in the runbook's order.
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from tests.clilines import parses
from tests.conftest import REPO

RUNBOOKS = REPO / "docs" / "runbooks"
_BLOCK = re.compile(r"^ *```sh\n(.*?)^ *```", flags=re.DOTALL | re.MULTILINE)
_TEST_PATH = re.compile(r"`(tests/[\w/]+\.py)`")
_SEPARATORS = {"&&", "||", ";", "|"}
#: Option spellings that are one option.
_ALIASES = {"-i": "--inventory", "-s": "--stack", "-q": "--quiet", "-y": "--yes"}
#: The target choice: either form reaches the same target (cli.options.target_of).
_TARGET = {"--inventory", "--stack"}

#: (runbook, command prefix) -> why no test runs it.
NOT_RUN: dict[tuple[str, str], str] = {
    ("certificates.md", "openssl x509 -enddate -noout -in /var/lib/kubelet/"): (
        "the kubelet's own client certificate exists once a kubelet ran: needs the Kubernetes "
        "binaries, and the e2e tier does not read it"
    ),
    ("scale.md", "kubesmith preview"): (
        "needs the Pulumi engine (not installable here); its per-host lines are unit-tested "
        "from the engine's events (tests/test_program_hostdiff.py)"
    ),
    ("scale.md", "kubesmith up"): (
        "needs the Pulumi engine; test_pulumi_up.py runs the same program and provider "
        "through the SDK's provider server"
    ),
    ("upgrade.md", "kubesmith preview"): (
        "needs the Pulumi engine; the Provisioning update's upgrade path and its diff line "
        "are run with provisioning recorded (tests/test_upgrade.py)"
    ),
    ("upgrade.md", "kubesmith up"): (
        "needs the Pulumi engine; the same rolling steps run from an inventory in "
        "tests/integration/test_upgrade.py"
    ),
    ("certificates.md", "install -m 0644 contrib/systemd/"): (
        "installs the timer on the controller; the units are checked with systemd-analyze "
        "(tests/test_certs_renew.py), these machines have no systemd as PID 1"
    ),
    ("certificates.md", "systemctl daemon-reload"): "no systemd as PID 1 on these machines",
    ("certificates.md", "systemctl enable --now kubesmith-certs-renew@"): (
        "no systemd as PID 1 on these machines"
    ),
    ("certificates.md", "systemctl list-timers 'kubesmith-certs-renew@*'"): (
        "no systemd as PID 1 on these machines"
    ),
    ("certificates.md", "systemctl start kubesmith-certs-renew@"): (
        "no systemd as PID 1 on these machines"
    ),
    ("certificates.md", "journalctl -u kubesmith-certs-renew@"): (
        "no systemd as PID 1 on these machines"
    ),
}

#: (runbook, command prefix) -> the test function that does the step in Python (a file the
#: test edits on the controller) rather than as a command line.
DONE_IN_PYTHON: dict[tuple[str, str], str] = {
    ("certificates.md", "rm .kubesmith/stacks/STACK/pki/nodes/NODE/apiserver.crt"): (
        "test_the_runbook_s_node_check_and_a_certificate_reissued_by_hand"
    ),
}


def runbooks() -> list[Path]:
    return sorted(RUNBOOKS.glob("*.md"))


def shell_lines(text: str) -> list[str]:
    """The command lines of the ```sh blocks, continuation lines joined, comments and
    output-only lines left out."""
    lines: list[str] = []
    for block in _BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(line.strip())
    return lines


def commands(line: str) -> list[list[str]]:
    """A shell line's simple commands (split at &&, ||, ; and |)."""
    words = shlex.split(line, comments=True)
    out: list[list[str]] = [[]]
    for word in words:
        if word in _SEPARATORS:
            out.append([])
        else:
            out[-1].append(word)
    return [command for command in out if command]


def _placeholder(word: str) -> bool:
    # STACK, INVENTORY, NODE-NAME, NAME-cp-3, <ID>, ./backups/etcd-<node>-<time>.db
    return bool(re.search(r"(?<![A-Za-z])[A-Z]{3,}(?![a-z])", word)) or "<" in word


def leading(command: list[str]) -> list[str]:
    """The command's words up to its first option, placeholder or shell syntax."""
    words: list[str] = []
    for word in command:
        if word.startswith("-") or _placeholder(word) or word in {"!", "(", "{"}:
            break
        words.append(word)
    return words


def options(command: list[str]) -> set[str]:
    return {
        _ALIASES.get(word.split("=", 1)[0], word.split("=", 1)[0])
        for word in command
        if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", word)
    }


def named_tests(text: str) -> list[Path]:
    return [REPO / path for path in dict.fromkeys(_TEST_PATH.findall(text))]


@cache
def literals(path: Path) -> tuple[str, ...]:
    """Every string literal of a Python file (f-strings' literal parts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return tuple(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _present(words: str, texts: list[str]) -> bool:
    """Whether a test's literals hold ``words`` (a command's leading words): whole, or split
    where a test helper prefixes the program (``f"kubesmith-etcdctl {args}"`` called with
    ``"member list ..."``)."""
    if any(words in " ".join(text.split()) for text in texts):
        return True
    program, _, rest = words.partition(" ")
    return any(text.strip() == program for text in texts) and any(
        " ".join(text.split()).startswith(rest) for text in texts
    )


def functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def verbatim(line: str, tests: list[Path]) -> bool:
    """Whether a named test holds the whole line (a check it runs as the runbook writes it)."""
    wanted = " ".join(line.split())
    return any(wanted in " ".join(t.split()) for path in tests for t in literals(path))


def run_by(command: list[str], tests: list[Path]) -> str | None:
    """None when a named test runs ``command``; else what is missing."""
    texts = [text for path in tests for text in literals(path)]
    if command[0] == "kubesmith":
        # A test passes the words as separate arguments or writes the whole command line.
        exact = {_ALIASES.get(text, text) for text in texts}
        lines = [
            {_ALIASES.get(word, word) for word in text.split()}
            for text in texts
            if text.startswith("kubesmith ")
        ]
        wanted = [*leading(command)[1:], *sorted(options(command) - _TARGET)]
        missing = [w for w in wanted if w not in exact and not any(w in line for line in lines)]
        return f"no test passes {missing}" if missing else None
    head = " ".join(leading(command))
    if not _present(head, texts):
        return f"no test runs {head!r}"
    missing = [o for o in sorted(options(command)) if not any(o in text for text in texts)]
    return f"no test passes {missing} to {head!r}" if missing else None


def exempt(runbook: str, line: str) -> bool:
    return any(name == runbook and line.startswith(prefix) for name, prefix in NOT_RUN)


def cases() -> list[tuple[str, str]]:
    return [
        (path.name, line)
        for path in runbooks()
        for line in shell_lines(path.read_text(encoding="utf-8"))
    ]


@pytest.mark.parametrize("path", runbooks(), ids=lambda p: p.name)
def test_every_runbook_names_the_tests_that_run_it(path: Path) -> None:
    tests = named_tests(path.read_text(encoding="utf-8"))
    assert tests, f"{path.name} names no test (a backticked tests/...py path)"
    for test in tests:
        assert test.is_file(), f"{path.name} names {test.relative_to(REPO)}, which does not exist"


@pytest.mark.parametrize(("runbook", "line"), cases())
def test_every_runbook_command_is_one_a_test_runs(runbook: str, line: str) -> None:
    if exempt(runbook, line):
        return
    tests = named_tests((RUNBOOKS / runbook).read_text(encoding="utf-8"))
    in_python = [
        f for (r, prefix), f in DONE_IN_PYTHON.items() if r == runbook and line.startswith(prefix)
    ]
    if in_python:
        assert any(in_python[0] in functions(path) for path in tests), (runbook, line)
        return
    if verbatim(line, tests):
        return
    for command in commands(line):
        if command[0] == "kubesmith":
            ok, output = parses(" ".join(shlex.quote(word) for word in command))
            assert ok, f"{runbook}: {line}\n{output}"
        missing = run_by(command, tests)
        assert missing is None, f"{runbook}: {line}: {missing} ({', '.join(t.name for t in tests)})"


def test_every_exception_is_still_in_its_runbook() -> None:
    present = set(cases())
    for runbook, prefix in [*NOT_RUN, *DONE_IN_PYTHON]:
        assert any(r == runbook and line.startswith(prefix) for r, line in present), (
            f"NOT_RUN names {prefix!r} in {runbook}, which no longer has it"
        )


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        # A renamed option, a command nobody runs, a node-side step no test tried.
        ("kubesmith reset -i INVENTORY --purge", "no test passes ['--purge']"),
        ("kubesmith etcd defrag -i INVENTORY", "no test passes ['defrag']"),
        ("kubesmith-etcdctl defrag --cluster", "no test runs 'kubesmith-etcdctl defrag'"),
    ],
)
def test_a_command_no_test_runs_is_found(line: str, missing: str) -> None:
    tests = [
        REPO / "tests" / "integration" / "test_reset.py",
        REPO / "tests" / "integration" / "test_provision.py",
    ]
    [command] = commands(line)
    assert run_by(command, tests) == missing
