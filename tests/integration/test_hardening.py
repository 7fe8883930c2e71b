"""One bad node must never make the live scheduler forget bound pods or stop scheduling
(the hardening issue), on a real API server with the scheduler running as its ServiceAccount."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, check_no_overcommit, wait_for
from tessellate.kube import KubeClient
from tessellate.wire.devices import DEVICES

pytestmark = pytest.mark.integration


def node_events(api: KubeClient, node: str) -> list[dict]:
    items, _ = api.list_all("/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={node}")
    return items


def test_malformed_and_absurd_nodes_are_quarantined_while_bound_pods_stay_counted(
    control_plane: cluster.ControlPlane, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    group = cluster.unique("hard")
    selector = {"group": group}
    busy = f"{group}-busy"
    cluster.create_node(admin, *cluster.gpu_node(busy, gpus=8, labels=selector))
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    sched = SchedulerProcess(kubeconfig, tmp_path, leaderElection={"leaderElect": False}).start()
    try:
        holders = [
            cluster.pod(f"holder-{i}", namespace, limits={"nvidia.com/gpu": "4"}, nodeSelector=selector)
            for i in range(2)
        ]
        cluster.create_pods(admin, holders)
        wait_for(lambda: bound_count(admin, namespace) == 2, 60, "the two 4-GPU pods to fill the busy node")

        twice = {"index": 0, "health": "Unhealthy"}
        bad = f"{group}-bad"
        cluster.create_node(
            admin,
            *cluster.gpu_node(
                bad, gpus=8, labels=selector, annotations={DEVICES: json.dumps({"gpus": [twice, twice]})}
            ),
        )
        huge = f"{group}-huge"
        node, status = cluster.gpu_node(huge, gpus=8, labels=selector)
        status["allocatable"]["nvidia.com/gpu"] = status["capacity"]["nvidia.com/gpu"] = "99999999999"
        cluster.create_node(admin, node, status)
        time.sleep(1.0)  # the scheduler rebuilds on the node changes

        late = [
            cluster.pod(f"late-{i}", namespace, limits={"nvidia.com/gpu": "1"}, nodeSelector=selector)
            for i in range(4)
        ]
        cluster.create_pods(admin, late)

        def told_why() -> bool:
            return all(
                any("quarantined" in e["message"] for e in cluster.events_for(admin, namespace, f"late-{i}"))
                for i in range(4)
            )

        wait_for(told_why, 60, "each late pod to be told that two nodes are quarantined")
        assert bound_count(admin, namespace) == 2, "a GPU of the busy node was offered again"

        fine = f"{group}-fine"
        cluster.create_node(admin, *cluster.gpu_node(fine, gpus=2, labels=selector))
        wait_for(lambda: bound_count(admin, namespace) == 4, 60, "two late pods to bind on the good node")
        pods = cluster.list_pods(admin, namespace)
        assert sorted(p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")) == [
            busy,
            busy,
            fine,
            fine,
        ]
        check_no_overcommit(pods, {busy: 8, fine: 2})

        for name, phrase in ((bad, "lists GPU 0 twice"), (huge, "99999999999")):
            wait_for(lambda name=name: node_events(admin, name), 30, f"an event on node {name}")
            event = node_events(admin, name)[0]
            assert event["reason"] == "GpuInventoryQuarantined" and phrase in event["message"], event
            assert "takes no new pods until this is fixed" in event["message"]
        metrics = sched.metrics()
        for name in (bad, huge):
            assert f'tessellate_node_inventory_problem{{effect="quarantined",node="{name}"}} 1.0' in metrics
    finally:
        sched.stop()
        for suffix in ("busy", "bad", "huge", "fine"):
            admin.delete(f"/api/v1/nodes/{group}-{suffix}")
