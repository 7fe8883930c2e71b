"""Tenant queues against a real kube-apiserver: the CRD's schema, borrowing, reclaim, limits,
status, and usage rebuilt by a restarted scheduler."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, wait_for
from integration.test_scheduler import node_group
from tessellate.kube import ApiError, KubeClient

pytestmark = pytest.mark.integration

QUEUES = "/apis/tessellate.dev/v1alpha1/queues"


def queue_object(name: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tessellate.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {"resources": list(resources)},
    }


@pytest.fixture
def queues(admin: KubeClient, control_plane: cluster.ControlPlane) -> Iterator[list[str]]:
    """Installs the CRD (with the rest of manifests/); deletes the test's Queues afterwards."""
    rbac.apply_manifests(control_plane)
    control_plane.kubectl("wait", "--for=condition=Established", "crd/queues.tessellate.dev", "--timeout=60s")
    made: list[str] = []
    yield made
    for name in made:
        with contextlib.suppress(ApiError):
            admin.delete(f"{QUEUES}/{name}")


def test_the_crd_refuses_malformed_queue_specs(admin: KubeClient, queues: list[str]) -> None:
    name = cluster.unique("q")
    bad = {
        "a negative quota": [{"gpuModel": "*", "quota": -1}],
        "limit must be at least quota": [{"gpuModel": "*", "quota": 8, "limit": 4}],
        "a model named twice": [{"gpuModel": "*", "quota": 1}, {"gpuModel": "*", "quota": 2}],
        "a malformed model name": [{"gpuModel": "H100 80GB", "quota": 1}],
    }
    for why, resources in bad.items():
        with pytest.raises(ApiError) as refused:
            admin.post(QUEUES, queue_object(name, *resources))
        assert refused.value.status == 422, why
    with pytest.raises(ApiError) as unknown:  # kubectl's default field validation
        admin.post(QUEUES, queue_object(name, {"gpuModel": "*", "qouta": 1}), fieldValidation="Strict")
    assert unknown.value.status in (400, 422) and "qouta" in unknown.value.message
    made = admin.post(QUEUES, queue_object(name, {"gpuModel": "*", "quota": 1.5, "limit": 4}))
    queues.append(name)
    assert made["spec"]["resources"][0]["quota"] == 1.5


class Kubelet:
    """The kubelet's part for fake nodes: a pod being deleted goes at once."""

    def __init__(self, api: KubeClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            for p in cluster.list_pods(self.api, self.namespace):
                if p["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.api.delete(
                            f"/api/v1/namespaces/{self.namespace}/pods/{p['metadata']['name']}",
                            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                        )


def test_borrowing_reclaim_limit_and_a_restart_that_rebuilds_usage(
    admin: KubeClient,
    namespace: str,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
    queues: list[str],
) -> None:
    _, selector = node_group(admin, "queues", 4)  # 32 GPUs
    qa, qb = cluster.unique("qa"), cluster.unique("qb")
    admin.post(QUEUES, queue_object(qa, {"gpuModel": "*", "quota": 16}))
    admin.post(QUEUES, queue_object(qb, {"gpuModel": "*", "quota": 16}))
    queues.extend([qa, qb])

    def pods(queue: str, prefix: str, count: int) -> list[dict[str, Any]]:
        made = []
        for i in range(count):
            p = cluster.pod(
                f"{prefix}-{i}", namespace, limits={"nvidia.com/gpu": "4", "cpu": "1"}, nodeSelector=selector
            )
            p["metadata"]["labels"] = {"tessellate.dev/queue": queue}
            made.append(p)
        return made

    def bound(prefix: str) -> list[str]:
        return [
            p["metadata"]["name"]
            for p in cluster.list_pods(admin, namespace)
            if p["metadata"]["name"].startswith(prefix) and p["spec"].get("nodeName")
        ]

    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    sched = SchedulerProcess(kubeconfig, tmp_path, leaderElection={"leaderElect": False}).start()
    try:
        cluster.create_pods(admin, pods(qa, "a", 8))
        wait_for(lambda: len(bound("a-")) == 8, 60, "team A to borrow the whole idle group")
        with Kubelet(admin, namespace):
            cluster.create_pods(admin, pods(qb, "b", 4))
            wait_for(lambda: len(bound("b-")) == 4, 90, "team B's pods to bind after reclaim")
        assert len(bound("a-")) == 4  # exactly the borrowed half was taken back

        def was_reclaimed(name: str) -> bool:
            return any(
                e["reason"] == "Reclaimed" and f"Reclaimed by queue {qb}" in e["message"]
                for e in cluster.events_for(admin, namespace, name)
            )

        reclaimed = [f"a-{i}" for i in range(8) if was_reclaimed(f"a-{i}")]
        assert len(reclaimed) == 4, reclaimed
        assert not set(reclaimed) & set(bound("a-"))
    finally:
        sched.stop()

    # A limit, and a new scheduler that rebuilds who uses what from the bound pods.
    admin.patch(f"{QUEUES}/{qa}", {"spec": {"resources": [{"gpuModel": "*", "quota": 16, "limit": 16}]}})
    cluster.create_pods(admin, pods(qa, "late", 1))
    sched = SchedulerProcess(
        kubeconfig, tmp_path, name="sched2", leaderElection={"leaderElect": False}
    ).start()
    try:

        def status(name: str) -> dict[str, Any]:
            return admin.get(f"{QUEUES}/{name}").get("status") or {}

        wait_for(
            lambda: status(qa).get("allocatedGPUs") == 16 and status(qb).get("allocatedGPUs") == 16,
            60,
            "status",
        )
        assert status(qa)["pendingGPUs"] == 4
        events = cluster.events_for(admin, namespace, "late-0")
        wait_for(
            lambda: any(
                f"queue {qa}: limit 16 nvidia.com/gpu" in e["message"]
                for e in cluster.events_for(admin, namespace, "late-0")
            ),
            30,
            "the limit message",
        )
        assert bound("late-") == [], events
        printed = control_plane.kubectl("get", "queues", qa).stdout
        assert "ALLOCATED" in printed and "16" in printed
    finally:
        sched.stop()
