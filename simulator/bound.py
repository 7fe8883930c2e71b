"""The proven bracket on OPT at points of the FGD protocol's x axis (arrived % of GPU capacity).

For a seed and tune ratio, `plan_inflation` fixes the arrival sequence. Column x of the
paper's result rows (`simulator.metrics.discrete`) averages the allocation over the events
whose arrived demand rounds to x% (or x-1..x+1 where none does). OPT(n), the most GPU any
subset of the first n arrivals can hold at once, never decreases with n, so the bound at the
*last* of those events is above every allocation averaged in the column, for every online
policy: that is the n used here. Inflation samples differ by seed, so the bound is per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tessellate.placement.bound import BoundResult, solve_bound
from tessellate.simulator.protocol import InflationPlan, plan_inflation
from tessellate.simulator.trace import Trace


@dataclass(frozen=True)
class BoundPoint:
    x: int
    arrivals: int
    """n: how many arrivals the bound is over."""
    arrived_milli: int
    result: BoundResult


def arrivals_at(plan: InflationPlan, total_gpus: int, x: int) -> int:
    """The n for column x: one past the last event `discrete` averages there (0: none)."""
    arrived = np.cumsum([p.request.total_gpu_milli for p in plan.arrivals])
    rounded = np.round(arrived / total_gpus / 10, 0)
    rows = np.flatnonzero(rounded == x)
    if not rows.size:
        rows = np.flatnonzero((rounded >= x - 1) & (rounded <= x + 1))
    if not rows.size:  # the column is empty there; bound the arrivals up to x% instead
        return int(np.searchsorted(arrived, x * total_gpus * 10, side="right"))
    return int(rows[-1]) + 1


def bound_points(
    trace: Trace,
    seed: int,
    tune: float | None,
    at: Sequence[int] = (100, 130),
    time_limit: float = 60.0,
    pricing_limit: float = 0.5,
    workers: int = 1,
) -> list[BoundPoint]:
    """The bracket after the arrivals of each x in `at`, for one seed."""
    plan = plan_inflation(trace, seed, tune)
    arrived = np.cumsum([p.request.total_gpu_milli for p in plan.arrivals])
    points = []
    for x in at:
        n = arrivals_at(plan, trace.total_gpus, x)
        requests = [p.request for p in plan.arrivals[:n]]
        result = solve_bound(
            plan.nodes, requests, time_limit=time_limit, pricing_limit=pricing_limit, workers=workers
        )
        points.append(BoundPoint(x, n, int(arrived[n - 1]) if n else 0, result))
    return points


def policy_at(trace: Trace, policy: str, seed: int, tune: float | None, arrivals: Sequence[int]) -> list[int]:
    """A policy's allocated milli-GPU right after each of `arrivals` events (same seed)."""
    from tessellate.simulator.replay import run_inflation

    used = run_inflation(trace, policy, seed, tune).series.used_milli
    return [int(used[n - 1]) if n else 0 for n in arrivals]
