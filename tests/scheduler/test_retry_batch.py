"""Pods retried after a cluster change are decided together (the Batch phase).

One at a time, in arrival order, a small pod may take the room two larger ones needed;
decided together (`placement.batch`, CP-SAT) they hold more GPU. Never fewer GPUs than one
at a time, and the pods the batch leaves go on to their own cycles.
"""

from __future__ import annotations

import time

from tessellate.scheduler.app import Scheduler
from tessellate.scheduler.config import SchedulerConfig
from tessellate.scheduler.queue import SchedulingQueue
from test_framework import MemoryApi
from test_scheduler_cache import gpus, node, pod


def scheduler(batch_seconds: float) -> tuple[Scheduler, MemoryApi]:
    api = MemoryApi()
    config = SchedulerConfig(
        bindAddress="127.0.0.1:0",
        retryBatchSeconds=batch_seconds,
        podInitialBackoffSeconds=0.01,
        podMaxBackoffSeconds=0.01,
    )
    config.leaderElection.leaderElect = False
    s = Scheduler(api, config)  # type: ignore[arg-type]
    s.leading.set()
    return s, api


def drain(s: Scheduler) -> None:
    """Run cycles until nothing is ready (backoffs of 10 ms expire within the wait)."""
    while (queued := s.queue.pop(timeout=0.1)) is not None:
        s.schedule_one(queued)


def finish(s: Scheduler) -> None:
    s.binder.shutdown(wait=True)
    s.recorder.close(wait=True)


def two_holes_and_three_retries(batch_seconds: float) -> tuple[MemoryApi, Scheduler]:
    """Two 4-GPU nodes, full; a 2-GPU pod and two 4-GPU pods wait, then both nodes free up."""
    s, api = scheduler(batch_seconds)
    busy = [pod(f"busy-{n}", gpus(4), node_name=n) for n in ("n1", "n2")]
    with s.cache.lock:
        for n in ("n1", "n2"):
            s.cache.upsert_node(node(n, gpus=4))
    for p in busy:
        s._pod_event("ADDED", p)
    for name, size in (("small", 2), ("big-a", 4), ("big-b", 4)):
        s._pod_event("ADDED", pod(name, gpus(size)))
    drain(s)  # each tried once: nothing fits, all parked
    assert not api.bindings and s.queue.depth()["unschedulable"] == 3
    time.sleep(0.02)
    for p in busy:
        s._pod_event("DELETED", p)  # a pod leaving wakes the parked pods
    time.sleep(0.02)  # their 10 ms backoff has expired: all three are active at once
    drain(s)
    finish(s)
    return api, s


def test_retries_decided_together_hold_more_gpu_than_one_at_a_time() -> None:
    alone, _ = two_holes_and_three_retries(batch_seconds=0)
    assert sorted(b["metadata"]["name"] for b in alone.bindings) == ["big-a", "small"]  # 6 GPUs

    together, s = two_holes_and_three_retries(batch_seconds=2.0)
    bound = {b["metadata"]["name"]: b["target"]["name"] for b in together.bindings}
    assert sorted(bound) == ["big-a", "big-b"] and set(bound.values()) == {"n1", "n2"}  # 8 GPUs
    failed = [e for e in together.events if e["reason"] == "FailedScheduling"]
    assert failed and failed[-1]["regarding"]["name"] == "small"  # told why, in its own cycle
    assert s.metrics.batches.labels("improved")._value.get() == 1


def test_the_queue_claims_retries_of_the_heads_priority_in_arrival_order_once_per_change() -> None:
    queue = SchedulingQueue(initial_backoff=0, max_backoff=0)
    for i, priority in enumerate((5, 5, 1, 5, 5)):
        queue.add(f"p{i}", f"ns/p{i}", priority)
    tried = [queue.pop(timeout=0) for _ in range(4)]  # p0, p1, p3, p4 (priority 5 first)
    for pod_ in tried:
        assert pod_ is not None
        queue.unschedulable(pod_.uid)
    queue.add("new", "ns/new", 5)  # never tried: not a retry
    queue.move_all_to_active()
    head = queue.pop(timeout=0)
    assert head is not None and head.uid == "p0"
    claimed = queue.claim_retries(head, limit=2)
    assert [p.uid for p in claimed] == ["p1", "p3"]  # same priority, arrival order, at most 2
    assert queue.claim_retries(head, limit=8) == []  # once per cluster change
    queue.release("p3")  # left by the batch: back in line, no backoff
    order = [queue.pop(timeout=0) for _ in range(4)]
    assert [p.uid for p in order if p is not None] == ["p3", "p4", "new", "p2"]
    assert order[0] is not None and queue.claim_retries(order[0], limit=8) == []  # already batched
