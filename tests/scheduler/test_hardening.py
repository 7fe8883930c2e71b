"""Regression tests for what an adversarial node or pod author did to the scheduler's cache
(the hardening issue): each failed on the code before the fix."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from tessellate.placement import Unschedulable
from tessellate.placement.topology import nvswitch
from tessellate.scheduler.app import Scheduler
from tessellate.scheduler.cache import ClusterCache, NodeProblem, Placed
from tessellate.scheduler.charging import Charges
from tessellate.scheduler.config import SchedulerConfig
from tessellate.scheduler.nodes import node_info
from tessellate.scheduler.plugins.node_health import REASON_QUARANTINED
from test_scheduler_cache import bound, cache_with, charged, decide, gpus, node, pod

from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.devices import DEVICES
from tessellate.wire.topology import TOPOLOGY, to_inventory


def devices(*entries: dict) -> str:
    return json.dumps({"gpus": list(entries)})


def full_node_with_bound_pods(cache: ClusterCache, name: str = "busy") -> list[dict]:
    """`name` (8 GPUs) fully held by two bound 4-GPU Tessellate pods."""
    pods = []
    for i in range(2):
        p = pod(f"{name}-{i}", gpus(4))
        placed = decide(cache, p)
        assert isinstance(placed, Placed) and placed.node == name
        pods.append(bound(p, placed))
        cache.upsert_pod(pods[-1])
    return pods


def test_a_devices_annotation_listing_a_gpu_twice_quarantines_that_node_not_the_cache() -> None:
    problems: list[NodeProblem] = []
    cache = ClusterCache("fgd", seed=1, on_node_problem=problems.append)
    cache.upsert_node(node("busy"))
    full_node_with_bound_pods(cache)
    bad = node("bad")
    twice = {"index": 0, "health": "Unhealthy"}
    bad["metadata"]["annotations"] = {DEVICES: devices(twice, twice)}
    cache.upsert_node(bad)  # a node change: the cache rebuilds
    for i in range(4):
        result = decide(cache, pod(f"new-{i}", gpus(1)))
        assert isinstance(result, Unschedulable), "a GPU of the busy node was offered twice"
        assert f"1 {REASON_QUARANTINED}" in result.message
    assert charged(cache, "busy") == [0] * 8
    assert [p.node for p in problems] == ["bad"] and problems[0].quarantined
    assert "lists GPU 0 twice" in problems[0].message
    assert [(p.node, p.quarantined) for p in cache.node_problems()] == [("bad", True)]


def test_any_exception_in_a_rebuild_leaves_no_half_built_state(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = cache_with(node("busy"))
    full_node_with_bound_pods(cache)
    broken = ClusterCache._target_workload

    def fails(self: ClusterCache) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(ClusterCache, "_target_workload", fails)
    cache.upsert_node(node("other", gpus=2))
    result = decide(cache, pod("during", gpus(1)))
    assert isinstance(result, Unschedulable)
    assert "could not rebuild its view of the cluster (RuntimeError: boom)" in result.message
    assert cache.state is None and cache.build_error is not None
    monkeypatch.setattr(ClusterCache, "_target_workload", broken)
    placed = [decide(cache, pod(f"after-{i}", gpus(1))) for i in range(3)]
    assert [p.node for p in placed if isinstance(p, Placed)] == ["other", "other"]
    assert isinstance(placed[2], Unschedulable)
    assert charged(cache, "busy") == [0] * 8 and cache.build_error is None


def test_a_pod_that_cannot_be_counted_quarantines_only_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = cache_with(node("a", gpus=2), node("b", gpus=2))
    p = pod("x", gpus(1), node_name="a", annotation='{"gpus":[{"index":0,"milli":1000}]}')
    original = Charges._gpus_of

    def explode(self: Charges, rec: Any, index: int) -> tuple[int, ...]:
        if rec.key == "ns/x":
            raise KeyError("surprise")
        return original(self, rec, index)

    monkeypatch.setattr(Charges, "_gpus_of", explode)
    cache.replace_pods([p])
    result = decide(cache, pod("y", gpus(2)))
    assert isinstance(result, Placed) and result.node == "b"
    assert cache.quarantine_reasons["a"].startswith("bound pod ns/x could not be counted")


def test_an_absurd_gpu_count_quarantines_one_node_and_scheduling_goes_on() -> None:
    problems: list[NodeProblem] = []
    cache = ClusterCache("fgd", seed=1, on_node_problem=problems.append)
    cache.upsert_node(node("huge", gpus=99999999999))
    cache.upsert_node(node("fine", gpus=2))
    placed = decide(cache, pod("p", gpus(2)))
    assert isinstance(placed, Placed) and placed.node == "fine"
    assert cache.state is not None and cache.state.gpu_left.shape[1] == 2
    refused = decide(cache, pod("q", gpus(1)))
    assert isinstance(refused, Unschedulable) and f"1 {REASON_QUARANTINED}" in refused.message
    assert problems[0].node == "huge" and problems[0].quarantined
    assert "at most 64" in problems[0].message or "outside 0.." in problems[0].message
    assert "takes no new pods until this is fixed" in problems[0].message


@pytest.mark.parametrize(
    ("allocatable", "labels", "says"),
    [
        ({"cpu": "1E"}, {}, "allocatable cpu (milli)"),
        ({"memory": "100000Ei"}, {}, "allocatable memory"),
        ({"pods": "1e12"}, {}, "allocatable pods"),
        ({"nvidia.com/mig-1g.10gb": "99999999999"}, {}, "nvidia.com/mig-1g.10gb"),
        ({}, {"nvidia.com/gpu.count": "1000000"}, "label nvidia.com/gpu.count"),
        ({"cpu": "lots"}, {}, "allocatable does not parse"),
    ],
)
def test_every_absurd_node_quantity_is_a_quarantine_with_a_reason(
    allocatable: dict, labels: dict, says: str
) -> None:
    n = node("n", labels=labels)
    n["status"]["allocatable"].update(allocatable)
    started = time.perf_counter()
    info = node_info(n)
    assert time.perf_counter() - started < 1.0  # no loop or array sized by the number
    assert info.quarantine is not None and says in info.quarantine
    assert info.spec.gpu_count == 0 and info.spec.max_pods == 0


def test_node_info_never_raises_on_wrong_types() -> None:
    weird = {"metadata": {"name": "w", "labels": {"a": 1}, "annotations": {TOPOLOGY: 5, DEVICES: []}}}
    weird["status"] = {"allocatable": {"nvidia.com/gpu": True, "cpu": [1]}}
    weird["spec"] = {"taints": ["not a taint"]}
    info = node_info(weird)
    assert info.quarantine is not None


def one_bound_pod(name: str) -> tuple[ClusterCache, list[str], dict, Placed]:
    """A 2-GPU node with one bound 1-GPU Tessellate pod; the cache's reported problems."""
    problems: list[str] = []
    cache = ClusterCache("fgd", seed=1, on_problem=lambda problem, rec: problems.append(problem.message))
    cache.upsert_node(node("n1", gpus=2))
    p = pod(name, gpus(1))
    placed = decide(cache, p)
    assert isinstance(placed, Placed)
    cache.upsert_pod(bound(p, placed))
    return cache, problems, p, placed


def test_a_forged_assignment_on_a_foreign_pod_neither_takes_a_gpu_nor_closes_the_node() -> None:
    cache, problems, _, placed = one_bound_pod("victim")
    held = placed.annotation.indices[0]
    forged = pod("attacker", gpus(1), node_name="n1", annotation=json.dumps({"gpus": [{"index": held}]}))
    forged["spec"]["schedulerName"] = "default-scheduler"
    cache.upsert_pod(forged)
    cache.upsert_node(node("n1", gpus=2, labels={"rebuild": "now"}))
    assert cache.ensure_built()
    assert cache.charges is not None
    assert not cache.charges.overcommitted.any(), "one foreign pod closed the node to everyone"
    assert charged(cache, "n1") == [0, 0]  # victim and attacker on different GPUs
    assert any("ignored: only pods with schedulerName tessellate" in m for m in problems)
    refused = decide(cache, pod("late", gpus(1)))
    assert isinstance(refused, Unschedulable) and "Insufficient nvidia.com/gpu" in refused.message


def test_editing_the_assignment_of_a_bound_pod_does_not_free_its_gpu() -> None:
    cache, problems, own, placed = one_bound_pod("own")
    given = placed.annotation.indices[0]
    edited = bound(own, placed)
    edited["metadata"]["annotations"][ASSIGNMENT] = json.dumps({"gpus": [{"index": 1 - given}]})
    edited["metadata"]["resourceVersion"] = "2"
    cache.upsert_pod(edited)
    cache.upsert_node(node("n1", gpus=2, labels={"rebuild": "now"}))  # the rebuild reads the records
    nxt = decide(cache, pod("next", gpus(1)))
    assert isinstance(nxt, Placed)
    assert nxt.annotation.indices == (1 - given,), "the next pod was given the edited pod's GPU"
    assert any("changed after the pod was bound; ignored" in m for m in problems)


def test_uuids_come_only_from_a_topology_that_validated() -> None:
    inventory = to_inventory(nvswitch(8))
    for i, gpu in enumerate(inventory["gpus"]):
        gpu["uuid"] = f"GPU-{i}"
    duplicate_index = json.loads(json.dumps(inventory))
    duplicate_index["gpus"][1]["index"] = 0
    n = node("n1")
    n["metadata"]["annotations"] = {TOPOLOGY: json.dumps(duplicate_index)}
    assert node_info(n).gpu_uuids == ()
    one_uuid = json.loads(json.dumps(inventory))
    for gpu in one_uuid["gpus"]:
        gpu["uuid"] = "GPU-same"
    n["metadata"]["annotations"] = {TOPOLOGY: json.dumps(one_uuid)}
    info = node_info(n)
    assert info.gpu_uuids == () and "several GPUs the UUID GPU-same" in (info.problem or "")
    cache = cache_with(n)
    placed = decide(cache, pod("p", gpus(2)))
    assert isinstance(placed, Placed)
    assert all(share.uuid is None for share in placed.annotation.gpus)
    n["metadata"]["annotations"] = {TOPOLOGY: json.dumps(inventory)}
    assert node_info(n).gpu_uuids == tuple(f"GPU-{i}" for i in range(8))


class _Unreachable:
    """A KubeClient whose API server went away after the first list."""

    def __init__(self) -> None:
        self.lists = 0

    def list_all(self, path: str, **_: Any) -> tuple[list, str]:
        self.lists += 1
        if self.lists > 2:
            raise ConnectionRefusedError("connection refused")
        return [], "1"

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused")


def test_readyz_fails_while_the_api_server_is_unreachable_or_every_cycle_fails() -> None:
    config = SchedulerConfig(bindAddress="127.0.0.1:0", readinessApiTimeoutSeconds=0.3)
    config.leaderElection.leaderElect = False
    scheduler = Scheduler(_Unreachable(), config)  # type: ignore[arg-type]
    scheduler.nodes.synced.set()
    scheduler.pods.synced.set()
    assert not scheduler._ready()[0]  # the Queue informer has not listed yet
    scheduler.queues.synced.set()
    assert scheduler._ready()[0]
    scheduler.nodes.failing_since = time.monotonic() - 1.0
    ok, why = scheduler._ready()
    assert not ok and "API server has been unreachable for 1s" in why
    scheduler.nodes.failing_since = None
    scheduler._loop_errors = 3
    ok, why = scheduler._ready()
    assert not ok and "the last 3 scheduling cycles failed unexpectedly" in why
    scheduler._loop_errors = 0
    scheduler.cache.build_error = "the scheduler could not rebuild its view of the cluster (x)"
    assert scheduler._ready() == (False, scheduler.cache.build_error)


def test_a_reflector_that_cannot_reach_the_api_server_says_since_when() -> None:
    from tessellate.scheduler.informer import Reflector

    stop = threading.Event()
    reflector = Reflector(_Unreachable(), "/api/v1/nodes", lambda items: None, lambda k, o: None, stop)  # type: ignore[arg-type]
    reflector.start()
    deadline = time.monotonic() + 5
    while reflector.failing_since is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert reflector.failing_since is not None


class _RecordingApi(_Unreachable):
    def __init__(self) -> None:
        super().__init__()
        self.posted: list[dict] = []

    def post(self, path: str, body: dict) -> dict:
        self.posted.append(body)
        return body

    def patch(self, path: str, body: dict, **_: Any) -> dict:
        return body


def test_an_unexpected_error_in_a_cycle_tells_the_pod_and_leaves_nothing_half_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = _RecordingApi()
    config = SchedulerConfig(bindAddress="127.0.0.1:0")
    config.leaderElection.leaderElect = False
    scheduler = Scheduler(api, config)  # type: ignore[arg-type]
    p = pod("victim", gpus(2))
    with scheduler.cache.lock:
        scheduler.cache.upsert_node(node("n1", gpus=2))
        rec, _ = scheduler.cache.upsert_pod(p)
    assert rec is not None
    scheduler.queue.add(rec.uid, rec.key, 0)

    def broken(self: ClusterCache, rec: Any, decision: Any) -> Placed:
        raise RuntimeError("annotation builder broke")

    monkeypatch.setattr(ClusterCache, "_placed", broken)  # fails after the GPUs were allocated
    queued = scheduler.queue.pop(timeout=1.0)
    assert queued is not None
    with pytest.raises(RuntimeError):
        scheduler.schedule_one(queued)
    scheduler._cycle_failed(queued, RuntimeError("annotation builder broke"))
    scheduler.recorder.close(wait=True)
    with scheduler.cache.lock:
        assert not scheduler.cache.assumed
        assert scheduler.cache.ensure_built()
        assert charged(scheduler.cache, "n1") == [1000, 1000], "the failed cycle left GPUs charged"
    notes = [b.get("note", "") for b in api.posted]
    assert any("internal error while scheduling (RuntimeError: annotation builder broke)" in n for n in notes)
    assert scheduler._loop_errors == 1
