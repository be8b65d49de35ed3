"""Render and validate 200 generated apps (target: under 5 s for both together).

Each app is a copy of hello's schema with its own values: Deployments and DaemonSets, every
optional section switched on for some of them, spread over the three environments. Rendering
runs the whole engine (values files, schema check, Jinja, labels); validation checks every
object against the strict Kubernetes schema of the pinned default version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kubesmith import versions
from kubesmith.apps import check_objects, render_app

APPS = 200
ENVS = ("local", "dev", "prod")
REPO = Path(__file__).resolve().parents[1]


def _values(index: int) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((REPO / "templates/apps/hello/values.yaml").read_text())
    values["image"] = f"registry.example:5000/bench/app-{index}:1.{index}.0"
    values["containerPort"] = 8000 + index
    values["workload"] = "DaemonSet" if index % 5 == 0 else "Deployment"
    values["env"] = {f"SETTING_{n}": str(n) for n in range(index % 4)}
    if index % 2:
        values["config"] = {"GREETING": f"hello {index}", "MODE": "bench"}
    if index % 3 == 0:
        values["secretEnv"] = ["API_TOKEN"]
    if index % 4 == 0:
        values["networkPolicy"] = {"fromNamespaces": ["ingress-nginx"], "fromCidrs": ["10.0.0.0/8"]}
    if index % 6 == 1:
        values["autoscaling"] = {
            "minReplicas": 2,
            "maxReplicas": 10,
            "targetCPUUtilizationPercentage": 75,
        }
    return values


def _env_values(index: int) -> dict[str, dict[str, Any]]:
    return {
        "local": {"service": {"type": "NodePort", "port": 80, "nodePort": 30000 + index}},
        "dev": {
            "service": {
                "type": "LoadBalancer",
                "port": 80,
                "loadBalancerSourceRanges": ["198.51.100.0/24"],
            }
        },
        "prod": {
            "replicas": 3,
            "ingress": {"host": f"app-{index}.example.com", "path": "/", "pathType": "Prefix"},
            "podDisruptionBudget": {"minAvailable": "50%"},
        },
    }


def generate(root: Path) -> Path:
    """A project copy of templates/ with APPS generated apps; returns the templates dir."""
    templates = root / "templates"
    shutil.copytree(REPO / "templates", templates)
    schema = json.loads((templates / "apps/hello/values.schema.json").read_text())
    schema["properties"]["workload"] = {"$ref": "../../_definitions.schema.json#/$defs/workload"}
    for index in range(APPS):
        directory = templates / "apps" / f"app-{index}"
        directory.mkdir()
        (directory / "values.schema.json").write_text(json.dumps(schema))
        (directory / "values.yaml").write_text(yaml.safe_dump(_values(index)))
        shutil.copytree(templates / "apps/hello/files", directory / "files")
        for env, values in _env_values(index).items():
            (directory / f"values-{env}.yaml").write_text(yaml.safe_dump(values))
    return templates


def run() -> list[dict[str, object]]:
    version = versions.default_kubernetes_version()
    with tempfile.TemporaryDirectory() as tmp:
        templates = generate(Path(tmp))
        start, cpu_start = time.perf_counter(), time.process_time()
        rendered = [
            render_app(
                f"app-{index}",
                ENVS[index % len(ENVS)],
                secrets={"API_TOKEN": "bench"} if index % 3 == 0 else None,
                templates=templates,
            )
            for index in range(APPS)
        ]
        rendered_at, cpu_rendered_at = time.perf_counter(), time.process_time()
        problems = [p for objects in rendered for p in check_objects(objects, version)]
        validated_at, cpu_validated_at = time.perf_counter(), time.process_time()
    if problems:
        raise SystemExit(f"bench_render: generated apps do not validate: {problems[0]}")
    objects = sum(len(o) for o in rendered)
    # CPU seconds as well: on a shared 2-core machine wall time swings with the neighbours.
    timings = {
        f"render {APPS} apps": (rendered_at - start, cpu_rendered_at - cpu_start),
        f"validate {objects} objects": (
            validated_at - rendered_at,
            cpu_validated_at - cpu_rendered_at,
        ),
        "render + validate (target < 5 s)": (validated_at - start, cpu_validated_at - cpu_start),
    }
    return [
        {"case": case, "objects": objects, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}
        for case, (wall, cpu) in timings.items()
    ]
