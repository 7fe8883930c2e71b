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


def test_the_example_queues_are_valid(control_plane: cluster.ControlPlane, queues: list[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "queues.yaml"
    result = control_plane.kubectl("apply", "-f", str(example), "--dry-run=server")
    assert result.stdout.count("(server dry run)") == 2, result.stdout


def queued_pods(
    namespace: str, queue: str, prefix: str, count: int, gpus: int, **spec: Any
) -> list[dict[str, Any]]:
    """`count` pods of `gpus` whole GPUs in tenant queue `queue`."""
    made = []
    for i in range(count):
        p = cluster.pod(f"{prefix}-{i}", namespace, limits={"nvidia.com/gpu": str(gpus), "cpu": "1"}, **spec)
        p["metadata"]["labels"] = {"tessellate.dev/queue": queue}
        made.append(p)
    return made


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
        return queued_pods(namespace, queue, prefix, count, 4, nodeSelector=selector)

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


def test_weights_share_idle_gpus_and_quota_is_per_gpu_model(
    admin: KubeClient,
    namespace: str,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
    queues: list[str],
) -> None:
    def group(prefix: str, product: str, count: int) -> dict[str, str]:
        selector = {"group": cluster.unique(prefix)}
        for i in range(count):
            node, status = cluster.gpu_node(
                f"{selector['group']}-{i}", gpus=8, product=product, labels=selector
            )
            cluster.create_node(admin, node, status)
        return selector

    h200 = group("weights", "NVIDIA-H200", 4)  # the only H200s: their 32 GPUs are the whole share
    h100, a100 = group("models-h", "NVIDIA-H100-80GB-HBM3", 2), group("models-a", "NVIDIA-A100-SXM4-80GB", 2)
    light, heavy, mixed = cluster.unique("w1"), cluster.unique("w3"), cluster.unique("pm")
    admin.post(QUEUES, queue_object(light, {"gpuModel": "*", "quota": 0, "overQuotaWeight": 1}))
    admin.post(QUEUES, queue_object(heavy, {"gpuModel": "*", "quota": 0, "overQuotaWeight": 3}))
    admin.post(
        QUEUES,
        queue_object(
            mixed,
            {"gpuModel": "H100-80GB", "quota": 16, "limit": 16},
            {"gpuModel": "A100-80GB", "quota": 0, "limit": 4},
        ),
    )
    queues.extend([light, heavy, mixed])

    def groups(*selectors: dict[str, str]) -> dict:
        values = [s["group"] for s in selectors]
        term = {"matchExpressions": [{"key": "group", "operator": "In", "values": values}]}
        return {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }

    cluster.create_pods(admin, queued_pods(namespace, light, "light", 32, 1, affinity=groups(h200)))
    cluster.create_pods(admin, queued_pods(namespace, heavy, "heavy", 32, 1, affinity=groups(h200)))
    cluster.create_pods(admin, queued_pods(namespace, mixed, "mixed", 8, 4, affinity=groups(h100, a100)))

    def bound() -> dict[str, str]:
        return {
            p["metadata"]["name"]: p["spec"]["nodeName"]
            for p in cluster.list_pods(admin, namespace)
            if p["spec"].get("nodeName")
        }

    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path), tmp_path, leaderElection={"leaderElect": False}
    ).start()
    try:
        wait_for(lambda: len(bound()) == 32 + 5, 60, "the H200s full and team pm at its limits")
        placed = bound()
        light_n = sum(1 for name in placed if name.startswith("light-"))
        heavy_n = sum(1 for name in placed if name.startswith("heavy-"))
        assert light_n + heavy_n == 32 and abs(light_n - 8) <= 1 and abs(heavy_n - 24) <= 1, (
            light_n,
            heavy_n,
        )
        on = [node for name, node in placed.items() if name.startswith("mixed-")]
        assert sum(1 for n in on if n.startswith(h100["group"])) == 4  # 16 H100s: its quota and limit
        assert sum(1 for n in on if n.startswith(a100["group"])) == 1  # 4 A100s: its A100 limit
    finally:
        sched.stop()


def test_a_queue_admits_only_its_namespaces(
    admin: KubeClient,
    namespace: str,
    control_plane: cluster.ControlPlane,
    tmp_path: Path,
    queues: list[str],
) -> None:
    """The queue label is written by pod authors: a pod from another namespace cannot take a
    fenced queue's quota (nor reclaim for it); it waits with an event that says why."""
    _, selector = node_group(admin, "fenced", 1)  # 8 GPUs
    stranger = cluster.make_namespace(admin)
    fenced = cluster.unique("fenced")
    made = queue_object(fenced, {"gpuModel": "*", "quota": 8})
    made["spec"]["namespaces"] = [namespace]
    admin.post(QUEUES, made)
    queues.append(fenced)
    with pytest.raises(ApiError) as refused:  # the schema refuses what is not a namespace name
        bad = queue_object(cluster.unique("bad"), {"gpuModel": "*", "quota": 1})
        bad["spec"]["namespaces"] = ["Not A Namespace"]
        admin.post(QUEUES, bad)
    assert refused.value.status == 422
    cluster.create_pods(admin, queued_pods(stranger, fenced, "forged", 1, 4, nodeSelector=selector))
    cluster.create_pods(admin, queued_pods(namespace, fenced, "owner", 1, 4, nodeSelector=selector))
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path), tmp_path, leaderElection={"leaderElect": False}
    ).start()
    try:

        def refusal() -> str | None:
            for event in cluster.events_for(admin, stranger, "forged-0"):
                if "may not use queue" in event.get("message", ""):
                    return event["message"]
            return None

        def owner_bound() -> bool:
            return any(p["spec"].get("nodeName") for p in cluster.list_pods(admin, namespace))

        wait_for(owner_bound, 30, "the owner's pod bound")
        wait_for(lambda: refusal() is not None, 30, "the forged pod's event")
        assert f"namespace {stranger!r}" in refusal() and "spec.namespaces" in refusal()
        assert not any(p["spec"].get("nodeName") for p in cluster.list_pods(admin, stranger))
    finally:
        sched.stop()
