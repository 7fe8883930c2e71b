"""The proven bracket (placement.bound): upper >= OPT >= feasible packing, on small random
instances against an exact disaggregated CP-SAT model (both upper bounds, the aggregate LP's
and the configuration LP's, on their own), and on shared openb traces against what FGD and
BestFit reach."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model
from paths import OPENB
from tessellate.placement import Assignment, ClusterState, NodeSpec, Request
from tessellate.placement.bound import aggregate, solve_bound
from tessellate.placement.bound.aggregate import _Class, aggregate_bound, best_pattern
from tessellate.placement.bound.colgen import Master, generate
from tessellate.placement.bound.instance import build_instance
from tessellate.placement.timeslice import replica_request, slice_milli


def exact_optimum(nodes: list[NodeSpec], requests: list[Request]) -> int:
    """OPT by CP-SAT, one variable per pod, node and GPU (independent of the bound's model)."""
    model = cp_model.CpModel()
    objective = []
    on_gpu: dict[tuple[int, int], list[tuple[object, int, bool, int]]] = {}
    per_node: dict[int, list[tuple[object, Request]]] = {}
    for i, r in enumerate(requests):
        if r.is_cpu_only:
            continue
        places = []
        for j, n in enumerate(nodes):
            models = {m for m in r.gpu_models if m}
            if not n.gpu_count or (models and n.gpu_model not in models):
                continue
            placed = replica_request(r, n.gpu_replicas)
            if placed is None or placed.gpu_count > n.gpu_count:
                continue
            x = model.new_bool_var(f"x{i}_{j}")
            places.append(x)
            per_node.setdefault(j, []).append((x, r))
            ys = [model.new_bool_var(f"y{i}_{j}_{g}") for g in range(n.gpu_count)]
            model.add(sum(ys) == placed.gpu_count * x)
            for g, y in enumerate(ys):
                item = (y, placed.gpu_milli, placed.is_fraction, placed.gpu_memory_mib)
                on_gpu.setdefault((j, g), []).append(item)
            objective.append(placed.total_gpu_milli * x)
        if places:
            model.add(sum(places) <= 1)
    for j, items in per_node.items():
        model.add(sum(r.cpu_milli * x for x, r in items) <= nodes[j].cpu_milli)
        model.add(sum(r.memory_mib * x for x, r in items) <= nodes[j].memory_mib)
        model.add(sum(x for x, _ in items) <= nodes[j].max_pods)
    for (j, _), items in on_gpu.items():
        whole = sum(y for y, _, frac, _ in items if not frac)
        model.add(whole <= 1)
        model.add(sum(m * y for y, m, frac, _ in items if frac) <= 1000 - 1000 * whole)
        if nodes[j].gpu_memory_mib:
            model.add(sum(mem * y for y, _, frac, mem in items if frac) <= nodes[j].gpu_memory_mib)
        if nodes[j].max_sharers:
            model.add(sum(y for y, _, frac, _ in items if frac) <= nodes[j].max_sharers)
    model.maximize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = 30
    solver.parameters.num_workers = 1
    assert solver.solve(model) == cp_model.OPTIMAL
    return round(solver.objective_value)


@st.composite
def instances(draw) -> tuple[list[NodeSpec], list[Request]]:
    nodes = []
    for t in range(draw(st.integers(1, 3))):
        gpus = draw(st.sampled_from([1, 2, 4]))
        replicas = draw(st.sampled_from([1, 1, 1, 2]))
        spec = dict(
            cpu_milli=draw(st.sampled_from([4000, 8000, 16000])),
            memory_mib=draw(st.sampled_from([8192, 16384])),
            gpu_count=gpus,
            gpu_model=draw(st.sampled_from(["A", "B"])),
            gpu_replicas=replicas,
            max_pods=draw(st.sampled_from([1001, 1001, 2, 3])),
        )
        if replicas == 1 and draw(st.booleans()):  # per-GPU limits on fractions
            spec["gpu_memory_mib"] = draw(st.sampled_from([0, 8000, 16000]))
            spec["max_sharers"] = draw(st.sampled_from([0, 2, 3]))
        for c in range(draw(st.integers(1, 2))):
            nodes.append(NodeSpec(name=f"n{t}-{c}", **spec))
    requests = []
    for _ in range(draw(st.integers(1, 9))):
        kind = draw(st.sampled_from(["whole", "fraction", "fraction", "cpu"]))
        cpu = draw(st.sampled_from([1000, 2000, 4000, 6000]))
        mem = draw(st.sampled_from([1024, 4096, 8192]))
        models = draw(st.sampled_from([(), (), ("A",), ("B",), ("A", "B")]))
        if kind == "cpu":
            requests.append(Request(cpu_milli=cpu, memory_mib=mem))
        elif kind == "whole":
            count = draw(st.sampled_from([1, 1, 2, 4]))
            requests.append(Request(cpu, mem, gpu_count=count, gpu_milli=1000, gpu_models=models))
        else:
            milli = draw(st.sampled_from([250, 300, 500, 700, 800]))
            memory = draw(st.sampled_from([0, 0, 3000, 5000, 9000]))
            requests.append(
                Request(cpu, mem, gpu_count=1, gpu_milli=milli, gpu_models=models, gpu_memory_mib=memory)
            )
    return nodes, requests


def check_packing(nodes: list[NodeSpec], result) -> int:
    state = ClusterState(nodes)
    for a in result.assignments:
        state.allocate(a)  # raises if the packing over-commits anything
    return sum(a.request.total_gpu_milli for a in state.live.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_bracket_contains_the_exact_optimum(instance):
    nodes, requests = instance
    optimum = exact_optimum(nodes, requests)
    result = solve_bound(nodes, requests, time_limit=10)
    assert result.upper_milli >= optimum >= result.feasible_milli
    assert check_packing(nodes, result) == result.feasible_milli
    assert result.gap_milli >= 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_stopping_at_once_keeps_the_bound_valid(instance):
    nodes, requests = instance
    result = solve_bound(nodes, requests, time_limit=0.0)
    assert result.upper_milli >= exact_optimum(nodes, requests) >= result.feasible_milli
    assert not result.lp_optimal or result.upper_milli == result.feasible_milli


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.booleans())
def test_aggregate_bound_alone_is_above_the_exact_optimum(instance, at_once):
    nodes, requests = instance
    built = build_instance(nodes, requests)
    result = aggregate_bound(built, time.perf_counter() + (0.0 if at_once else 10.0))
    assert result.upper + 0.01 >= exact_optimum(nodes, requests)
    if result.optimal:
        assert result.upper == pytest.approx(result.lp, abs=1e-3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_colgen_bound_alone_is_above_the_exact_optimum(instance):
    nodes, requests = instance
    result = solve_bound(nodes, requests, time_limit=5)
    assert result.colgen_milli >= exact_optimum(nodes, requests)
    assert result.upper_milli == min(result.colgen_milli, result.aggregate_milli)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([100, 250, 300, 500, 700]), st.sampled_from([0, 2000, 5000])),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    st.lists(st.floats(-1.0, 3.0), min_size=4, max_size=4),
    st.sampled_from([0, 6000, 10000]),
    st.sampled_from([0, 2, 3]),
)
def test_pattern_dp_is_exact(classes, values, gpu_memory, sharers):
    spec = NodeSpec(
        "n", 8000, 8192, gpu_count=1, gpu_model="A", gpu_memory_mib=gpu_memory, max_sharers=sharers
    )
    classes = [_Class(m, g) for m, g in classes]
    values = values[: len(classes)]
    best = 0.0
    ranges = [range(1000 // c.milli + 1) for c in classes]
    for counts in itertools.product(*ranges):  # every multiset that fits one GPU
        if sum(n * c.milli for n, c in zip(counts, classes, strict=True)) > 1000:
            continue
        if gpu_memory and sum(n * c.memory for n, c in zip(counts, classes, strict=True)) > gpu_memory:
            continue
        if sharers and sum(counts) > sharers:
            continue
        best = max(best, sum(n * v for n, v in zip(counts, values, strict=True)))
    value, pattern = best_pattern(spec, classes, values)
    assert value == pytest.approx(best, abs=1e-9)
    assert sum(n * v for n, v in zip(pattern, values, strict=True)) == pytest.approx(value, abs=1e-9)


def test_pattern_dp_relaxes_gpu_memory_when_too_big(monkeypatch):
    monkeypatch.setattr(aggregate, "MAX_STATES", 1)
    spec = NodeSpec("n", 8000, 8192, gpu_count=1, gpu_model="A", gpu_memory_mib=4000)
    value, _ = best_pattern(spec, [_Class(250, 3000), _Class(500, 3000)], [1.0, 1.5])
    assert value >= 4.0 - 1e-9  # four quarters by milli-GPU alone: an upper bound on the real 1.5


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_every_generated_column_is_a_real_configuration(instance):
    """Columns of both pricings (exact and pattern-restricted) replay on one node of their type."""
    nodes, requests = instance
    built = build_instance(nodes, requests)
    agg = aggregate_bound(built, time.perf_counter() + 5)
    master = Master(built)
    start = time.perf_counter()
    generate(built, master, start + 3, 0.2, 0.0, center=list(agg.prices), patterns=agg.gpu_patterns)
    for column in master.columns:
        node_type = built.types[column.type_index]
        state = ClusterState(nodes)
        node = node_type.nodes[0]
        for k, (shape, gpus) in enumerate(column.slots):
            request = replica_request(built.shapes[shape].request, node_type.spec.gpu_replicas)
            state.allocate(Assignment(f"p{k}", node, state.names[node], request, gpus))
        assert sum(a.request.total_gpu_milli for a in state.live.values()) == column.value


def test_fragmented_fractions_lower_the_aggregate_bound():
    """Two 700-milli pods on one GPU each: the aggregate LP sees that only one fits per GPU."""
    nodes = [NodeSpec("a", 16000, 16384, gpu_count=1, gpu_model="A")]
    pods = [Request(1000, 1024, gpu_count=1, gpu_milli=700) for _ in range(2)]
    result = solve_bound(nodes, pods, time_limit=5)
    assert result.aggregate_milli == result.upper_milli == result.feasible_milli == 700


def test_cpu_per_node_is_what_the_configuration_lp_adds():
    """CPU pooled per type lets the aggregate LP place 3 pods; per node only one fits."""
    nodes = [NodeSpec(f"n{i}", 4000, 16384, gpu_count=2, gpu_model="A") for i in range(2)]
    pods = [Request(2500, 1024, gpu_count=1, gpu_milli=1000) for _ in range(3)]
    result = solve_bound(nodes, pods, time_limit=5)
    assert result.aggregate_milli == 3000
    assert result.colgen_milli == result.upper_milli == result.feasible_milli == 2000


def test_time_sliced_pod_counts_one_slice():
    nodes = [NodeSpec("s", 16000, 16384, gpu_count=1, gpu_model="A", gpu_replicas=4)]
    pods = [Request(1000, 1024, gpu_count=1, gpu_milli=1000) for _ in range(6)]
    result = solve_bound(nodes, pods, time_limit=5)
    assert result.upper_milli == result.feasible_milli == 4 * slice_milli(4)


def test_identical_nodes_and_pods_aggregate():
    nodes = [NodeSpec(f"n{i}", 8000, 8192, gpu_count=2, gpu_model="A") for i in range(5)]
    pods = [Request(1000, 512, gpu_count=1, gpu_milli=500) for _ in range(7)] + [Request(100)]
    instance = build_instance(nodes, pods)
    assert len(instance.types) == 1 and len(instance.shapes) == 1  # CPU-only pods drop out
    assert instance.shapes[0].demand == 7


TRACES_IN_CI = ("openb_pod_list_default", "openb_pod_list_gpushare40")
"""A subset: all 13 are in benchmarks/beyond_fgd.py (minutes each on two cores)."""


@pytest.mark.parametrize("workload", TRACES_IN_CI)
def test_bound_is_above_fgd_and_bestfit(workload):
    from tessellate.simulator.bound import bound_points, policy_at
    from tessellate.simulator.traces.openb import load_trace

    trace = load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / f"{workload}.csv")
    (point,) = bound_points(trace, 42, 1.3, at=(130,), time_limit=5)
    result = point.result
    for policy in ("fgd", "bestfit"):
        (held,) = policy_at(trace, policy, 42, 1.3, [point.arrivals])
        assert result.upper_milli >= held, policy
        assert result.aggregate_milli >= held and result.colgen_milli >= held, policy
    # informative: fractions fragment GPUs, so not every GPU can be held at once
    assert result.feasible_milli <= result.upper_milli < result.capacity_milli


def test_a_failed_final_solve_keeps_the_last_optimum_quietly(capfd):
    """GLOP forgets its solution when a solve fails (e.g. a time limit); the packing then starts
    from the last optimum instead of reading a missing solution (one error line per column)."""
    from ortools.linear_solver import pywraplp
    from tessellate.placement.bound.packing import columns_of, greedy_packing

    nodes = [NodeSpec(f"n{i}", 32000, 65536, gpu_count=2, gpu_model="A") for i in range(3)]
    pods = [Request(4000, 1024, gpu_count=1, gpu_milli=1000) for _ in range(4)]
    pods += [Request(2000, 1024, gpu_count=1, gpu_milli=500) for _ in range(3)]
    built = build_instance(nodes, pods)
    master = Master(built)
    first, *later = columns_of(built, greedy_packing(built))
    assert later, "the test needs a column to add after the first solve"
    master.add(first)
    assert master.solve(5.0) is not None
    before = [value for _, value in master.solution()]
    assert before[0] > 0
    for column in later:
        master.add(column)  # the model changes: GLOP's last solution is no longer readable
    master.solver.Solve = lambda: pywraplp.Solver.ABNORMAL
    assert master.solve(5.0) is None
    assert [value for _, value in master.solution()] == before + [0.0] * len(later)
    assert "No solution exists" not in capfd.readouterr().err
