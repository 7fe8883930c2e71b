"""Pod groups against a real kube-apiserver: all members bind together or none holds a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tessellate.scheduler.gang import MIN_AVAILABLE, POD_GROUP

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, check_no_overcommit, wait_for
from integration.test_scheduler import node_group
from tessellate.kube import KubeClient

pytestmark = pytest.mark.integration


def member(name: str, namespace: str, group: str, min_available: int, selector: dict[str, str]) -> dict:
    p = cluster.pod(name, namespace, limits={"nvidia.com/gpu": "8", "cpu": "4"}, nodeSelector=selector)
    p["metadata"]["labels"] = {POD_GROUP: group}
    p["metadata"]["annotations"] = {MIN_AVAILABLE: str(min_available)}
    return p


def scheduled_condition(p: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in p["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None)


def by_name(api: KubeClient, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in cluster.list_pods(api, namespace)}


def all_told(api: KubeClient, namespace: str, names: list[str], phrase: str) -> bool:
    pods = by_name(api, namespace)
    conditions = [scheduled_condition(pods[n]) for n in names]
    return all(c is not None and c["status"] == "False" and phrase in c["message"] for c in conditions)


def test_a_group_binds_only_when_all_its_members_fit_and_holds_nothing_meanwhile(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    nodes, selector = node_group(admin, "gang", 2)
    group = [member(f"worker-{i}", namespace, "train", 3, selector) for i in range(3)]
    cluster.create_pods(admin, group)
    names = [p["metadata"]["name"] for p in group]
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path),  # only its ServiceAccount may write assignments
        tmp_path,
        leaderElection={"leaderElect": False},
        schedulerName="tessellate",
    ).start()
    try:
        wait_for(
            lambda: all_told(admin, namespace, names, "3 pod(s) must run together and only 2 fit now"),
            60,
            "every member to be told the group does not fit",
        )
        pods = by_name(admin, namespace)
        assert not any(pods[n]["spec"].get("nodeName") for n in names)
        events = cluster.events_for(admin, namespace, "worker-0")
        assert any(e["reason"] == "FailedScheduling" and "pod group" in e["message"] for e in events)

        # Nothing is held for the group: a lone 8-GPU pod takes a whole node at once.
        lone = cluster.pod("lone", namespace, limits={"nvidia.com/gpu": "8"}, nodeSelector=selector)
        cluster.create_pods(admin, [lone])
        wait_for(
            lambda: by_name(admin, namespace)["lone"]["spec"].get("nodeName"), 30, "the lone pod to bind"
        )

        for i in range(2, 4):  # room for all three members
            node, status = cluster.gpu_node(f"{selector['group']}-{i:03d}", labels=selector)
            cluster.create_node(admin, node, status)
            nodes[node["metadata"]["name"]] = 8
        wait_for(
            lambda: all(by_name(admin, namespace)[n]["spec"].get("nodeName") for n in names),
            60,
            "the whole group to bind once it fits",
        )
        pods = by_name(admin, namespace)
        assert len({pods[n]["spec"]["nodeName"] for n in [*names, "lone"]}) == 4
        check_no_overcommit(list(pods.values()), nodes)
        assert "Traceback" not in sched.log(), sched.log()[-3000:]
    finally:
        sched.stop()


def test_a_group_waits_for_its_members_then_binds_together(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    nodes, selector = node_group(admin, "gangwait", 2)
    first = member("worker-0", namespace, "train", 2, selector)
    cluster.create_pods(admin, [first])
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path),  # only its ServiceAccount may write assignments
        tmp_path,
        leaderElection={"leaderElect": False},
        schedulerName="tessellate",
    ).start()
    try:
        wait_for(
            lambda: all_told(admin, namespace, ["worker-0"], "waiting for 1 more pod(s)"),
            60,
            "the first member to wait for the second",
        )
        assert not by_name(admin, namespace)["worker-0"]["spec"].get("nodeName")
        cluster.create_pods(admin, [member("worker-1", namespace, "train", 2, selector)])
        wait_for(
            lambda: all(p["spec"].get("nodeName") for p in cluster.list_pods(admin, namespace)),
            60,
            "both members to bind",
        )
        check_no_overcommit(cluster.list_pods(admin, namespace), nodes)
    finally:
        sched.stop()
