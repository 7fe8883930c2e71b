"""Pod groups (gang scheduling) in the cache and the queue, without an API server."""

from __future__ import annotations

import numpy as np
import pytest
from builders import cluster, frac, placer, whole
from hypothesis import given, settings
from hypothesis import strategies as st
from tessellate.placement import Unschedulable
from tessellate.placement.gang import place_group
from tessellate.scheduler.cache import ClusterCache
from tessellate.scheduler.gang import (
    MIN_AVAILABLE,
    POD_GROUP,
    GroupDecision,
    PodGroupError,
    decide_group,
    pod_group,
)
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.queue import SchedulingQueue
from test_scheduler_cache import bound, cache_with, gpus, node, pod


def member(name: str, group: str, min_available: int | str | None, limits: dict, **spec) -> dict:
    p = pod(name, limits, **spec)
    p["metadata"]["labels"] = {POD_GROUP: group}
    if min_available is not None:
        p["metadata"]["annotations"] = {MIN_AVAILABLE: str(min_available)}
    return p


def pending(rec: PodRecord) -> bool:
    return not rec.node_name and not rec.deleting


def add(cache: ClusterCache, *pods: dict) -> list[PodRecord]:
    recs = []
    for p in pods:
        rec, _ = cache.upsert_pod(p)
        assert rec is not None
        recs.append(rec)
    return recs


def run_pass(cache: ClusterCache, rec: PodRecord) -> GroupDecision:
    assert rec.group is not None
    return decide_group(cache, rec.group, pending)


def free_gpus(cache: ClusterCache) -> np.ndarray:
    assert cache.ensure_built() and cache.state is not None
    return cache.state.gpu_left.copy()


# -- the contract --------------------------------------------------------------------------


def test_the_label_and_annotation_make_a_group_per_namespace() -> None:
    group = pod_group(member("w-0", "train", 4, gpus(8)))
    assert group is not None and (group.key, group.min_available) == ("ns/train", 4)
    assert pod_group(pod("alone", gpus(1))) is None


@pytest.mark.parametrize(
    ("group", "min_available", "message"),
    [
        ("train", None, f"needs annotation {MIN_AVAILABLE}"),
        ("train", "four", "must be an integer, got 'four'"),
        ("train", 0, "must be 1..10000, got 0"),
        ("  ", 2, "is empty"),
    ],
)
def test_malformed_groups_say_what_to_fix(group: str, min_available, message: str) -> None:
    with pytest.raises(PodGroupError, match=message):
        pod_group(member("w", group, min_available, gpus(1)))
    rec = PodRecord.parse(member("w", group, min_available, gpus(1)))
    assert rec.problem is not None and rec.problem.startswith("invalid pod group: ")


def test_min_available_without_a_group_label_is_an_error() -> None:
    p = pod("w", gpus(1))
    p["metadata"]["annotations"] = {MIN_AVAILABLE: "2"}
    with pytest.raises(PodGroupError, match=f"no label {POD_GROUP}"):
        pod_group(p)


# -- all or nothing ------------------------------------------------------------------------


def test_a_group_that_fits_is_placed_whole() -> None:
    cache = cache_with(node("n1"), node("n2"))
    recs = add(cache, *(member(f"w-{i}", "train", 4, gpus(4)) for i in range(4)))
    decision = run_pass(cache, recs[2])
    assert len(decision.placed) == 4 and not decision.failed
    assert {p.uid for p in decision.placed} == set(cache.assumed)
    assert int((free_gpus(cache) == 0).sum()) == 16


def test_a_group_that_does_not_fit_holds_nothing_and_every_member_is_told_why() -> None:
    cache = cache_with(node("n1"), node("n2"), node("n3"))
    filler = add(cache, pod("other", gpus(4)))[0]
    cache.decide(filler)
    before = free_gpus(cache)
    recs = add(cache, *(member(f"w-{i}", "train", 3, gpus(8)) for i in range(3)))
    decision = run_pass(cache, recs[0])
    assert decision.placed == [] and set(decision.failed) == {r.uid for r in recs}
    assert np.array_equal(free_gpus(cache), before)  # the two that fitted were given back
    assert set(cache.assumed) == {filler.uid}
    message = decision.failed[recs[1].uid]
    assert message.startswith(
        "pod group ns/train: 3 pod(s) must run together and only 2 fit now; 1 member(s)"
    )
    assert "Insufficient nvidia.com/gpu" in message


def test_a_group_waits_until_enough_members_exist() -> None:
    cache = cache_with(node("n1"), node("n2"))
    recs = add(cache, *(member(f"w-{i}", "train", 3, gpus(2)) for i in range(2)))
    decision = run_pass(cache, recs[0])
    assert decision.placed == [] and not cache.assumed
    assert decision.failed[recs[0].uid] == (
        f"pod group ns/train: waiting for 1 more pod(s) ({MIN_AVAILABLE} is 3, 2 exist)"
    )
    third = add(cache, member("w-2", "train", 3, gpus(2)))[0]
    assert len(run_pass(cache, third).placed) == 3


def test_bound_members_count_so_a_restarted_scheduler_places_the_rest_one_by_one() -> None:
    cache = cache_with(node("n1"), node("n2"))
    first = add(cache, *(member(f"w-{i}", "train", 3, gpus(4)) for i in range(3)))
    placed = run_pass(cache, first[0]).placed
    restarted = cache_with(node("n1"), node("n2"))
    by_uid = {r.uid: r for r in first}
    for p in placed:  # the Binding's annotation joins the pod's own, as the API server merges them
        after = bound(by_uid[p.uid].obj, p)
        after["metadata"]["annotations"].update(by_uid[p.uid].obj["metadata"]["annotations"])
        add(restarted, after)
    late = add(restarted, member("w-3", "train", 3, gpus(4)))[0]
    decision = run_pass(restarted, late)
    assert decision.running == 3 and [p.uid for p in decision.placed] == [late.uid]


def test_members_that_disagree_on_min_available_are_not_placed() -> None:
    cache = cache_with(node("n1"))
    recs = add(cache, member("w-0", "train", 2, gpus(1)), member("w-1", "train", 3, gpus(1)))
    decision = run_pass(cache, recs[0])
    assert decision.placed == [] and "members disagree on" in decision.failed[recs[0].uid]


def test_groups_are_namespaced_and_a_member_leaving_the_group_is_forgotten() -> None:
    cache = cache_with(node("n1"))
    here = member("w-0", "train", 2, gpus(1))
    there = member("w-1", "train", 2, gpus(1))
    there["metadata"]["namespace"] = "other"
    recs = add(cache, here, there)
    assert "waiting for 1 more" in run_pass(cache, recs[0]).failed[recs[0].uid]
    assert cache.group_members("ns/train") == [recs[0]]
    cache.delete_pod(recs[0].uid)
    assert cache.group_members("ns/train") == []


def test_the_biggest_members_are_decided_first() -> None:
    """Two 8-GPU nodes, members 4+4+8: deciding the 8 first finds the only packing."""
    cache = cache_with(node("n1"), node("n2"))
    recs = add(
        cache,
        member("a-small", "train", 3, gpus(4)),
        member("b-small", "train", 3, gpus(4)),
        member("c-big", "train", 3, gpus(8)),
    )
    decision = run_pass(cache, recs[0])
    assert decision.placed[0].key == "ns/c-big"
    assert len(decision.placed) == 3


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=6),
    min_available=st.integers(1, 6),
    fillers=st.lists(st.sampled_from([1, 2, 4]), max_size=6),
)
def test_a_pass_places_at_least_min_available_or_holds_nothing(sizes, min_available, fillers) -> None:
    cache = cache_with(node("n1"), node("n2"))
    for i, size in enumerate(fillers):
        rec = add(cache, pod(f"f-{i}", gpus(size)))[0]
        cache.decide(rec)
    before, assumed_before = free_gpus(cache), set(cache.assumed)
    recs = add(cache, *(member(f"w-{i}", "g", min_available, gpus(s)) for i, s in enumerate(sizes)))
    decision = run_pass(cache, recs[0])
    new = set(cache.assumed) - assumed_before
    assert new == {p.uid for p in decision.placed}
    assert set(decision.failed) | new == {r.uid for r in recs}
    if decision.placed:
        assert len(decision.placed) >= min_available
    else:
        assert np.array_equal(free_gpus(cache), before)
    assert (free_gpus(cache) >= 0).all()


# -- the core's rule, as any driver uses it ---------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=6),
    fractions=st.lists(st.sampled_from([250, 500]), max_size=3),
    min_available=st.integers(1, 9),
    running=st.integers(0, 3),
    busy=st.lists(st.sampled_from([1, 2, 4]), max_size=4),
    policy=st.sampled_from(["fgd", "bestfit", "random"]),
)
def test_place_group_keeps_enough_members_or_leaves_the_state_exactly_as_it_was(
    sizes, fractions, min_available, running, busy, policy
) -> None:
    state = cluster(("n1", 64000, 262144, 8, "A100"), ("n2", 64000, 262144, 8, "A100"))
    core = placer(state, policy)
    for i, count in enumerate(busy):
        decision = core.place(f"busy-{i}", whole(count))
        if not isinstance(decision, Unschedulable):
            state.allocate(decision)
    before = (state.gpu_left.copy(), state.cpu_left.copy(), dict(state.live))
    members = [(f"w-{i}", whole(n)) for i, n in enumerate(sizes)]
    members += [(f"f-{i}", frac(m)) for i, m in enumerate(fractions)]
    outcome = place_group(core, members, min_available, running)
    assert len(outcome.kept) + outcome.rolled_back + len(outcome.refused) == len(members)
    if outcome.enough:
        assert running + len(outcome.kept) >= min_available
        assert {a.pod for _, a in outcome.kept} == set(state.live) - set(before[2])
    else:
        assert outcome.kept == [] and running + outcome.rolled_back < min_available
        assert np.array_equal(state.gpu_left, before[0]) and np.array_equal(state.cpu_left, before[1])
        assert dict(state.live) == before[2]


def test_place_group_decides_the_biggest_member_first() -> None:
    state = cluster(("n1", 64000, 262144, 8, "A100"), ("n2", 64000, 262144, 8, "A100"))
    members = [("a", whole(4)), ("b", whole(4)), ("c", whole(8))]
    outcome = place_group(placer(state, "bestfit"), members, 3)
    assert outcome.enough and [m[0] for m, _ in outcome.kept] == ["c", "a", "b"]


# -- the queue -----------------------------------------------------------------------------


def test_claimed_members_leave_the_line_and_end_like_popped_pods() -> None:
    now = [0.0]
    queue = SchedulingQueue(1.0, 10.0, 60.0, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        queue.add(name, f"ns/{name}", 0)
    popped = queue.pop(timeout=0)
    assert popped is not None and popped.uid == "a"
    queue.claim("b", "ns/b", 0)
    queue.claim("d", "ns/d", 0)  # not queued yet (its add is still on the way)
    for uid in ("a", "b", "d"):
        queue.unschedulable(uid)
    nxt = queue.pop(timeout=0)
    assert nxt is not None and nxt.uid == "c"  # b's old place in line was dropped
    assert queue.pop(timeout=0) is None
    assert queue.depth()["unschedulable"] == 3
    assert queue.move_all_to_active() == 3


# -- a group decided as one CP-SAT batch ------------------------------------------------------


def test_a_group_that_falls_short_one_member_at_a_time_is_placed_as_a_batch(monkeypatch) -> None:
    from tessellate.placement.batch import BatchOptions
    from tessellate.placement.gang import GroupOutcome
    from tessellate.scheduler import gang

    cache = cache_with(node("n0"), node("n1"), node("n2"))
    for host in ("n1", "n2"):  # GPUs 0-3 busy: one idle 8-GPU node and two 4-GPU holes
        p = pod(f"busy-{host}", gpus(4))
        p["spec"]["nodeName"] = host
        cache.upsert_pod(p)
    recs = add(cache, *(member(f"w{i}", "job", 3, gpus(g)) for i, g in enumerate((4, 4, 8))))

    def short(members, min_available, running, decide, undo):  # greedy order that strands the 8
        return GroupOutcome(refused=[(m, "greedy order left it no room") for m in members])

    monkeypatch.setattr(gang, "place_together", short)
    assert run_pass(cache, recs[0]).placed == []  # without the batch the group waits
    decision = decide_group(cache, recs[0].group, pending, BatchOptions(time_limit_s=2.0))
    where = {p.key: p.node for p in decision.placed}
    assert where == {"ns/w0": where["ns/w0"], "ns/w1": where["ns/w1"], "ns/w2": "n0"}
    assert {where["ns/w0"], where["ns/w1"]} == {"n1", "n2"} and not decision.failed
    assert cache.state is not None and cache.state.allocated_gpu_milli == 24000  # all reserved
    assert sorted(cache.assumed) == sorted(r.uid for r in recs)


def test_a_batch_that_still_falls_short_reserves_nothing(monkeypatch) -> None:
    from tessellate.placement.batch import BatchOptions

    cache = cache_with(node("n0", gpus=4))
    recs = add(cache, *(member(f"w{i}", "job", 2, gpus(4)) for i in range(2)))
    decision = decide_group(cache, recs[0].group, pending, BatchOptions(time_limit_s=1.0))
    assert decision.placed == [] and len(decision.failed) == 2
    assert cache.state is not None and cache.state.allocated_gpu_milli == 0 and not cache.assumed
