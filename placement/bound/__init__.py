"""A proven bracket on OPT: the most GPU any subset of given pods can hold on a cluster at once.

`solve_bound(nodes, requests)` returns an upper bound (>= OPT) and a feasible offline packing
(<= OPT, replayed through `ClusterState.allocate`). No online policy that sees these pods one
by one can hold more than the upper bound. The upper bound is the smaller of two, each proven
on its own (each is a dual certificate, valid however early its solver stopped):

- the aggregate LP (`placement.bound.aggregate`, about a second): fractions packed GPU by GPU
  exactly, as patterns (milli-GPU, GPU memory, sharer limit per GPU; no GPU shared by a
  fraction and a whole-GPU pod); CPU, memory and pod count only per node *type* (summed over
  its nodes), not per node. This is the bound that is informative on openb: fractions that
  do not add up to whole GPUs cost capacity, CPU and memory pooled per type almost never do.
- the configuration LP (`placement.bound.colgen`): every node's limits exact, but its bound
  counts only pricing calls CP-SAT solved to optimality (the node's capacity otherwise), which
  on 8-GPU nodes rarely happens in time. Its columns are what the packing is built from.

Modelled exactly by both: whole GPUs, per-GPU fractions, GPU models, time-sliced GPUs (a
one-GPU pod takes one slice); by the configuration LP also CPU, memory and pod count per node.
Relaxed (the bounds stay valid, the packing still obeys the real checks): MIG, counted by
compute share against node GPU capacity without slot positions; in the aggregate LP, CPU,
memory and pod count per node type, and (only where its pattern DP would pass
`aggregate.MAX_STATES` states) GPU memory per GPU. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tessellate.placement.bound.aggregate import aggregate_bound
from tessellate.placement.bound.colgen import Master, generate
from tessellate.placement.bound.instance import Instance, build_instance
from tessellate.placement.bound.packing import (
    columns_of,
    greedy_packing,
    held_milli,
    integer_packing,
    rounded_packing,
    verify,
)
from tessellate.placement.model import Assignment, NodeSpec, Request

__all__ = ["BoundResult", "Instance", "build_instance", "solve_bound"]

RELAXED_NOTE = (
    "exact: whole GPUs, per-GPU fractions (milli, GPU memory, sharers), GPU models, time slices, "
    "and (configuration LP) CPU, memory, pod count per node; relaxed: MIG (compute share vs node "
    "GPU capacity, no slot layout), and (aggregate LP) CPU, memory, pod count pooled per node type"
)


@dataclass(frozen=True)
class BoundResult:
    """upper >= OPT >= feasible, all in milli-GPU."""

    upper_milli: int
    """The smaller of the two proven bounds below."""
    aggregate_milli: int
    """The aggregate LP's dual certificate (`placement.bound.aggregate`): per-GPU fraction
    patterns exact, CPU, memory and pod count pooled per node type."""
    colgen_milli: int
    """The configuration LP's best Lagrangian bound (`placement.bound.colgen`): every node's
    limits exact, but only pricing solved to optimality counts, which on 8-GPU nodes CP-SAT
    rarely reaches in time (then it is the capacity)."""
    feasible_milli: int
    lp_milli: float
    """The master LP's value at the end (a lower estimate of the LP optimum, not a bound)."""
    capacity_milli: int
    demand_milli: int
    seconds: float
    lp_optimal: bool
    """True when column generation closed with exact pricing: upper is the LP optimum (up to
    rounding). False: stopped early (time, tolerance); upper is still a proven bound."""
    relaxed: tuple[str, ...]
    passes: int
    columns: int
    node_types: int
    shapes: int
    pricing_timeouts: int
    aggregate_optimal: bool
    """True when the aggregate LP closed (its bound is then that LP's optimum)."""
    assignments: tuple[Assignment, ...]
    """The feasible packing (pod names are `pod-<index into requests>`)."""
    packing: str
    """Which construction won: `integer` (price-and-branch), `rounded-lp` or `greedy`."""

    @property
    def gap_milli(self) -> int:
        return self.upper_milli - self.feasible_milli

    @property
    def gap(self) -> float:
        """Gap relative to the upper bound (0 when both are 0)."""
        return self.gap_milli / self.upper_milli if self.upper_milli else 0.0


def solve_bound(
    nodes: Sequence[NodeSpec],
    requests: Sequence[Request],
    time_limit: float = 60.0,
    pricing_limit: float = 2.0,
    gap_tolerance: float = 1e-4,
    workers: int = 1,
) -> BoundResult:
    """Bracket OPT for `requests` on empty `nodes` within about `time_limit` seconds.

    First the aggregate LP (about a second on openb; its bound is the one that is usually
    informative), then column generation on the configuration LP, smoothed around the
    aggregate LP's shape prices, for columns (and its own Lagrangian bound) until 85% of the
    time is spent, then price-and-branch over those columns for the packing (the rest).
    `gap_tolerance` (share of GPU capacity) stops column generation once the bound is that
    close to the master's value; `pricing_limit` caps each CP-SAT call; `workers` is CP-SAT's
    thread count. Building and checking the packing takes a few seconds more."""
    start = time.perf_counter()
    instance = build_instance(nodes, requests)
    # the aggregate LP closes in a second or two on openb: give it that even on short limits
    aggregate = aggregate_bound(instance, start + max(0.25 * time_limit, min(time_limit, 3.0)))
    greedy = greedy_packing(instance)
    master = Master(instance)
    for column in columns_of(instance, greedy):
        master.add(column)
    tolerance = gap_tolerance * instance.capacity_milli
    progress = generate(
        instance,
        master,
        start + 0.85 * time_limit,
        pricing_limit,
        tolerance,
        workers,
        center=list(aggregate.prices),
        upper=aggregate.upper,
        patterns=aggregate.gpu_patterns,
    )
    master.solve(max(1.0, time_limit * 0.1))
    solution = master.solution()
    mip_limit = max(0.0, start + time_limit - time.perf_counter())
    candidates = [
        (integer_packing(instance, solution, mip_limit, workers), "integer"),
        (rounded_packing(instance, solution), "rounded-lp"),
        ((greedy, 0), "greedy"),
    ]
    (best, refused), packing = max(candidates, key=lambda c: held_milli(c[0][0]))
    assignments = tuple(best.live.values())
    feasible = verify(instance, assignments)
    trivial = min(instance.capacity_milli, instance.demand_milli)
    # OPT is a whole number of milli-GPU; the certificate is summed in floats (error far below 0.01)
    aggregate_milli = min(trivial, int(aggregate.upper + 0.01))
    colgen_milli = min(trivial, int(progress.colgen_upper + 1e-6))
    upper = min(aggregate_milli, colgen_milli)
    if feasible > upper:  # cannot happen unless the model is wrong: refuse to answer
        raise AssertionError(f"packing {feasible} above the proven bound {upper}: a bug, please report it")
    relaxed = instance.relaxed + ((f"{refused} packed pods refused by the checks",) if refused else ())
    return BoundResult(
        upper_milli=upper,
        aggregate_milli=aggregate_milli,
        colgen_milli=colgen_milli,
        feasible_milli=feasible,
        lp_milli=progress.lp,
        capacity_milli=instance.capacity_milli,
        demand_milli=instance.demand_milli,
        seconds=time.perf_counter() - start,
        lp_optimal=progress.lp_optimal,
        relaxed=relaxed,
        passes=progress.passes,
        columns=len(master.columns),
        node_types=len(instance.types),
        shapes=len(instance.shapes),
        pricing_timeouts=progress.pricing_timeouts,
        aggregate_optimal=aggregate.optimal,
        assignments=assignments,
        packing=packing,
    )
