"""Column generation for the configuration LP, with a Lagrangian bound valid at every step.

Master (GLOP): choose x_c >= 0 copies of each known configuration c (a set of pods one node of
type t(c) can hold) to maximise sum_c value(c) x_c, with sum_{c of t} x_c <= N_t nodes per
type and sum_c a_sc x_c <= d_s pods per shape. Pricing (`placement.bound.pricing`) finds, per
type, the configuration of best profit sum_s a_s (w_st - mu_s) at the master's duals mu.

Why the bound is >= OPT, for any mu >= 0 and however early the loop stops: take an optimal
packing. Each node holds a configuration of its type, so
  OPT = sum_nodes sum_pods w = sum_nodes sum_pods (w - mu) + sum_nodes sum_pods mu
      <= sum_t N_t P_t(mu) + sum_s d_s mu_s          (= L(mu)),
because each node's term is at most P_t(mu), the best profit on its type (>= 0: the empty
node), and at most d_s pods of shape s are placed while mu_s >= 0. Any upper bound on P_t(mu)
keeps this valid, so each pass uses the pricing's *proven* bound, and the node's GPU capacity
for a type it had no time to price. The best L(mu) seen is kept; it meets the master's value
when no column improves (the LP optimum, which is itself >= OPT).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ortools.linear_solver import pywraplp
from tessellate.placement.bound.instance import Instance
from tessellate.placement.bound.pricing import EPS, Column, price
from tessellate.placement.bound.relax import NodeRelaxation
from tessellate.placement.model import MILLI_PER_GPU


class Master:
    """The restricted master LP over the columns found so far."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        if self.solver is None:
            raise RuntimeError("OR-Tools has no GLOP solver here; reinstall ortools")
        inf = self.solver.infinity()
        self.type_rows = [self.solver.Constraint(-inf, t.count) for t in instance.types]
        self.shape_rows = [self.solver.Constraint(-inf, s.demand) for s in instance.shapes]
        self.objective = self.solver.Objective()
        self.objective.SetMaximization()
        self.columns: list[Column] = []
        self.vars: list[pywraplp.Variable] = []
        self.keys: set[tuple] = set()

    def add(self, column: Column) -> bool:
        if column.key in self.keys or not column.slots:
            return False
        self.keys.add(column.key)
        var = self.solver.NumVar(0, self.solver.infinity(), f"x{len(self.vars)}")
        self.type_rows[column.type_index].SetCoefficient(var, 1)
        for shape, count in column.counts.items():
            self.shape_rows[shape].SetCoefficient(var, count)
        self.objective.SetCoefficient(var, column.value)
        self.columns.append(column)
        self.vars.append(var)
        return True

    def solve(self, time_limit: float) -> tuple[float, list[float], list[float]] | None:
        """(value, type duals, shape duals), duals clipped at 0; None if GLOP gave no optimum."""
        if not self.vars:
            return 0.0, [0.0] * len(self.type_rows), [0.0] * len(self.shape_rows)
        self.solver.SetTimeLimit(max(1, int(time_limit * 1000)))
        if self.solver.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        pi = [max(0.0, r.dual_value()) for r in self.type_rows]
        mu = [max(0.0, r.dual_value()) for r in self.shape_rows]
        return self.objective.Value(), pi, mu

    def solution(self) -> list[tuple[Column, float]]:
        return [(c, v.solution_value()) for c, v in zip(self.columns, self.vars, strict=True)]


@dataclass
class Progress:
    """What the loop reached: best proven bound, master value, and how it ended."""

    upper: float
    lp: float = 0.0
    passes: int = 0
    lp_optimal: bool = False
    pricing_timeouts: int = 0
    history: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds, master value, bound of that pass) per pass."""


def generate(
    instance: Instance,
    master: Master,
    deadline: float,
    pricing_limit: float,
    gap_tolerance: float,
    workers: int = 1,
    smoothing: float = 0.7,
) -> Progress:
    """Add improving columns until the bound meets the master (within `gap_tolerance` milli-GPU)
    or `deadline` (a perf_counter time) passes.

    Duals are smoothed (Wentges): pricing runs at a mix of the best-bound duals so far and the
    master's, which keeps L(mu) from jumping about; when that finds no column improving the
    master, the next pass prices at the master's own duals."""
    start = time.perf_counter()
    relaxations = [NodeRelaxation(instance, t) for t in range(len(instance.types))]
    progress = Progress(upper=float(min(instance.capacity_milli, instance.demand_milli)))
    center = [0.0] * len(instance.shapes)  # L(0) <= capacity: a valid first centre
    alpha = smoothing
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        solved = master.solve(left)
        if solved is None:
            break
        progress.lp, pi, mu = solved
        at = [alpha * c + (1 - alpha) * m for c, m in zip(center, mu, strict=True)]
        bound, improved, all_optimal = _pass(
            instance, master, relaxations, pi, mu, at, deadline, pricing_limit, workers, progress
        )
        progress.passes += 1
        if bound < progress.upper:
            progress.upper, center = bound, at
        progress.history.append((time.perf_counter() - start, progress.lp, bound))
        if progress.upper - progress.lp <= gap_tolerance:
            progress.lp_optimal = all_optimal and alpha == 0 and not improved
            break
        if not improved:
            if alpha == 0:  # nothing improves the master at its own duals
                progress.lp_optimal = all_optimal
                break
            alpha = 0.0
        else:
            alpha = smoothing
    return progress


def _pass(
    instance, master, relaxations, pi, mu, at, deadline, pricing_limit, workers, progress
) -> tuple[float, int, bool]:
    """Price every type at duals `at`: L(at), how many columns were added (those improving the
    master at its duals `pi`, `mu`), whether every pricing was solved exactly."""
    bound = sum(shape.demand * at[s] for s, shape in enumerate(instance.shapes))
    improved, all_optimal = 0, True
    for t, node_type in enumerate(instance.types):
        left = deadline - time.perf_counter()
        profits = {s: instance.fits[(t, s)].weight - at[s] for s in instance.shapes_on(t)}
        if left <= 0:
            best = float(node_type.spec.gpu_count * MILLI_PER_GPU)  # no time: the node's capacity
            optimal = False
        else:
            priced = price(instance, t, profits, min(pricing_limit, left), workers)
            best, optimal = priced.bound, priced.optimal
            if not optimal:  # the per-GPU relaxation is often far tighter than CP-SAT's bound
                relaxation = relaxations[t]
                weights = np.array([profits[s] for s in relaxation.shapes.tolist()])
                best = min(best, relaxation.bound(weights))
            column = priced.column
            if column is not None and _reduced_cost(instance, column, pi, mu) > EPS * max(1.0, pi[t]):
                improved += master.add(column)
        if not optimal:
            progress.pricing_timeouts += 1
        all_optimal &= optimal
        bound += node_type.count * max(0.0, best)
    return bound, improved, all_optimal


def _reduced_cost(instance: Instance, column: Column, pi: list[float], mu: list[float]) -> float:
    t = column.type_index
    return sum(n * (instance.fits[(t, s)].weight - mu[s]) for s, n in column.counts.items()) - pi[t]
