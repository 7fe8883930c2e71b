"""Required pod anti-affinity on kubernetes.io/hostname, live: replicas land one per node
and the one left over is told why in kube-scheduler's words."""

from __future__ import annotations

from pathlib import Path

import pytest
from tessellate.scheduler.plugins.pod_anti_affinity import REASON_EXISTING

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, wait_for
from tessellate.kube import KubeClient

pytestmark = pytest.mark.integration


def test_replicas_with_required_anti_affinity_take_one_node_each(
    control_plane: cluster.ControlPlane, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    group = cluster.unique("anti")
    selector = {"group": group}
    names = [f"{group}-{i}" for i in range(2)]
    for name in names:
        cluster.create_node(admin, *cluster.gpu_node(name, gpus=8, labels=selector))
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}
    affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    pods = []
    for i in range(3):
        p = cluster.pod(
            f"web-{i}", namespace, limits={"nvidia.com/gpu": "1"}, nodeSelector=selector, affinity=affinity
        )
        p["metadata"]["labels"] = {"app": "web"}
        pods.append(p)
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    sched = SchedulerProcess(kubeconfig, tmp_path, leaderElection={"leaderElect": False}).start()
    try:
        cluster.create_pods(admin, pods)
        wait_for(lambda: bound_count(admin, namespace) == 2, 60, "two replicas to bind")

        def told() -> bool:
            unbound = [p for p in cluster.list_pods(admin, namespace) if not p["spec"].get("nodeName")]
            return len(unbound) == 1 and any(
                REASON_EXISTING in e["message"]
                for e in cluster.events_for(admin, namespace, unbound[0]["metadata"]["name"])
            )

        wait_for(told, 60, "the third replica to be told why")
        hosts = [
            p["spec"].get("nodeName")
            for p in cluster.list_pods(admin, namespace)
            if p["spec"].get("nodeName")
        ]
        assert sorted(hosts) == sorted(names)
    finally:
        sched.stop()
        for name in names:
            admin.delete(f"/api/v1/nodes/{name}")
