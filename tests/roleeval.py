"""Role variables as Ansible evaluates them, without a node: a play on localhost that only
writes the values of some Jinja expressions to a file (nothing else on this machine is
touched). Used where a test must see exactly what a role would render or pass on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

PLAYBOOKS = REPO / "playbooks"


def evaluate_in_play(
    directory: Path,
    *,
    vars_files: Sequence[Path | str],
    variables: Mapping[str, Any],
    expressions: Mapping[str, str],
    bindings: Mapping[str, Any],
    filter_dirs: Sequence[Path] = (PLAYBOOKS / "filter_plugins",),
) -> dict[str, Any]:
    """The values of Jinja ``expressions`` over ``vars_files`` with ``bindings`` (what a play
    passes the role) and ``variables`` as extra variables (they win, as extra variables do)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "values.json"
    play = {
        "name": "Evaluate variables",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(p) for p in vars_files],
        "tasks": [
            {
                "name": "Write the values",
                "ansible.builtin.copy": {
                    "content": "{{ __values | to_json }}",
                    "dest": str(out),
                    "mode": "0600",
                },
                "vars": {
                    **bindings,
                    "__values": {k: f"{{{{ {e} }}}}" for k, e in expressions.items()},
                },
            }
        ],
    }
    (directory / "play.yml").write_text(yaml.safe_dump([play]))
    (directory / "vars.json").write_text(json.dumps(variables))
    # Ansible's defaults, not the project's ansible.cfg (fact cache, callbacks of real runs).
    (directory / "ansible.cfg").write_text("[defaults]\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(directory / "ansible.cfg"),
        "ANSIBLE_HOME": str(directory / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(directory / "ansible-tmp"),
        "ANSIBLE_FILTER_PLUGINS": os.pathsep.join(str(f) for f in filter_dirs),
        "ANSIBLE_NOCOLOR": "1",
    }
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-e",
        f"@{directory / 'vars.json'}",
        str(directory / "play.yml"),
    ]
    result = subprocess.run(
        command, env=env, cwd=directory, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    values = json.loads(out.read_text())
    assert isinstance(values, dict)
    return values
