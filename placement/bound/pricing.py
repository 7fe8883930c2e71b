"""Pricing: the most profitable set of pods one node of a type can hold at once (CP-SAT).

Given a profit per shape (its weight minus the master's dual price), find counts of each
shape that fit on one empty node: CPU, memory and pod count summed; whole-GPU pods on GPUs of
their own; fractions packed GPU by GPU (milli-GPU, GPU memory and sharer limit per GPU, no
GPU shared with a whole-GPU pod); MIG instances against the node's GPU capacity (relaxed).
The model is exact for everything but MIG, so its optimum is the best configuration.

What the caller may rely on is `Priced.bound`: CP-SAT's proven bound on the objective with
every profit rounded *up* to 1/`SCALE`, so it is >= the true best profit even when the solver
stopped at its time limit; it is never above the node's whole GPU capacity, which bounds any
profit (profits never exceed weights, and a node holds at most 1000 milli-GPU per GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ortools.sat.python import cp_model
from tessellate.placement.bound.instance import Instance
from tessellate.placement.model import MILLI_PER_GPU

SCALE = 1000
"""Profits are milli-GPU; CP-SAT needs integers, so they become thousandths of a milli-GPU."""

EPS = 1e-7


@dataclass(frozen=True, slots=True)
class Column:
    """One node's pods: per pod slot its shape and the GPU indices it holds (MIG: none)."""

    type_index: int
    slots: tuple[tuple[int, tuple[int, ...]], ...]
    value: int
    """Milli-GPU the slots hold on this type."""

    @property
    def counts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for shape, _ in self.slots:
            out[shape] = out.get(shape, 0) + 1
        return out

    @property
    def key(self) -> tuple:
        return (self.type_index, tuple(sorted(self.counts.items())))


@dataclass(frozen=True, slots=True)
class Priced:
    bound: float
    """Proven upper bound on the best profit one node of the type can make (>= 0)."""
    column: Column | None
    """The best configuration found (None: none with positive profit)."""
    profit: float
    optimal: bool


def price(
    instance: Instance,
    t: int,
    profits: dict[int, float],
    time_limit: float,
    workers: int = 1,
) -> Priced:
    """Best configuration of node type `t` for `profits` (shape -> profit per pod)."""
    node_type = instance.types[t]
    spec = node_type.spec
    gpus = spec.gpu_count
    cap = float(gpus * MILLI_PER_GPU)
    shapes = [s for s in instance.shapes_on(t) if profits.get(s, 0.0) > EPS]
    if not shapes or time_limit <= 0:
        return Priced(0.0 if not shapes else cap, None, 0.0, not shapes)
    fits = {s: instance.fits[(t, s)] for s in shapes}
    model = cp_model.CpModel()
    count = {s: model.new_int_var(0, _upper(instance, t, s), f"a{s}") for s in shapes}
    req = {s: instance.shapes[s].request for s in shapes}
    model.add(sum(req[s].cpu_milli * count[s] for s in shapes) <= spec.cpu_milli)
    model.add(sum(req[s].memory_mib * count[s] for s in shapes) <= spec.memory_mib)
    model.add(sum(count.values()) <= spec.max_pods)
    whole = [s for s in shapes if fits[s].kind == "whole"]
    migs = [s for s in shapes if fits[s].kind == "mig"]
    groups: dict[tuple[int, int], list[int]] = {}
    for s in shapes:
        if fits[s].kind == "fraction":
            groups.setdefault((fits[s].milli, fits[s].gpu_memory_mib), []).append(s)
    used_whole = sum(fits[s].gpus * count[s] for s in whole)
    per_gpu: dict[tuple[int, int], list[cp_model.IntVar]] = {}
    loads: list[cp_model.LinearExpr] = []
    taken: list[cp_model.IntVar] = []
    if groups:
        per_gpu, loads, taken = _fractions(model, spec, groups, count, gpus, bool(whole))
        if whole:
            model.add(sum(taken) == used_whole)
    elif whole:
        model.add(used_whole <= gpus)
    if migs:
        mig_milli = sum(fits[s].weight * count[s] for s in migs)
        model.add(MILLI_PER_GPU * used_whole + sum(loads) + mig_milli <= gpus * MILLI_PER_GPU)
    coef = {s: math.ceil(profits[s] * SCALE * (1 + 1e-12) + 1e-9) for s in shapes}
    model.maximize(sum(coef[s] * count[s] for s in shapes))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.num_workers = workers
    status = solver.solve(model)
    optimal = status == cp_model.OPTIMAL
    bound = cap
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.UNKNOWN):
        bound = min(cap, max(0.0, solver.best_objective_bound / SCALE))
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Priced(bound, None, 0.0, False)
    values = {s: solver.value(count[s]) for s in shapes}
    profit = sum(values[s] * profits[s] for s in shapes)
    if not any(values.values()):
        return Priced(bound, None, 0.0, optimal)
    taken_values = [solver.value(u) for u in taken] if taken else [0] * gpus
    slots = _slots(instance, t, values, groups, per_gpu, solver, taken_values, whole, migs)
    value = sum(values[s] * fits[s].weight for s in shapes)
    return Priced(bound, Column(t, slots, value), profit, optimal)


def _upper(instance: Instance, t: int, s: int) -> int:
    """Most pods of shape `s` one node of type `t` could hold on its own."""
    spec, request, fit = instance.types[t].spec, instance.shapes[s].request, instance.fits[(t, s)]
    most = min(instance.shapes[s].demand, spec.max_pods)
    if request.cpu_milli:
        most = min(most, spec.cpu_milli // request.cpu_milli)
    if request.memory_mib:
        most = min(most, spec.memory_mib // request.memory_mib)
    if fit.kind == "whole":
        most = min(most, spec.gpu_count // fit.gpus)
    elif fit.kind == "fraction":
        per = MILLI_PER_GPU // fit.milli
        if spec.max_sharers:
            per = min(per, spec.max_sharers)
        if fit.gpu_memory_mib:
            per = min(per, spec.gpu_memory_mib // fit.gpu_memory_mib)
        most = min(most, spec.gpu_count * per)
    else:
        most = min(most, spec.gpu_count * MILLI_PER_GPU // max(1, fit.weight))
    return max(0, most)


def _fractions(model, spec, groups, count, gpus, with_whole):
    """Per GPU: how many pods of each fraction group it holds, its milli-GPU load, and (with
    whole-GPU pods about) whether it is taken whole. GPUs are identical, so solutions are
    ordered: loads non-increasing, whole GPUs last."""
    per_gpu: dict[tuple[int, int], list] = {}
    for (milli, memory), members in groups.items():
        most = MILLI_PER_GPU // milli
        if spec.max_sharers:
            most = min(most, spec.max_sharers)
        if memory:
            most = min(most, spec.gpu_memory_mib // memory)
        cells = [model.new_int_var(0, most, f"c{milli}_{memory}_{g}") for g in range(gpus)]
        model.add(sum(cells) == sum(count[s] for s in members))
        per_gpu[(milli, memory)] = cells
    taken = [model.new_bool_var(f"u{g}") for g in range(gpus)] if with_whole else []
    loads = []
    for g in range(gpus):
        load = sum(milli * cells[g] for (milli, _), cells in per_gpu.items())
        room = MILLI_PER_GPU * (1 - taken[g]) if taken else MILLI_PER_GPU
        model.add(load <= room)
        if spec.gpu_memory_mib and any(memory for _, memory in per_gpu):
            model.add(sum(memory * cells[g] for (_, memory), cells in per_gpu.items()) <= spec.gpu_memory_mib)
        if spec.max_sharers:
            model.add(sum(cells[g] for cells in per_gpu.values()) <= spec.max_sharers)
        loads.append(load)
    for g in range(gpus - 1):
        model.add(loads[g] >= loads[g + 1])
        if taken:
            model.add(taken[g] <= taken[g + 1])
    return per_gpu, loads, taken


def _slots(instance, t, values, groups, per_gpu, solver, taken, whole, migs):
    """The solution as pod slots with concrete GPU indices."""
    gpus = instance.types[t].spec.gpu_count
    slots: list[tuple[int, tuple[int, ...]]] = []
    free = [g for g in range(gpus) if taken[g]] if groups else list(range(gpus))
    for s in whole:
        k = instance.fits[(t, s)].gpus
        for _ in range(values[s]):
            slots.append((s, tuple(free[:k])))
            free = free[k:]
    for key, members in groups.items():
        places = [g for g, cell in enumerate(per_gpu[key]) for _ in range(solver.value(cell))]
        pods = [s for s in members for _ in range(values[s])]
        slots.extend((s, (g,)) for s, g in zip(pods, places, strict=True))
    for s in migs:
        slots.extend((s, ()) for _ in range(values[s]))
    return tuple(slots)
