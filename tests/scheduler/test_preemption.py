"""Preemption in the cache, without an API server: who is chosen, and nothing else changes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from tessellate.placement import Unschedulable
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.nominator import Nominator
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.preemption import Preemption, find_preemption, victims_on, victims_still_leaving
from test_scheduler_cache import bound, cache_with, decide, node, pod


def running(cache: ClusterCache, name: str, gpus: int, priority: int, on: str | None = None) -> PodRecord:
    """A bound pod of `priority` holding `gpus` GPUs (on node `on` when given)."""
    spec = {"priority": priority}
    if on is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": on}
    p = pod(name, {"nvidia.com/gpu": str(gpus), "cpu": "1"}, **spec)
    placed = decide(cache, p)
    assert isinstance(placed, Placed), placed
    rec, _ = cache.upsert_pod(bound(p, placed))
    assert rec is not None
    return rec


def pending(cache: ClusterCache, name: str, gpus: int, priority: int, **spec) -> PodRecord:
    rec, _ = cache.upsert_pod(pod(name, {"nvidia.com/gpu": str(gpus), "cpu": "1"}, priority=priority, **spec))
    assert rec is not None
    return rec


def host(name: str) -> dict:
    return node(name, labels={"kubernetes.io/hostname": name})


def node_victims(cache: ClusterCache, rec: PodRecord, name: str, priority: int) -> list[PodRecord] | None:
    """The what-if on one node, every lower-priority pod there considered."""
    assert cache.state is not None
    lower = [p for p in cache.pods.values() if p.node_name == name and p.priority < priority]
    return victims_on(cache, rec, cache.state.index[name], lower) if lower else None


def snapshot(cache: ClusterCache) -> tuple:
    assert cache.state is not None
    return cache.state.gpu_left.copy(), cache.state.cpu_left.copy(), dict(cache.state.live)


def test_the_least_important_and_fewest_victims_are_chosen() -> None:
    cache = cache_with(host("n1"), host("n2"))
    small = [running(cache, f"small-{i}", 2, priority=1, on="n1") for i in range(4)]
    running(cache, "big", 8, priority=5, on="n2")
    urgent = pending(cache, "urgent", 4, priority=10)
    assert isinstance(cache.decide(urgent), Unschedulable)
    preemption = find_preemption(cache, urgent)
    assert preemption is not None and preemption.node == "n1"
    # Two of the four 2-GPU pods are enough; the others are reprieved.
    assert len(preemption.victims) == 2 and {v.uid for v in preemption.victims} <= {s.uid for s in small}


def test_equal_or_higher_priority_pods_are_never_victims_and_never_policy_is_honoured() -> None:
    cache = cache_with(host("n1"))
    running(cache, "peer", 8, priority=10)
    same = pending(cache, "same", 8, priority=10)
    assert find_preemption(cache, same) is None
    cache2 = cache_with(host("n1"))
    running(cache2, "low", 8, priority=0)
    polite = pending(cache2, "polite", 8, priority=10, preemptionPolicy="Never")
    assert find_preemption(cache2, polite) is None


def test_nodes_the_pod_may_not_use_are_not_searched() -> None:
    cache = cache_with(host("n1"), host("n2"))
    running(cache, "low-1", 8, priority=0, on="n1")
    running(cache, "low-2", 8, priority=0, on="n2")
    picky = pending(cache, "picky", 8, priority=10, nodeSelector={"kubernetes.io/hostname": "n2"})
    preemption = find_preemption(cache, picky)
    assert preemption is not None and preemption.node == "n2"


def test_after_the_victims_leave_the_preemptor_fits_there() -> None:
    cache = cache_with(host("n1"))
    low = running(cache, "low", 8, priority=0)
    urgent = pending(cache, "urgent", 8, priority=10)
    preemption = find_preemption(cache, urgent)
    assert preemption is not None and [v.uid for v in preemption.victims] == [low.uid]
    nominator = Nominator()
    nominator.nominate(urgent.uid, [low.uid])
    assert nominator.awaiting_victims(urgent.uid, cache.pods.__contains__)
    cache.delete_pod(low.uid)
    assert not nominator.awaiting_victims(urgent.uid, cache.pods.__contains__)
    placed = cache.decide(urgent)
    assert isinstance(placed, Placed) and placed.node == "n1"


@settings(max_examples=60, deadline=None)
@given(
    pods=st.lists(st.tuples(st.sampled_from([1, 2, 4]), st.integers(0, 3)), min_size=1, max_size=8),
    want=st.sampled_from([1, 2, 4, 8]),
    priority=st.integers(1, 4),
)
def test_the_what_if_leaves_the_state_exactly_as_it_was_and_its_answer_works(pods, want, priority) -> None:
    cache = cache_with(host("n1"), host("n2"))
    for i, (gpus, prio) in enumerate(pods):
        p = pod(f"r-{i}", {"nvidia.com/gpu": str(gpus), "cpu": "1"}, priority=prio)
        placed = decide(cache, p)
        if isinstance(placed, Placed):
            cache.upsert_pod(bound(p, placed))
    urgent = pending(cache, "urgent", want, priority=priority)
    before = snapshot(cache)
    preemption = find_preemption(cache, urgent)
    after = snapshot(cache)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]
    exhaustive = [
        Preemption(name, tuple(victims))
        for name in ("n1", "n2")
        if (victims := node_victims(cache, urgent, name, priority))
    ]
    if preemption is None:
        assert exhaustive == []
        return
    assert preemption.rank() == min(p.rank() for p in exhaustive)  # pruning never loses the best
    assert all(v.priority < priority and v.node_name == preemption.node for v in preemption.victims)
    for victim in preemption.victims:
        cache.delete_pod(victim.uid)
    placed = cache.decide(urgent)
    assert isinstance(placed, Placed)


def test_the_priority_count_follows_pods_through_changes_and_deletes() -> None:
    cache = cache_with(host("n1"))
    low = running(cache, "low", 2, priority=1)
    waiting = pending(cache, "waiting", 1, priority=7)
    assert cache.priorities == {1: 1, 7: 1}
    changed = dict(waiting.obj, spec={**waiting.obj["spec"], "priority": 3})
    cache.upsert_pod(changed)
    assert cache.priorities == {1: 1, 3: 1}
    cache.delete_pod(low.uid)
    cache.delete_pod(waiting.uid)
    assert not cache.priorities


def test_a_restarted_scheduler_waits_for_victims_on_the_nominated_node_instead_of_preempting_again() -> None:
    cache = cache_with(host("n1"), host("n2"))
    leaving = running(cache, "leaving", 8, priority=0, on="n1")
    running(cache, "other", 8, priority=0, on="n2")
    terminating = dict(
        leaving.obj, metadata={**leaving.obj["metadata"], "deletionTimestamp": "2026-12-01T00:00:00Z"}
    )
    cache.upsert_pod(terminating)
    urgent = pending(cache, "urgent", 8, priority=10)
    # no nomination known: it may preempt (on n2)
    assert not victims_still_leaving(cache, Nominator(), urgent)
    nominated = dict(urgent.obj, status={"phase": "Pending", "nominatedNodeName": "n1"})
    rec, _ = cache.upsert_pod(nominated)
    assert rec is not None and victims_still_leaving(cache, Nominator(), rec)
    cache.delete_pod(leaving.uid)
    assert not victims_still_leaving(cache, Nominator(), rec)
    assert isinstance(cache.decide(rec), Placed)
