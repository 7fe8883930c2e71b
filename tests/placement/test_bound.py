"""The proven bracket (placement.bound): upper >= OPT >= feasible packing, on small random
instances against an exact disaggregated CP-SAT model, and on shared openb traces against
what FGD and BestFit reach."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model
from paths import OPENB
from tessellate.placement import ClusterState, NodeSpec, Request
from tessellate.placement.bound import solve_bound
from tessellate.placement.bound.instance import build_instance
from tessellate.placement.timeslice import replica_request, slice_milli


def exact_optimum(nodes: list[NodeSpec], requests: list[Request]) -> int:
    """OPT by CP-SAT, one variable per pod, node and GPU (independent of the bound's model)."""
    model = cp_model.CpModel()
    objective = []
    on_gpu: dict[tuple[int, int], list[tuple[object, int, bool]]] = {}
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
                on_gpu.setdefault((j, g), []).append((y, placed.gpu_milli, placed.is_fraction))
            objective.append(placed.total_gpu_milli * x)
        if places:
            model.add(sum(places) <= 1)
    for j, items in per_node.items():
        model.add(sum(r.cpu_milli * x for x, r in items) <= nodes[j].cpu_milli)
        model.add(sum(r.memory_mib * x for x, r in items) <= nodes[j].memory_mib)
    for items in on_gpu.values():
        whole = sum(y for y, _, frac in items if not frac)
        model.add(whole <= 1)
        model.add(sum(m * y for y, m, frac in items if frac) <= 1000 - 1000 * whole)
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
        spec = dict(
            cpu_milli=draw(st.sampled_from([4000, 8000, 16000])),
            memory_mib=draw(st.sampled_from([8192, 16384])),
            gpu_count=gpus,
            gpu_model=draw(st.sampled_from(["A", "B"])),
            gpu_replicas=draw(st.sampled_from([1, 1, 1, 2])),
        )
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
            requests.append(Request(cpu, mem, gpu_count=1, gpu_milli=milli, gpu_models=models))
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
    for policy in ("fgd", "bestfit"):
        (held,) = policy_at(trace, policy, 42, 1.3, [point.arrivals])
        assert point.result.upper_milli >= held, policy
