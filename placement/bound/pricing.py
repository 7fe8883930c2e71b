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
`Priced.others` are the search's earlier solutions: real configurations too, so columns.
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
    others: tuple[Column, ...] = ()
    """Earlier (worse) solutions the search passed through: more columns for the master."""


def price(
    instance: Instance,
    t: int,
    profits: dict[int, float],
    time_limit: float,
    workers: int = 1,
    keep: int = 1,
    hint: dict[int, int] | None = None,
) -> Priced:
    """Best configuration of node type `t` for `profits` (shape -> profit per pod); with
    `keep` > 1 also up to `keep` - 1 earlier solutions of the search (`Priced.others`).
    `hint` (shape -> count, e.g. the best known column's) starts the search there."""
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
    for s in shapes if hint else ():
        model.add_hint(count[s], min(hint.get(s, 0), _upper(instance, t, s)))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.num_workers = workers
    watched = [*count.values(), *(c for cells in per_gpu.values() for c in cells), *taken]
    recorder = _Recorder(watched, keep)
    status = solver.solve(model, recorder if keep > 1 else None)
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
    best = _column(instance, t, shapes, count, groups, per_gpu, taken, whole, migs, solver.value)
    others = []
    for seen in recorder.solutions[:-1]:
        value_of = lambda v, seen=seen: seen[v.index]  # noqa: E731
        column = _column(instance, t, shapes, count, groups, per_gpu, taken, whole, migs, value_of)
        if column is not None and column.key != best.key:
            others.append(column)
    return Priced(bound, best, profit, optimal, tuple(others))


class _Recorder(cp_model.CpSolverSolutionCallback):
    """Keeps the last `keep` solutions the search finds (values of the watched variables)."""

    def __init__(self, watched: list[cp_model.IntVar], keep: int):
        super().__init__()
        self.watched, self.keep = watched, keep
        self.solutions: list[dict[int, int]] = []

    def on_solution_callback(self) -> None:
        if self.keep > 1:
            self.solutions.append({v.index: self.value(v) for v in self.watched})
            del self.solutions[: -self.keep]


def _column(instance, t, shapes, count, groups, per_gpu, taken, whole, migs, value_of) -> Column | None:
    """One solution (variable values through `value_of`) as a column; None if empty."""
    fits = {s: instance.fits[(t, s)] for s in shapes}
    values = {s: value_of(count[s]) for s in shapes}
    if not any(values.values()):
        return None
    gpus = instance.types[t].spec.gpu_count
    taken_values = [value_of(u) for u in taken] if taken else [0] * gpus
    slots = _slots(instance, t, values, groups, per_gpu, value_of, taken_values, whole, migs)
    return Column(t, slots, sum(values[s] * fits[s].weight for s in shapes))


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


def _slots(instance, t, values, groups, per_gpu, value_of, taken, whole, migs):
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
        places = [g for g, cell in enumerate(per_gpu[key]) for _ in range(value_of(cell))]
        pods = [s for s in members for _ in range(values[s])]
        slots.extend((s, (g,)) for s, g in zip(pods, places, strict=True))
    for s in migs:
        slots.extend((s, ()) for _ in range(values[s]))
    return tuple(slots)


def price_patterns(
    instance: Instance,
    t: int,
    profits: dict[int, float],
    patterns: tuple[dict[tuple[int, int], int], ...],
    time_limit: float,
    workers: int = 1,
    keep: int = 1,
) -> Priced:
    """A heuristic pricing: the best configuration whose fraction GPUs each hold one of
    `patterns` ((milli-GPU, GPU memory) -> pods, each known to fit a GPU). Counting GPUs per
    pattern leaves no GPU symmetry, so CP-SAT solves this far faster than `price`; but it is
    a restriction, so its `bound` is only the node's capacity (never use it as a bound). Every
    column it returns is a real configuration. Types with MIG fits are not handled (no column)."""
    spec = instance.types[t].spec
    gpus = spec.gpu_count
    cap = float(gpus * MILLI_PER_GPU)
    shapes = [s for s in instance.shapes_on(t) if profits.get(s, 0.0) > EPS]
    fits = {s: instance.fits[(t, s)] for s in shapes}
    if not shapes or time_limit <= 0 or any(f.kind == "mig" for f in fits.values()):
        return Priced(cap, None, 0.0, False)
    model = cp_model.CpModel()
    count = {s: model.new_int_var(0, _upper(instance, t, s), f"a{s}") for s in shapes}
    req = {s: instance.shapes[s].request for s in shapes}
    model.add(sum(req[s].cpu_milli * count[s] for s in shapes) <= spec.cpu_milli)
    model.add(sum(req[s].memory_mib * count[s] for s in shapes) <= spec.memory_mib)
    model.add(sum(count.values()) <= spec.max_pods)
    uses = [model.new_int_var(0, gpus, f"z{q}") for q in range(len(patterns))]
    whole = [s for s in shapes if fits[s].kind == "whole"]
    model.add(sum(fits[s].gpus * count[s] for s in whole) + sum(uses) <= gpus)
    classes: dict[tuple[int, int], list[int]] = {}
    for s in shapes:
        if fits[s].kind == "fraction":
            classes.setdefault((fits[s].milli, fits[s].gpu_memory_mib), []).append(s)
    for key, members in classes.items():
        slots = [p.get(key, 0) * z for p, z in zip(patterns, uses, strict=True) if p.get(key, 0)]
        model.add(sum(count[s] for s in members) <= sum(slots))
    coef = {s: math.ceil(profits[s] * SCALE * (1 + 1e-12) + 1e-9) for s in shapes}
    model.maximize(sum(coef[s] * count[s] for s in shapes))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.num_workers = workers
    recorder = _Recorder([*count.values(), *uses], keep)
    status = solver.solve(model, recorder if keep > 1 else None)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Priced(cap, None, 0.0, False)
    final = {v.index: solver.value(v) for v in (*count.values(), *uses)}
    best = _pattern_column(instance, t, shapes, classes, patterns, count, uses, final)
    if best is None:
        return Priced(cap, None, 0.0, False)
    others: dict[tuple, Column] = {}
    for values in recorder.solutions[:-1]:
        column = _pattern_column(instance, t, shapes, classes, patterns, count, uses, values)
        if column is not None and column.key != best.key:
            others.setdefault(column.key, column)
    profit = sum(n * profits[s] for s, n in best.counts.items())
    return Priced(cap, best, profit, False, tuple(others.values()))


def _pattern_column(instance, t, shapes, classes, patterns, count, uses, values) -> Column | None:
    """Whole pods on the first GPUs, then each used pattern on GPUs of its own, its slots
    filled class by class with the chosen fraction pods."""
    fits = {s: instance.fits[(t, s)] for s in shapes}
    n = {s: values[count[s].index] for s in shapes}
    if not any(n.values()):
        return None
    slots: list[tuple[int, tuple[int, ...]]] = []
    g = 0
    for s in shapes:
        if fits[s].kind == "whole":
            for _ in range(n[s]):
                slots.append((s, tuple(range(g, g + fits[s].gpus))))
                g += fits[s].gpus
    places: dict[tuple[int, int], list[int]] = {key: [] for key in classes}
    for pattern, z in zip(patterns, uses, strict=True):
        for _ in range(values[z.index]):
            for key, k in pattern.items():
                if key in places:
                    places[key].extend([g] * k)
            g += 1
    for key, members in classes.items():
        pods = [s for s in members for _ in range(n[s])]
        slots.extend((s, (gpu,)) for s, gpu in zip(pods, places[key], strict=False))
    return Column(t, tuple(slots), sum(n[s] * fits[s].weight for s in shapes))
