"""The aggregate LP: an upper bound on OPT that packs fractions GPU by GPU exactly (as patterns)
but pools CPU, memory and pod count over all nodes of a type. Fast (well under a second on
openb) and, where fractions fragment GPUs, far below the cluster's capacity.

Variables: y_ts >= 0 pods of shape s on nodes of type t; z_tq >= 0 GPUs of type t holding
*pattern* q (a multiset of fraction classes that fits one GPU: milli-GPU <= 1000, GPU memory,
sharer limit). Rows per type t: sum_s cpu_s y_ts <= N_t C_t, the same for memory and pods;
GPUs: sum_whole gpus_s y_ts + sum_q z_tq <= N_t G_t; per fraction class k:
sum_{s in k} y_ts <= sum_q n_qk z_tq; with MIG also sum 1000 gpus_s y_ts + load_q z_tq +
w_s y_ts(MIG) <= 1000 N_t G_t. Per shape: sum_t y_ts <= d_s. Objective: sum w_ts y_ts.

Why it is >= OPT: in an optimal packing let y_ts count the pods of shape s on type t and
z_tq the GPUs of type t whose fraction pods form pattern q. A GPU never holds fractions and a
whole-GPU pod at once, so whole GPUs plus fraction GPUs are at most N_t G_t; every other row
is a sum of per-node (or per-GPU) limits. So the packing is a point of this LP of value OPT.

Patterns are generated (pricing is an exact knapsack DP over one GPU), and the bound reported
is not the LP's value but a dual certificate, valid however early the loop stops and whatever
GLOP's rounding: for any row prices u >= 0,
    OPT <= u.b + sum_{(t,s)} ub_ts (w_ts - u.A_ts)^+ + sum_t N_t G_t (max_q rc_tq)^+,
where ub_ts bounds y_ts and max_q rc_tq is the best pattern's reduced cost, found exactly by
the DP (or bounded from above by a DP that drops GPU memory, when that DP would be too big).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ortools.linear_solver import pywraplp
from tessellate.placement.bound.instance import Instance
from tessellate.placement.model import MILLI_PER_GPU

CPU_UNIT = 1000.0
"""Rows are scaled (cores, GiB, GPUs) so GLOP sees numbers near 1; the certificate is exact
in whatever units the rows are in."""
MEM_UNIT = 1024.0
EPS = 1e-9
MAX_STATES = 200_000
"""Above this many DP states the pattern DP drops GPU memory (a relaxation)."""


@dataclass(frozen=True)
class AggregateBound:
    upper: float
    """Proven >= OPT (milli-GPU)."""
    lp: float
    """The LP's value at the end (milli-GPU): equal to the bound when `optimal`."""
    optimal: bool
    passes: int
    patterns: int
    seconds: float
    prices: tuple[float, ...]
    """Per shape, its demand row's price (milli-GPU per pod) at the best certificate: a good
    centre for the configuration LP's dual smoothing."""
    gpu_patterns: tuple[tuple[dict[tuple[int, int], int], ...], ...]
    """Per node type, the patterns generated that really fit one GPU, as (milli-GPU, GPU
    memory) -> pods: the ones an optimal packing is likely to use (for `pricing.price_patterns`)."""


@dataclass(frozen=True)
class _Class:
    milli: int
    memory: int


class _TypeRows:
    """One node type's rows and fraction classes."""

    def __init__(self, solver: pywraplp.Solver, instance: Instance, t: int):
        inf = solver.infinity()
        spec = instance.types[t].spec
        n = instance.types[t].count
        self.t, self.spec, self.count = t, spec, n
        self.cpu = solver.Constraint(-inf, n * spec.cpu_milli / CPU_UNIT)
        self.mem = solver.Constraint(-inf, n * spec.memory_mib / MEM_UNIT)
        self.pods = solver.Constraint(-inf, float(n * spec.max_pods))
        self.gpus = solver.Constraint(-inf, float(n * spec.gpu_count))
        fits = {s: instance.fits[(t, s)] for s in instance.shapes_on(t)}
        self.has_mig = any(f.kind == "mig" for f in fits.values())
        self.gpu_milli = solver.Constraint(-inf, float(n * spec.gpu_count)) if self.has_mig else None
        self.classes: list[_Class] = sorted(
            {_Class(f.milli, f.gpu_memory_mib) for f in fits.values() if f.kind == "fraction"},
            key=lambda c: (c.milli, c.memory),
        )
        self.links = {c: solver.Constraint(-inf, 0.0) for c in self.classes}
        self.seen: set[tuple[int, ...]] = set()

    def pattern(self, key: tuple[int, ...]) -> dict[tuple[int, int], int]:
        return {(c.milli, c.memory): n for n, c in zip(key, self.classes, strict=True) if n}

    def fits(self, pattern: dict[tuple[int, int], int]) -> bool:
        """Whether `pattern` fits one GPU for real (the DP may have dropped GPU memory)."""
        spec = self.spec
        if sum(m * n for (m, _), n in pattern.items()) > MILLI_PER_GPU:
            return False
        if spec.gpu_memory_mib and sum(g * n for (_, g), n in pattern.items()) > spec.gpu_memory_mib:
            return False
        return not spec.max_sharers or sum(pattern.values()) <= spec.max_sharers


def aggregate_bound(instance: Instance, deadline: float) -> AggregateBound:
    """Generate patterns until none improves or `deadline` (perf_counter) passes."""
    start = time.perf_counter()
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:
        raise RuntimeError("OR-Tools has no GLOP solver here; reinstall ortools")
    inf = solver.infinity()
    rows = [_TypeRows(solver, instance, t) for t in range(len(instance.types))]
    demand = [solver.Constraint(-inf, float(s.demand)) for s in instance.shapes]
    objective = solver.Objective()
    objective.SetMaximization()
    for (t, s), fit in instance.fits.items():
        r, request = rows[t], instance.shapes[s].request
        y = solver.NumVar(0.0, inf, f"y{t}_{s}")
        objective.SetCoefficient(y, fit.weight / MILLI_PER_GPU)
        r.cpu.SetCoefficient(y, request.cpu_milli / CPU_UNIT)
        r.mem.SetCoefficient(y, request.memory_mib / MEM_UNIT)
        r.pods.SetCoefficient(y, 1.0)
        demand[s].SetCoefficient(y, 1.0)
        if fit.kind == "whole":
            r.gpus.SetCoefficient(y, float(fit.gpus))
            if r.gpu_milli is not None:
                r.gpu_milli.SetCoefficient(y, float(fit.gpus))
        elif fit.kind == "fraction":
            r.links[_Class(fit.milli, fit.gpu_memory_mib)].SetCoefficient(y, 1.0)
        else:
            r.gpu_milli.SetCoefficient(y, fit.weight / MILLI_PER_GPU)
    best, lp, passes, patterns, optimal = math.inf, 0.0, 0, 0, False
    prices = (0.0,) * len(instance.shapes)
    while True:
        if solver.Solve() != pywraplp.Solver.OPTIMAL:
            break
        passes += 1
        lp = objective.Value() * MILLI_PER_GPU
        duals = _duals(rows, demand)
        certificate, new = _certificate(instance, rows, demand, duals)
        if certificate < best:
            best = certificate
            prices = tuple(duals[row.index()] * MILLI_PER_GPU for row in demand)
        if not new:
            optimal = True
            break
        added = 0
        for r, pattern in new:
            key = tuple(pattern)
            if key in r.seen:
                continue
            r.seen.add(key)
            z = solver.NumVar(0.0, inf, f"z{r.t}_{len(r.seen)}")
            r.gpus.SetCoefficient(z, 1.0)
            if r.gpu_milli is not None:
                load = sum(n * c.milli for n, c in zip(pattern, r.classes, strict=True))
                r.gpu_milli.SetCoefficient(z, load / MILLI_PER_GPU)
            for n, c in zip(pattern, r.classes, strict=True):
                if n:
                    r.links[c].SetCoefficient(z, -float(n))
            added += 1
        patterns += added
        if not added or time.perf_counter() > deadline:
            break
    if not math.isfinite(best):  # GLOP failed at once: the trivial bound
        best = float(min(instance.capacity_milli, instance.demand_milli))
    fitting = tuple(tuple(p for p in (r.pattern(key) for key in r.seen) if r.fits(p)) for r in rows)
    return AggregateBound(best, lp, optimal, passes, patterns, time.perf_counter() - start, prices, fitting)


def _duals(rows: list[_TypeRows], demand: list[pywraplp.Constraint]) -> dict[int, float]:
    """Every row's price, clipped at 0 (any prices >= 0 give a valid certificate)."""
    out: dict[int, float] = {}
    for r in rows:
        for row in (r.cpu, r.mem, r.pods, r.gpus, r.gpu_milli, *r.links.values()):
            if row is not None:
                out[row.index()] = max(0.0, row.dual_value())
    for row in demand:
        out[row.index()] = max(0.0, row.dual_value())
    return out


def _certificate(instance, rows, demand, u) -> tuple[float, list[tuple[_TypeRows, list[int]]]]:
    """The dual bound at prices `u` (milli-GPU) and the improving patterns found."""
    terms: list[float] = []
    for r in rows:
        for row in (r.cpu, r.mem, r.pods, r.gpus, r.gpu_milli, *r.links.values()):
            if row is not None:
                terms.append(u[row.index()] * row.ub())
    for row in demand:
        terms.append(u[row.index()] * row.ub())
    for (t, s), fit in instance.fits.items():
        r, request = rows[t], instance.shapes[s].request
        price = (
            u[r.cpu.index()] * request.cpu_milli / CPU_UNIT
            + u[r.mem.index()] * request.memory_mib / MEM_UNIT
            + u[r.pods.index()]
            + u[demand[s].index()]
        )
        if fit.kind == "whole":
            price += u[r.gpus.index()] * fit.gpus
            if r.gpu_milli is not None:
                price += u[r.gpu_milli.index()] * fit.gpus
        elif fit.kind == "fraction":
            price += u[r.links[_Class(fit.milli, fit.gpu_memory_mib)].index()]
        else:
            price += u[r.gpu_milli.index()] * fit.weight / MILLI_PER_GPU
        reduced = fit.weight / MILLI_PER_GPU - price
        if reduced > 0:
            terms.append(reduced * _most(instance, t, s))
    new = []
    for r in rows:
        if not r.classes:
            continue
        per_gpu = u[r.gpu_milli.index()] if r.gpu_milli is not None else 0.0
        values = [u[r.links[c].index()] - per_gpu * c.milli / MILLI_PER_GPU for c in r.classes]
        value, pattern = best_pattern(r.spec, r.classes, values)
        reduced = value - u[r.gpus.index()]
        if reduced > 0:
            terms.append(reduced * r.count * r.spec.gpu_count)
            if reduced > 1e-7:
                new.append((r, pattern))
    return math.fsum(terms) * MILLI_PER_GPU, new


def _most(instance: Instance, t: int, s: int) -> int:
    """An upper bound on y_ts: the shape's demand, and what N_t nodes could hold by CPU/memory."""
    spec, request = instance.types[t].spec, instance.shapes[s].request
    most = instance.shapes[s].demand
    per_node = spec.max_pods
    if request.cpu_milli:
        per_node = min(per_node, spec.cpu_milli // request.cpu_milli)
    if request.memory_mib:
        per_node = min(per_node, spec.memory_mib // request.memory_mib)
    return min(most, per_node * instance.types[t].count)


def best_pattern(spec, classes: list[_Class], values: list[float]) -> tuple[float, list[int]]:
    """The most valuable multiset of fraction classes one GPU of `spec` can hold, by DP over
    (milli-GPU, GPU memory, pod count) states; GPU memory is dropped (an upper bound, and the
    pattern may then overfill GPU memory, which only enlarges the LP) if the DP grows too big.
    Returns (value, count per class)."""
    items = [(i, c) for i, c in enumerate(classes) if values[i] > EPS]
    if not items:
        return 0.0, [0] * len(classes)
    for with_memory in (True, False):
        result = _dp(spec, classes, values, items, with_memory and bool(spec.gpu_memory_mib))
        if result is not None:
            return result
    raise AssertionError("the DP without GPU memory is bounded")  # pragma: no cover


def _dp(spec, classes, values, items, with_memory: bool) -> tuple[float, list[int]] | None:
    sharers = spec.max_sharers or MILLI_PER_GPU
    memory_cap = spec.gpu_memory_mib if with_memory else 0
    # state (milli, memory, pods) -> (value, counts); items one class at a time, bounded copies
    states: dict[tuple[int, int, int], tuple[float, tuple[int, ...]]] = {(0, 0, 0): (0.0, ())}
    for i, c in items:
        grown: dict[tuple[int, int, int], tuple[float, tuple[int, ...]]] = {}
        for (milli, memory, pods), (value, counts) in states.items():
            k = 0
            while True:
                key = (milli + k * c.milli, memory + k * c.memory if with_memory else 0, pods + k)
                if key[0] > MILLI_PER_GPU or key[2] > sharers or (memory_cap and key[1] > memory_cap):
                    break
                v = value + k * values[i]
                old = grown.get(key)
                if old is None or v > old[0]:
                    grown[key] = (v, (*counts, k))
                k += 1
        states = _pareto(grown) if not with_memory and spec.max_sharers == 0 else grown
        if with_memory and len(states) > MAX_STATES:
            return None  # without GPU memory the states are at most (1001 milli) x (sharers + 1)
    value, counts = max(states.values(), key=lambda vc: vc[0])
    pattern = [0] * len(classes)
    for (i, _), k in zip(items, counts, strict=True):
        pattern[i] = k
    return value, pattern


def _pareto(states):
    """With milli-GPU the only limit, a state is dominated by any with less load and more value."""
    out = {}
    best = -1.0
    for key in sorted(states):
        value = states[key][0]
        if value > best + EPS:
            out[key] = states[key]
            best = value
    return out
