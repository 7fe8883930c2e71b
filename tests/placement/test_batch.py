"""Batch placement with CP-SAT (placement/batch.py) and `sim timed --batch`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tessellate.placement import Assignment, ClusterState, NodeSpec, Request
from tessellate.placement.batch import (
    INVALID,
    SKIPPED_BOUND,
    SKIPPED_COMPLETE,
    BatchOptions,
    _BatchModel,
    place_batch,
)
from tessellate.simulator.timed import run_timed
from tessellate.simulator.trace import PodRecord, Trace

from tests.builders import cluster, frac, occupy, placer, put, whole

FAST = BatchOptions(time_limit_s=2.0)


def snapshot(state: ClusterState) -> dict[str, object]:
    """Everything `allocate`/`release` write, except the version counters."""
    arrays = {k: v.copy() for k, v in vars(state).items() if isinstance(v, np.ndarray) and k != "version"}
    return {**arrays, "live": dict(state.live)}


def assert_same(before: dict[str, object], state: ClusterState) -> None:
    after = snapshot(state)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, after[key], err_msg=key)
        else:
            assert value == after[key], key


def apply(state: ClusterState, assignments: tuple[Assignment, ...]) -> None:
    for a in assignments:
        state.allocate(a)


def half_busy_three() -> ClusterState:
    """n0 idle, n1 and n2 with GPUs 0-3 busy: 16 free GPUs, one 8-GPU hole."""
    state = cluster(*((f"n{i}", 64000, 262144, 8, "A100") for i in range(3)))
    for name in ("n1", "n2"):
        occupy(state, name, free=(0, 0, 0, 0, 1000, 1000, 1000, 1000))
    return state


FOUR_FOUR_EIGHT = [("p4a", whole(4)), ("p4b", whole(4)), ("p8", whole(8))]


def test_two_fours_and_an_eight_all_fit_as_a_batch():
    state = half_busy_three()
    before = snapshot(state)
    result = place_batch(placer(state, "fgd"), FOUR_FOUR_EIGHT, FAST)
    assert_same(before, state)
    assert (result.greedy_milli, result.greedy_pods) == (8000, 2)  # greedy splits the idle node
    assert result.improved and result.status == "OPTIMAL"
    assert result.placed_milli == 16000 and result.pending == ()
    where = {a.pod: a.node_name for a in result.assignments}
    assert where["p8"] == "n0" and {where["p4a"], where["p4b"]} == {"n1", "n2"}
    apply(state, result.assignments)
    assert state.allocated_gpu_milli == 24000


def test_nothing_to_gain_skips_the_solver():
    state = cluster(("n0", 64000, 262144, 8, "A100"), ("n1", 64000, 262144, 8, "A100"))
    result = place_batch(placer(state, "fgd"), FOUR_FOUR_EIGHT, FAST)
    assert result.status == SKIPPED_COMPLETE and not result.fallback
    assert result.placed_milli == result.greedy_milli == 16000 and result.solve_s == 0


def test_a_tie_keeps_the_greedy_answer():
    """Nine free GPUs, pods 3, 8 and 5: no answer beats greedy's 3 + 5, so greedy's stands."""
    state = cluster(("n0", 64000, 262144, 9, "A100"))
    pods = [("a", whole(3)), ("b", whole(8)), ("c", whole(5))]
    result = place_batch(placer(state, "fgd"), pods, FAST)
    assert result.fallback and result.status == "OPTIMAL" and result.solver_milli == 8000
    assert [a.pod for a in result.assignments] == ["a", "c"]
    assert result.placed_milli == result.greedy_milli == 8000


def test_greedy_at_the_capacity_bound_skips_the_solver():
    state = cluster(("n0", 64000, 262144, 8, "A100"))
    pods = [("a", whole(2)), ("b", whole(8)), ("c", whole(6))]
    result = place_batch(placer(state, "fgd"), pods, FAST)
    assert result.status == SKIPPED_BOUND and not result.fallback and result.placed_milli == 8000


def test_an_invalid_solver_answer_falls_back_to_greedy(monkeypatch):
    state = half_busy_three()
    before = snapshot(state)

    def bogus(self, solver):
        yield Assignment(pod="p8", node=1, node_name="n1", request=whole(8), gpus=tuple(range(8)))

    monkeypatch.setattr(_BatchModel, "decode", bogus)
    result = place_batch(placer(state, "fgd"), FOUR_FOUR_EIGHT, FAST)
    assert result.status == INVALID and result.fallback
    assert result.placed_milli == result.greedy_milli == 8000
    assert_same(before, state)
    apply(state, result.assignments)


def test_a_tiny_time_limit_stays_valid_and_no_worse():
    state = half_busy_three()
    pods = [(f"f{i}", frac(100 * (1 + i % 9))) for i in range(12)] + FOUR_FOUR_EIGHT
    result = place_batch(placer(state, "fgd"), pods, BatchOptions(time_limit_s=1e-6))
    assert result.placed_milli >= result.greedy_milli
    apply(state, result.assignments)


def test_fractions_share_gpus_within_memory_and_sharer_bounds():
    """Two GPUs with 16 GiB and at most two sharers each; the order traps greedy."""
    node = NodeSpec("n0", 64000, 262144, 2, "T4", gpu_memory_mib=16384, max_sharers=2)
    state = ClusterState([node])
    small = Request(1000, 0, 1, 300, gpu_memory_mib=4096)
    big = Request(1000, 0, 1, 700, gpu_memory_mib=12288)
    pods = [("s1", small), ("s2", small), ("b1", big), ("b2", big)]
    result = place_batch(placer(state, "bestfit"), pods, FAST)
    assert result.placed_milli == 2000 and result.placed_milli > result.greedy_milli
    apply(state, result.assignments)


def test_mig_and_sliced_pods_are_left_to_greedy():
    nodes = [NodeSpec("s0", 64000, 262144, 2, "T4", gpu_replicas=4), NodeSpec("w0", 64000, 262144, 2, "T4")]
    state = ClusterState(nodes)
    pods = [("one", whole(1)), ("two", whole(2)), ("f", frac(500))]
    result = place_batch(placer(state, "fgd"), pods, FAST)
    assert result.left_to_greedy == ("one",)
    apply(state, result.assignments)


# ---- properties -------------------------------------------------------------------------------

SHAPES = [whole(1), whole(2), whole(4), frac(200), frac(500), frac(700), Request(cpu_milli=3000)]


@st.composite
def scenes(draw):
    """2-4 nodes of 1-4 GPUs, partly used, and a batch of 2-7 pods."""
    n = draw(st.integers(2, 4))
    bounded = draw(st.booleans())
    nodes = []
    for i in range(n):
        gpus = draw(st.integers(1, 4))
        extra = {"gpu_memory_mib": 16384, "max_sharers": 2} if bounded else {}
        nodes.append(
            NodeSpec(f"n{i}", draw(st.sampled_from([4000, 8000, 16000])), 65536, gpus, "T4", **extra)
        )
    state = ClusterState(nodes)
    for spec in nodes:
        for g in range(spec.gpu_count):
            used = draw(st.sampled_from([0, 0, 300, 500, 1000]))
            if used == 1000:
                put(state, spec.name, whole(1, cpu=0), gpus=(g,))
            elif used:
                put(state, spec.name, frac(used, cpu=0), gpus=(g,))
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=2, max_size=7))
    pods = [(f"p{i}", r) for i, r in enumerate(shapes)]
    policy = draw(st.sampled_from(["fgd", "bestfit", "clustering", "dotprod"]))
    return state, pods, policy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_batch_is_valid_no_worse_and_leaves_the_state_alone(scene):
    state, pods, policy = scene
    before = snapshot(state)
    result = place_batch(placer(state, policy), pods, FAST)
    assert_same(before, state)
    assert result.status != INVALID  # the model says only what the core allows
    assert result.placed_milli >= result.greedy_milli
    assert result.placed_milli == sum(a.request.total_gpu_milli for a in result.assignments)
    assert sorted(result.pending + tuple(a.pod for a in result.assignments)) == sorted(p for p, _ in pods)
    if result.solver_milli is not None and result.status == "OPTIMAL":
        assert result.solver_milli >= result.greedy_milli  # greedy is a feasible hint of the model
    apply(state, result.assignments)


# ---- sim timed --batch ------------------------------------------------------------------------


def order_trap() -> Trace:
    """One 8-GPU node busy until 10; a 2-GPU pod queues before an 8-GPU one. Greedy starts
    the small one and the big one never fits before it leaves; a batch starts the big one."""
    node = NodeSpec("n0", 64000, 262144, 8, "A100")
    pods = (
        PodRecord("hold", whole(8), 0, 10),
        PodRecord("q1-small", whole(2), 1, 2000),
        PodRecord("q2-big", whole(8), 1, 1000),
    )
    return Trace("order-trap", (node,), pods)


def test_timed_batch_places_more_gpu_hours_where_order_traps_greedy():
    greedy = run_timed(order_trap(), "fgd")
    batch = run_timed(order_trap(), "fgd", batch=FAST)
    assert greedy.start_time["q1-small"] == 10 and "q2-big" not in greedy.start_time
    assert batch.start_time["q2-big"] == 10 and batch.start_time["q1-small"] == 1000
    assert batch.gpu_hours > greedy.gpu_hours
    assert batch.gpu_hours == pytest.approx((8 * 10 + 8 * 990 + 2 * 1000) / 3600)
    summary = batch.summary()
    assert summary["batch_improved"] == 1 and summary["batch_fallbacks"] == 0
    assert "batch_calls" not in greedy.summary()  # without --batch: the columns of today


def test_timed_batch_on_a_small_synthetic_trace_is_no_worse():
    from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

    trace = generate(SyntheticConfig(nodes=12, pods=300, load=3.0))
    greedy = run_timed(trace, "fgd")
    batch = run_timed(trace, "fgd", batch=BatchOptions(max_pods=8, time_limit_s=0.5))
    assert batch.summary()["batch_calls"] >= 1
    assert all(s.placed_milli >= s.greedy_milli for s in batch.batch_solves)
    assert greedy.placed + greedy.never_placed == batch.placed + batch.never_placed


def test_cli_sim_timed_batch(tmp_path: Path):
    from tessellate.cli import main

    argv = ["sim", "timed", "--synthetic-scale", "0.02", "--out", str(tmp_path), "--batch"]
    assert main([*argv, "--batch-size", "4", "--batch-time-limit", "0.1"]) == 0
    summary = (tmp_path / "summary.csv").read_text()
    assert "batch_solve_p95_s" in summary and "gpu_hours" in summary
    assert (tmp_path / "batch_solves.csv").read_text().startswith("time,where,pods,status")
