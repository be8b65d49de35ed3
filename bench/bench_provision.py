"""Provisioning speed on real LXD labs: prep, pki, runtime and etcd (`make bench`).

Cases, each on fresh nodes that already answer SSH (lab creation is not timed):
  cold N nodes   first run until every etcd member is healthy, N = 1, 3, 5 (all members)
  re-run 3 nodes the idempotent second run on the 3-node lab (must report no change)
  re-run 3 nodes (paramiko)  the same with Ansible's paramiko transport, for the transport choice
Targets (issue 4): cold 3 <= 30 s, re-run <= 10 s, cold 5 <= 1.3 x cold 3.

Each row also says where the CPU went (node, controller, and the CPU floor they set on this
machine: bench/labrun.py).

Needs the local stack's LXD setup (`make lxd`). Runs in a temporary KUBESMITH_HOME and
removes its labs afterwards.
"""

from __future__ import annotations

from bench.labrun import bench_home, lab, ratio_row, row, timed_run
from kubesmith.provision.provisioner import Options

TAGS = ("prep", "pki", "runtime", "etcd")
TARGETS = {"cold 3 nodes": 30.0, "re-run 3 nodes": 10.0}


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    base = Options(tags=TAGS)
    paramiko = Options(tags=TAGS, env={"ANSIBLE_TRANSPORT": "paramiko"})
    cold: dict[int, float] = {}
    with bench_home("bench-provision-"):
        for nodes in (3, 1, 5):
            with lab(f"bench-prov-{nodes}", nodes) as (inventory, names):
                first = timed_run(inventory, names, base)
                cold[nodes] = first.seconds
                rows.append(row(f"cold {nodes} node{'s' if nodes > 1 else ''}", first, TARGETS))
                if nodes == 3:
                    again = timed_run(inventory, names, base)
                    rows.append(row("re-run 3 nodes", again, TARGETS, transport="ssh"))
                    slow = timed_run(inventory, names, paramiko)
                    rows.append(
                        row("re-run 3 nodes (paramiko)", slow, TARGETS, transport="paramiko")
                    )
    rows.append(ratio_row("cold 5 nodes vs 3", cold[5], cold[3], 1.3))
    return rows
