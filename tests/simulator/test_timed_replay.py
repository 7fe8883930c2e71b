"""The time-based replay with departures (simulator/timed.py)."""

from __future__ import annotations

import numpy as np
import pytest
from paths import OPENB
from tessellate.placement import ClusterState, Fragmentation, FragmentationTracker, NodeSpec, Request
from tessellate.placement.fit import feasible_mask
from tessellate.simulator.replay import target_workload
from tessellate.simulator.timed import PENDING, PLACED, TIMED_OUT, WITHDRAWN, run_timed
from tessellate.simulator.trace import PodRecord, Trace

GPU = Request(cpu_milli=1000, gpu_count=1, gpu_milli=1000)
HALF = Request(cpu_milli=1000, gpu_count=1, gpu_milli=500)
TWO = Request(cpu_milli=1000, gpu_count=2, gpu_milli=1000)
CPU = Request(cpu_milli=1000)


def node(name: str, gpus: int = 1, cpu: int = 4000, mem: int = 65536) -> NodeSpec:
    return NodeSpec(name, cpu, mem, gpus, "T4" if gpus else "")


def pod(name: str, request: Request, start: float | None, end: float | None = None) -> PodRecord:
    return PodRecord(name, request, start, end)


def trace(nodes: list[NodeSpec], pods: list[PodRecord]) -> Trace:
    return Trace("hand", tuple(nodes), tuple(pods))


def one_gpu_wait(end_b: float = 200.0) -> Trace:
    """a holds the only GPU 0..100; b arrives at 10 and must wait for it."""
    return trace([node("n1")], [pod("a", GPU, 0, 100), pod("b", GPU, 10, end_b)])


def assert_empty_like_new(state: ClusterState) -> None:
    fresh = ClusterState(state.nodes)
    assert not state.live
    for attr in (
        "cpu_left",
        "mem_left",
        "pod_count",
        "gpu_left",
        "affinity",
        "gpu_total_left",
        "gpu_free_count",
        "gpu_max_left",
    ):
        np.testing.assert_array_equal(getattr(state, attr), getattr(fresh, attr), err_msg=attr)


# ---- waiting, departures, max wait ------------------------------------------------------------


def test_waiting_pod_starts_exactly_at_the_departure():
    result = run_timed(one_gpu_wait(), "bestfit")
    assert result.start_time == {"a": 0.0, "b": 100.0}
    assert result.delays.tolist() == [0.0, 90.0]
    assert (result.placed_immediately, result.placed_after_wait, result.never_placed) == (1, 1, 0)
    s = result.summary()
    assert s["delay_max_s"] == 90.0
    assert s["delay_p50_s"] == 45.0
    assert s["departures"] == 2
    # steps: a, b queued, a leaves/b starts, b leaves
    assert result.steps.time.tolist() == [0, 10, 100, 200]
    assert result.steps.pending.tolist() == [0, 1, 0, 0]
    assert result.steps.running.tolist() == [1, 1, 1, 0]
    assert "0/1 nodes are available" in result.reasons["b"]


def test_max_wait_elapsed_counts_as_failed_and_its_departure_is_ignored():
    result = run_timed(one_gpu_wait(), "bestfit", max_wait=50)
    assert result.outcome == {"a": PLACED, "b": TIMED_OUT}
    assert (result.timed_out, result.placed_after_wait, result.never_placed) == (1, 0, 1)
    assert result.steps.time.tolist() == [0, 10, 60, 100, 200]  # the expiry is an event at 10 + 50
    assert result.steps.pending.tolist() == [0, 1, 0, 0, 0]
    assert result.departures == 1
    assert_empty_like_new(result.state)


def test_max_wait_is_inclusive_and_zero_fails_on_arrival():
    assert run_timed(one_gpu_wait(), "bestfit", max_wait=90).start_time["b"] == 100.0
    assert run_timed(one_gpu_wait(), "bestfit", max_wait=89.5).outcome["b"] == TIMED_OUT
    zero = run_timed(one_gpu_wait(), "bestfit", max_wait=0)
    assert zero.outcome["b"] == TIMED_OUT
    assert zero.steps.pending.tolist() == [0, 0, 0, 0]


def test_pending_pod_that_departs_is_withdrawn():
    result = run_timed(one_gpu_wait(end_b=80), "bestfit")
    assert result.outcome["b"] == WITHDRAWN
    assert (result.withdrawn, result.timed_out, result.pending_at_end) == (1, 0, 0)
    assert result.steps.time.tolist() == [0, 10, 80, 100]
    assert result.steps.pending.tolist() == [0, 1, 0, 0]


def test_pods_without_deletion_run_forever_and_may_stay_pending():
    t = trace([node("n1")], [pod("a", GPU, 0, None), pod("b", GPU, 5, None)])
    result = run_timed(t, "bestfit")
    assert result.outcome == {"a": PLACED, "b": PENDING}
    assert result.pending_at_end == 1
    assert result.never_placed == 1
    assert len(result.state.live) == 1


# ---- ordering ---------------------------------------------------------------------------------


def test_departure_before_arrival_at_the_same_time():
    t = trace([node("n1")], [pod("z", GPU, 0, 10), pod("a", GPU, 10, 20)])
    result = run_timed(t, "bestfit")
    assert result.start_time == {"z": 0.0, "a": 10.0}
    assert result.placed_immediately == 2


def test_equal_arrivals_go_in_name_order_whatever_the_trace_order():
    t = trace([node("n1")], [pod("p-b", GPU, 5, 50), pod("p-a", GPU, 5, 50)])
    result = run_timed(t, "bestfit")
    assert result.outcome == {"p-a": PLACED, "p-b": WITHDRAWN}  # p-b leaves at 50 without running


def test_waiting_pod_is_retried_before_a_new_arrival_at_the_departure_time():
    t = trace([node("n1")], [pod("a", GPU, 0, 100), pod("b", GPU, 10, 300), pod("c", GPU, 100, 300)])
    result = run_timed(t, "bestfit")
    assert result.start_time["b"] == 100.0
    assert result.outcome["c"] == WITHDRAWN


def test_queue_is_fifo_but_does_not_block_smaller_pods():
    # n1 has 2 GPUs; a holds one. b (2 GPUs) waits; c (1 GPU) and d (1 GPU) come later.
    t = trace(
        [node("n1", gpus=2)],
        [
            pod("a", GPU, 0, 100),
            pod("b", TWO, 10, 1000),
            pod("c", GPU, 20, 50),  # fits at once next to a: no head-of-line blocking
            pod("d", GPU, 30, 1000),  # waits behind c's GPU
        ],
    )
    result = run_timed(t, "bestfit")
    assert result.start_time["c"] == 20.0
    assert result.start_time["d"] == 50.0  # c's departure frees a GPU; b (2 GPUs) still does not fit
    assert result.outcome["b"] == WITHDRAWN  # a leaves at 100 but d holds a GPU until 1000


def test_fifo_among_waiting_pods_of_the_same_shape():
    t = trace(
        [node("n1")],
        [pod("a", GPU, 0, 100), pod("z-first", GPU, 10, 500), pod("a-second", GPU, 20, 500)],
    )
    result = run_timed(t, "bestfit")
    assert result.start_time["z-first"] == 100.0  # arrival order, not name order
    assert result.outcome["a-second"] == WITHDRAWN


def test_retry_limit_defers_the_rest_to_the_next_departure():
    nodes = [node("n1"), node("n2")]
    pods = [
        pod("a1", GPU, 0, 100),
        pod("a2", GPU, 0, 100),
        pod("z", CPU, 0, 150),  # an unrelated departure later on
        pod("b", GPU, 10, None),
        pod("c", GPU, 20, None),
    ]
    limited = run_timed(trace(nodes, pods), "bestfit", retry_limit=1)
    assert limited.start_time["b"] == 100.0
    assert limited.start_time["c"] == 150.0  # n2, released at 100, is remembered until then
    free = run_timed(trace(nodes, pods), "bestfit")
    assert free.start_time["c"] == 100.0


def test_a_failed_shape_skips_larger_shapes_in_the_same_pass():
    # At 100, a's GPU is freed: b takes it; c (same shape) and d (2 GPUs) cannot fit.
    nodes = [node("n1", gpus=2)]
    pods = [
        pod("x", GPU, 0, None),
        pod("a", GPU, 0, 100),
        pod("b", GPU, 10, None),
        pod("c", GPU, 11, None),
        pod("d", TWO, 12, None),
    ]
    result = run_timed(trace(nodes, pods), "bestfit")
    assert result.outcome == {"x": PLACED, "a": PLACED, "b": PLACED, "c": PENDING, "d": PENDING}
    assert result.retry_passes == 1
    assert result.retry_attempts == 2  # b placed, c failed; d skipped without an attempt


def test_a_pod_waiting_for_a_time_slice_starts_when_a_slice_frees():
    # One GPU in two slices: a and b take them; c waits. a's departure frees a slice (the
    # GPU is still half used, so no whole GPU is free): c takes it, as a pod arriving then would.
    sliced = NodeSpec("s1", 4000, 65536, 1, "T4", gpu_replicas=2)
    pods = [pod("a", GPU, 0, 100), pod("b", GPU, 0, 300), pod("c", GPU, 10, 300), pod("d", GPU, 100, 300)]
    result = run_timed(trace([sliced], pods), "bestfit")
    assert result.start_time["c"] == 100.0
    assert result.outcome["d"] == WITHDRAWN  # c was first in line for the slice
    alone = run_timed(trace([sliced], [p for p in pods if p.name != "c"]), "bestfit")
    assert alone.start_time["d"] == 100.0


def test_a_memory_bounded_fraction_is_not_skipped_behind_one_that_failed_on_memory():
    # One 16 GiB GPU: h holds 300m/10 GiB for good, a 600m/1 GiB until 100. At 100, 700m and
    # 6 GiB are free: p (200m, 8 GiB) fails on GPU memory, q (400m, 2 GiB) fits although it
    # asks more milli-GPU, so p's failure must not doom it.
    gib = 1024
    bounded = NodeSpec("m1", 8000, 65536, 1, "T4", gpu_memory_mib=16 * gib)

    def share(milli: int, mib: int) -> Request:
        return Request(cpu_milli=1000, gpu_count=1, gpu_milli=milli, gpu_memory_mib=mib)

    pods = [
        pod("h", share(300, 10 * gib), 0),
        pod("a", share(600, 1 * gib), 0, 100),
        pod("p", share(200, 8 * gib), 10),
        pod("q", share(400, 2 * gib), 20),
    ]
    result = run_timed(trace([bounded], pods), "bestfit")
    assert result.outcome["p"] == PENDING
    assert result.start_time["q"] == 100.0


# ---- metrics ----------------------------------------------------------------------------------


def test_metrics_by_hand_on_two_nodes():
    # Target workload: {whole GPU: 0.5, half GPU: 0.5}. A node with 500m free has
    # F = 0.5 * 500 (whole GPU cannot use it) = 250 and idle = 250 + 0.5 * 500 = 500.
    t = trace([node("n1"), node("n2")], [pod("a", GPU, 0, 100), pod("b", HALF, 50, 150)])
    result = run_timed(t, "bestfit", samples=7)
    steps = result.steps
    assert steps.time.tolist() == [0, 50, 100, 150]
    assert steps.allocated_milli.tolist() == [1000, 1500, 500, 0]
    assert steps.alloc_ratio.tolist() == [0.5, 0.75, 0.25, 0.0]
    assert steps.frag_milli.tolist() == pytest.approx([0, 250, 250, 0])
    assert steps.idle_milli.tolist() == pytest.approx([1000, 500, 1500, 2000])
    assert steps.frag_ratio.tolist() == pytest.approx([0, 0.5, 1 / 6, 0])
    assert steps.running.tolist() == [1, 2, 1, 0]
    assert result.state.live == {}
    s = result.summary()
    assert s["alloc_ratio_mean"] == pytest.approx((0.5 + 0.75 + 0.25) * 50 / 150)
    assert s["alloc_ratio_peak"] == 0.75
    assert s["frag_milli_mean"] == pytest.approx(500 * 50 / 150)
    assert s["frag_ratio_mean"] == pytest.approx((0.5 + 1 / 6) * 50 / 150)
    assert s["running_mean"] == pytest.approx(4 / 3)
    assert s["span_s"] == 150
    assert s["placed_immediately"] == 2 and s["delay_max_s"] == 0
    grid = result.grid
    assert grid.time.tolist() == [0, 25, 50, 75, 100, 125, 150]
    assert grid.alloc_ratio.tolist() == [0.5, 0.5, 0.75, 0.75, 0.25, 0.25, 0.0]
    assert grid.pending.tolist() == [0] * 7


def random_trace(seed: int, pods: int = 150, forever: float = 0.0) -> Trace:
    rng = np.random.default_rng(seed)
    nodes = [node("n1", 2, 8000), node("n2", 4, 16000), node("n3", 1, 4000), node("cpu", 0, 8000)]
    shapes = [
        CPU,
        GPU,
        HALF,
        TWO,
        Request(2000, 0, 1, 250),
        Request(3000, 0, 1, 750, ("T4",)),
        Request(500, 0, 4, 1000),
        Request(1000, 0, 1, 1000, ("V100M16",)),
    ]
    records = []
    for i in range(pods):
        start = float(rng.integers(0, 500))
        end = None if rng.random() < forever else start + float(rng.integers(1, 200))
        records.append(pod(f"p{i:03d}", shapes[rng.integers(len(shapes))], start, end))
    return trace(nodes, records)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("policy", ["fgd", "bestfit", "random", "packing"])
@pytest.mark.parametrize("max_wait", [None, 60.0])
def test_invariants_on_random_traces(policy, max_wait, seed):
    t = random_trace(seed=seed)
    result = run_timed(t, policy, seed=3, max_wait=max_wait)
    steps = result.steps
    assert np.all(steps.allocated_milli >= 0)
    assert np.all(steps.allocated_milli <= steps.total_milli)  # never over capacity
    assert np.all(np.diff(steps.time) > 0)
    assert len(result.outcome) == len(t.pods)
    counts = {o: list(result.outcome.values()).count(o) for o in (PLACED, TIMED_OUT, WITHDRAWN, PENDING)}
    assert counts[PLACED] == result.placed == len(result.delays) == len(result.start_time)
    assert counts[TIMED_OUT] == result.timed_out and counts[WITHDRAWN] == result.withdrawn
    assert counts[PENDING] == result.pending_at_end == 0  # every pod departs in the end
    assert result.departures == result.placed
    assert np.all(result.delays >= 0)
    if max_wait is not None:
        assert result.delays.max() <= max_wait
    by_name = {p.name: p for p in t.pods}
    for name, start in result.start_time.items():
        assert by_name[name].creation_time <= start < by_name[name].deletion_time
    assert steps.pending[-1] == 0 and steps.running[-1] == 0 and steps.allocated_milli[-1] == 0
    assert_empty_like_new(result.state)


@pytest.mark.parametrize("policy", ["fgd", "bestfit"])
def test_no_pending_pod_could_fit_after_any_step(policy):
    """Work conservation: the retry shortcuts never leave a pod waiting that fits.

    The state after the events at time `cut` is the final state of the trace cut
    there (later events dropped, pods still running then run forever).
    """
    full = random_trace(seed=7, pods=120, forever=0.1)
    for cut in sorted({p.deletion_time for p in full.pods if p.deletion_time is not None})[::6]:
        pods = [
            PodRecord(
                p.name,
                p.request,
                p.creation_time,
                p.deletion_time if p.deletion_time is not None and p.deletion_time <= cut else None,
            )
            for p in full.pods
            if p.creation_time <= cut
        ]
        result = run_timed(Trace("cut", full.nodes, tuple(pods)), policy)
        waiting = [p for p in pods if result.outcome[p.name] == PENDING]
        for p in waiting:
            assert not feasible_mask(result.state, p.request).any(), (cut, p.name)


def test_fragmentation_matches_the_tracker_at_the_end():
    full = random_trace(seed=11, pods=100, forever=0.3)
    result = run_timed(full, "fgd")
    assert result.state.live  # something still runs
    target = target_workload(full)
    tracker = FragmentationTracker(Fragmentation(target, result.state), result.state)
    frag, idle = tracker.totals()
    # Running sums of per-node changes against one final sum: equal up to float rounding.
    assert result.steps.frag_milli[-1] == pytest.approx(frag, rel=1e-12)
    assert result.steps.idle_milli[-1] == pytest.approx(idle, rel=1e-12)


def test_progress_counts_every_replayed_pod():
    seen: list[int] = []
    t = random_trace(seed=1, pods=2500)
    run_timed(t, "bestfit", progress=seen.append)
    assert sum(seen) == 2500
    assert len(seen) == 3 and all(1000 <= n < 1010 for n in seen[:2])  # reported at step ends


# ---- trace problems ---------------------------------------------------------------------------


def test_missing_creation_time_is_an_error_unless_a_fallback_is_chosen():
    t = trace([node("n1")], [pod("a", GPU, None, None), pod("b", GPU, 5, 10)])
    with pytest.raises(ValueError, match="inflation"):
        run_timed(t, "bestfit")
    start = run_timed(t, "bestfit", on_missing_creation="start")
    assert start.start_time["a"] == 0.0 and start.outcome["b"] == WITHDRAWN
    skip = run_timed(t, "bestfit", on_missing_creation="skip")
    assert skip.skipped_no_time == 1 and skip.outcome == {"b": PLACED}


def test_zero_duration_pods_are_skipped_and_bad_times_rejected():
    t = trace([node("n1")], [pod("a", GPU, 5, 5), pod("b", GPU, 5, 10)])
    result = run_timed(t, "bestfit")
    assert result.zero_duration == 1 and result.outcome == {"b": PLACED}
    with pytest.raises(ValueError, match="before created"):
        run_timed(trace([node("n1")], [pod("a", GPU, 5, 4)]), "bestfit")
    with pytest.raises(ValueError, match="max_wait"):
        run_timed(t, "bestfit", max_wait=-1)


# ---- the real trace ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openb_default() -> Trace:
    from tessellate.simulator.traces.openb import load_trace

    return load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_default.csv")


@pytest.mark.parametrize("policy", ["fgd", "bestfit"])
def test_openb_default_trace(openb_default, policy):
    result = run_timed(openb_default, policy, samples=200)
    steps = result.steps
    assert result.total_gpus == openb_default.total_gpus
    assert np.all(steps.allocated_milli <= steps.total_milli)
    assert np.all(steps.allocated_milli >= 0)
    ratio = steps.alloc_ratio
    assert 0 < ratio.max() <= 1
    s = result.summary()
    assert 0 < s["alloc_ratio_mean"] <= 1
    assert 0 <= s["frag_ratio_mean"] <= 1
    with_duration = sum(1 for p in openb_default.pods if p.deletion_time > p.creation_time)
    assert len(result.outcome) == with_duration == len(openb_default.pods) - result.zero_duration
    # every pod has a deletion time: all departures processed, nothing left behind
    assert result.departures == result.placed
    assert result.pending_at_end == 0
    assert result.placed + result.withdrawn == with_duration
    assert_empty_like_new(result.state)
    assert len(result.grid) == 200
    assert result.grid.time[0] == steps.time[0] and result.grid.time[-1] == steps.time[-1]
