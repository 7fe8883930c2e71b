"""Preemption against a real kube-apiserver: lower-priority pods make room for an urgent one."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, check_no_overcommit, wait_for
from integration.test_scheduler import node_group
from tessellate.kube import KubeClient

pytestmark = pytest.mark.integration


def priority_class(api: KubeClient, prefix: str, value: int) -> str:
    name = cluster.unique(prefix)
    body = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}}
    api.post("/apis/scheduling.k8s.io/v1/priorityclasses", {**body, "value": value})
    return name


def test_an_urgent_pod_preempts_just_enough_lower_priority_pods_and_binds_once_they_are_gone(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    nodes, selector = node_group(admin, "preempt", 1)
    low, high = priority_class(admin, "low", 10), priority_class(admin, "high", 1000)
    batch = [
        cluster.pod(
            f"batch-{i}",
            namespace,
            limits={"nvidia.com/gpu": "2", "cpu": "1"},
            nodeSelector=selector,
            priorityClassName=low,
        )
        for i in range(4)
    ]
    cluster.create_pods(admin, batch)
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path),  # only its ServiceAccount may write assignments
        tmp_path,
        leaderElection={"leaderElect": False},
        schedulerName="tessellate",
    ).start()
    try:
        wait_for(lambda: bound_count(admin, namespace) == 4, 60, "the batch to fill the node")
        urgent = cluster.pod(
            "urgent",
            namespace,
            limits={"nvidia.com/gpu": "4", "cpu": "1"},
            nodeSelector=selector,
            priorityClassName=high,
        )
        cluster.create_pods(admin, [urgent])

        def victims() -> list[str]:
            pods = cluster.list_pods(admin, namespace)
            return sorted(p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp"))

        wait_for(lambda: len(victims()) == 2, 30, "two batch pods to be preempted")
        doomed = victims()
        pods = {p["metadata"]["name"]: p for p in cluster.list_pods(admin, namespace)}
        assert pods["urgent"]["status"].get("nominatedNodeName") == next(iter(nodes))
        assert not pods["urgent"]["spec"].get("nodeName")  # not before the victims are gone
        events = cluster.events_for(admin, namespace, doomed[0])
        assert any(e["reason"] == "Preempted" and "by pod" in e["message"] for e in events), events

        for name in doomed:  # the kubelet's part: the containers stopped, the pods go
            admin.delete(
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
            )
        try:
            wait_for(
                lambda: any(
                    p["metadata"]["name"] == "urgent" and p["spec"].get("nodeName")
                    for p in cluster.list_pods(admin, namespace)
                ),
                30,
                "the urgent pod to bind where its victims were",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nscheduler log:\n{sched.log()[-6000:]}") from None
        remaining = cluster.list_pods(admin, namespace)
        assert sorted(p["metadata"]["name"] for p in remaining) == sorted(
            ["urgent", *(f"batch-{i}" for i in range(4) if f"batch-{i}" not in doomed)]
        )
        check_no_overcommit(remaining, nodes)
        assert "tessellate_preemption_victims_total 2.0" in sched.metrics()
        assert "Traceback" not in sched.log(), sched.log()[-3000:]
    finally:
        sched.stop()
