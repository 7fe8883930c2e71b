"""A proven bracket on OPT: the most GPU any subset of given pods can hold on a cluster at once.

`solve_bound(nodes, requests)` returns an upper bound (>= OPT, see `placement.bound.colgen` for
why) and a feasible offline packing (<= OPT, replayed through `ClusterState.allocate`). No
online policy that sees these pods one by one can hold more than the upper bound.

Modelled exactly: CPU, memory and pod count per node; whole GPUs (free GPUs of one node);
fractions per GPU (milli-GPU, GPU memory where the node knows it, sharer limits); allowed GPU
models; time-sliced GPUs (a one-GPU pod takes one slice). Relaxed (the bound stays valid,
the packing still obeys the real checks): MIG, counted by compute share against node GPU
capacity without slot positions. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tessellate.placement.bound.colgen import Master, generate
from tessellate.placement.bound.instance import Instance, build_instance
from tessellate.placement.bound.packing import columns_of, greedy_packing, held_milli, rounded_packing, verify
from tessellate.placement.model import Assignment, NodeSpec, Request

__all__ = ["BoundResult", "Instance", "build_instance", "solve_bound"]

RELAXED_NOTE = (
    "exact: CPU, memory, pod count, whole GPUs, per-GPU fractions (milli, GPU memory, sharers), "
    "GPU models, time slices; relaxed: MIG (compute share vs node GPU capacity, no slot layout)"
)


@dataclass(frozen=True)
class BoundResult:
    """upper >= OPT >= feasible, all in milli-GPU."""

    upper_milli: int
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
    assignments: tuple[Assignment, ...]
    """The feasible packing (pod names are `pod-<index into requests>`)."""
    packing: str
    """Which construction won: `rounded-lp` or `greedy`."""

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

    `gap_tolerance` (share of GPU capacity) stops column generation once the bound is that
    close to the master's value; `pricing_limit` caps each CP-SAT call; `workers` is CP-SAT's
    thread count. The packing steps after the time limit take a few seconds more."""
    start = time.perf_counter()
    instance = build_instance(nodes, requests)
    greedy = greedy_packing(instance)
    master = Master(instance)
    for column in columns_of(instance, greedy):
        master.add(column)
    tolerance = gap_tolerance * instance.capacity_milli
    progress = generate(instance, master, start + time_limit, pricing_limit, tolerance, workers)
    master.solve(max(1.0, time_limit * 0.1))
    rounded, refused = rounded_packing(instance, master.solution())
    if held_milli(rounded) >= held_milli(greedy):
        best, packing = rounded, "rounded-lp"
    else:
        best, packing = greedy, "greedy"
    assignments = tuple(best.live.values())
    feasible = verify(instance, assignments)
    upper = int(progress.upper + 1e-6)  # OPT is a whole number of milli-GPU
    upper = min(upper, instance.capacity_milli, instance.demand_milli)
    if feasible > upper:  # cannot happen unless the model is wrong: refuse to answer
        raise AssertionError(f"packing {feasible} above the proven bound {upper}: a bug, please report it")
    relaxed = instance.relaxed + ((f"{refused} rounded pods refused by the checks",) if refused else ())
    return BoundResult(
        upper_milli=upper,
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
        assignments=assignments,
        packing=packing,
    )
