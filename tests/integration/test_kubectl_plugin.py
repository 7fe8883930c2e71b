"""`kubectl tessellate` against a real kube-apiserver, run by the real kubectl as a plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, wait_for
from integration.test_scheduler import node_group
from tessellate.kube import KubeClient

pytestmark = pytest.mark.integration


def plugin(cp: cluster.ControlPlane, *args: str) -> Any:
    """`kubectl tessellate -o json ...`: kubectl finds kubectl-tessellate on PATH."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "KUBECONFIG": cp.kubeconfig,
    }
    result = subprocess.run(
        [cp.kubectl_path, "tessellate", "-o", "json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_nodes_why_and_queues_read_the_cluster_as_the_scheduler_does(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    rbac.apply_manifests(control_plane)  # the Queue CRD too
    control_plane.kubectl("wait", "--for=condition=Established", "crd/queues.tessellate.dev", "--timeout=60s")
    team = cluster.unique("team")
    admin.post(
        "/apis/tessellate.dev/v1alpha1/queues",
        {"apiVersion": "tessellate.dev/v1alpha1", "kind": "Queue", "metadata": {"name": team},
         "spec": {"resources": [{"gpuModel": "*", "quota": 8, "limit": 12}]}},
    )  # fmt: skip
    nodes, selector = node_group(admin, "plugin", 2)
    pods = []
    for i, size in enumerate((4, 4, 4, 8)):
        p = cluster.pod(
            f"job-{i}", namespace, limits={"nvidia.com/gpu": str(size), "cpu": "1"}, nodeSelector=selector
        )
        p["metadata"]["labels"] = {"tessellate.dev/queue": team}
        pods.append(p)
    cluster.create_pods(admin, pods)
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path), tmp_path, leaderElection={"leaderElect": False}
    ).start()
    try:
        wait_for(lambda: bound_count(admin, namespace) == 3, 60, "three 4-GPU pods to bind")
    finally:
        sched.stop()
    bound = {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in cluster.list_pods(admin, namespace)
        if p["spec"].get("nodeName")
    }

    rows = [r for name in nodes for r in plugin(control_plane, "nodes", "--node", name)]
    assert len(rows) == 16 and {r["model"] for r in rows} == {"A100-80GB"}
    held = {h.split(" ")[0] for r in rows for h in r["holders"]}
    assert held == {f"{namespace}/{name}" for name in bound}
    assert sum(r["used_milli"] for r in rows) == 12_000
    for name, node in bound.items():  # each pod's four GPUs are on the node it is bound to
        assert sum(1 for r in rows if f"{namespace}/{name}" in r["holders"] and r["node"] == node) == 4

    why = plugin(control_plane, "why", f"{namespace}/job-3")
    assert "queue" in why["message"] and "limit 12" in why["message"], why  # 12 in use: the limit first
    assert {c["node"] for c in why["closest"][:2]} == set(nodes)

    (queue,) = [q for q in plugin(control_plane, "queues") if q["queue"] == team]
    assert (queue["allocated"], queue["quota"], queue["limit"], queue["pending"]) == ("12", "8", "12", "8")
    assert queue["namespaces"] == "all"  # no spec.namespaces: open to every namespace
    admin.delete(f"/apis/tessellate.dev/v1alpha1/queues/{team}")
