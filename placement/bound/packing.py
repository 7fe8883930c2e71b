"""Feasible offline packings: real per-node, per-GPU assignments, each accepted by
`ClusterState.allocate`, so what they hold is a lower bound on the optimum.

Three are built and the best kept: the master's columns chosen by an integer program
(price-and-branch: CP-SAT picks whole copies of each configuration, at most N_t per type and
d_s pods per shape), the master LP's configurations rounded down, each then filled greedily
(each copy a real node of its type with the pricing's GPU layout), and a plain greedy
(largest GPU demand first, best fit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ortools.sat.python import cp_model
from tessellate.placement.bound.instance import Instance
from tessellate.placement.bound.pricing import Column
from tessellate.placement.cycle import Placer
from tessellate.placement.model import Assignment, Request
from tessellate.placement.policies import PolicyContext, create_policy
from tessellate.placement.rng import NumpyInts
from tessellate.placement.state import ClusterState, OverCommitError
from tessellate.placement.timeslice import replica_request


def pod_name(i: int) -> str:
    return f"pod-{i}"


def held_milli(state: ClusterState) -> int:
    """Milli-GPU the live pods hold, as the simulator counts it (a slice on a sliced GPU)."""
    return sum(a.request.total_gpu_milli for a in state.live.values())


def greedy_fill(instance: Instance, state: ClusterState, pods: Iterable[int]) -> None:
    """Place `pods` (largest GPU demand first) with best fit wherever they still fit."""
    placer = Placer(state, create_policy("bestfit", PolicyContext(rng=NumpyInts(0))))
    requests = instance.requests
    order = sorted(pods, key=lambda i: (-requests[i].total_gpu_milli, -requests[i].cpu_milli, i))
    for i in order:
        decision = placer.place(pod_name(i), requests[i])
        if isinstance(decision, Assignment):
            state.allocate(decision)


def gpu_pods(instance: Instance) -> list[int]:
    return [p for shape in instance.shapes for p in shape.pods]


def greedy_packing(instance: Instance) -> ClusterState:
    state = ClusterState(instance.nodes)
    greedy_fill(instance, state, gpu_pods(instance))
    return state


def rounded_packing(instance: Instance, solution: Sequence[tuple[Column, float]]) -> tuple[ClusterState, int]:
    """Floor of each configuration's LP count, on real nodes, then a greedy fill of the rest."""
    return packing_of(instance, [(column, int(x + 1e-6)) for column, x in solution])


def integer_packing(
    instance: Instance,
    solution: Sequence[tuple[Column, float]],
    time_limit: float,
    workers: int = 1,
) -> tuple[ClusterState, int]:
    """Whole copies of the master's columns chosen by CP-SAT (hinted with the LP's floor), on
    real nodes, then a greedy fill of the rest. Any answer CP-SAT returns is feasible for the
    column rows; the replay through `allocate` checks it again."""
    columns = [column for column, _ in solution]
    if not columns or time_limit <= 0:
        return rounded_packing(instance, solution)
    model = cp_model.CpModel()
    copies = []
    for i, (column, x) in enumerate(solution):
        var = model.new_int_var(0, instance.types[column.type_index].count, f"x{i}")
        model.add_hint(var, int(x + 1e-6))
        copies.append(var)
    for t, node_type in enumerate(instance.types):
        mine = [v for v, c in zip(copies, columns, strict=True) if c.type_index == t]
        if mine:
            model.add(sum(mine) <= node_type.count)
    uses: dict[int, list] = {}
    for v, c in zip(copies, columns, strict=True):
        for shape, n in c.counts.items():
            uses.setdefault(shape, []).append(n * v)
    for shape, terms in uses.items():
        model.add(sum(terms) <= instance.shapes[shape].demand)
    model.maximize(sum(c.value * v for v, c in zip(copies, columns, strict=True)))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return rounded_packing(instance, solution)
    return packing_of(instance, [(c, solver.value(v)) for c, v in zip(columns, copies, strict=True)])


def packing_of(instance: Instance, chosen: Sequence[tuple[Column, int]]) -> tuple[ClusterState, int]:
    """`chosen` copies of each configuration on real nodes, then a greedy fill of the rest.

    Returns the state and how many slots `allocate` refused (0 unless the pricing's model and
    the checks disagree; a refused pod is left to the greedy fill)."""
    state = ClusterState(instance.nodes)
    pools = {s: list(reversed(shape.pods)) for s, shape in enumerate(instance.shapes)}
    next_node = [0] * len(instance.types)
    refused = 0
    for column, x in sorted(chosen, key=lambda cx: -cx[0].value):
        node_type = instance.types[column.type_index]
        copies = min(x, node_type.count - next_node[column.type_index])
        for _ in range(max(0, copies)):
            node = node_type.nodes[next_node[column.type_index]]
            next_node[column.type_index] += 1
            for shape, gpus in column.slots:
                if instance.fits[(column.type_index, shape)].kind == "mig" or not pools[shape]:
                    continue  # MIG instances need slot positions: the greedy fill places them
                pod = pools[shape].pop()
                request = _as_placed(instance.requests[pod], node_type.spec.gpu_replicas)
                try:
                    state.allocate(Assignment(pod_name(pod), node, state.names[node], request, gpus))
                except OverCommitError:
                    pools[shape].append(pod)
                    refused += 1
    greedy_fill(instance, state, [p for pool in pools.values() for p in pool])
    return state, refused


def _as_placed(request: Request, replicas: int) -> Request:
    translated = replica_request(request, replicas)
    assert translated is not None, "a fit on a time-sliced node is a one-GPU pod"
    return translated


def columns_of(instance: Instance, state: ClusterState) -> list[Column]:
    """Each used node's pods as a configuration of its type (seeds the master)."""
    type_of = {node: t for t, node_type in enumerate(instance.types) for node in node_type.nodes}
    shape_of = {pod: s for s, shape in enumerate(instance.shapes) for pod in shape.pods}
    by_node: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    value: dict[int, int] = {}
    for a in state.live.values():
        pod = int(a.pod.removeprefix("pod-"))
        by_node.setdefault(a.node, []).append((shape_of[pod], a.gpus))
        value[a.node] = value.get(a.node, 0) + a.request.total_gpu_milli
    seen: dict[tuple, Column] = {}
    for node, slots in by_node.items():
        column = Column(type_of[node], tuple(slots), value[node])
        seen.setdefault(column.key, column)
    return list(seen.values())


def verify(instance: Instance, assignments: Sequence[Assignment]) -> int:
    """Apply `assignments` to a fresh state (raises OverCommitError if any is refused) and
    return the milli-GPU they hold."""
    state = ClusterState(instance.nodes)
    for a in assignments:
        state.allocate(a)
    return held_milli(state)
