"""A second proven bound on the pricing problem, fast where CP-SAT is slow (8-GPU nodes).

Not used by column generation at present (see `placement.bound.colgen`: an invalid L(mu) was
seen once, from this or from an unfinished CP-SAT bound); the aggregate LP is the bound that
counts on openb.

Move the node's CPU and memory limits into the objective with multipliers lam, nu >= 0:
for any such pair,

    P_t <= lam*C + nu*M + max { sum_s a_s (p_s - lam*cpu_s - nu*mem_s) : the pods' GPU needs fit }

(weak duality: on a configuration that respects CPU and memory the penalty terms are >= 0).
The inner problem also drops the pod limit, per-node demand caps, GPU memory and sharer
limits (each only enlarges the feasible set). What is left splits by GPU: a GPU is either
given to whole-GPU pods or filled with fractions, so it is a 1-D knapsack of one GPU's
milli-GPU plus a small DP over the node's GPU count, both exact in integers. The multipliers
are tuned by coordinate-wise golden-section search (the function is convex); whatever pair
the search ends at, the value is a valid bound.
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
from tessellate.placement.bound.instance import Instance
from tessellate.placement.model import MILLI_PER_GPU

_GOLDEN = (math.sqrt(5) - 1) / 2


class NodeRelaxation:
    """The per-GPU relaxation of one node type's pricing, for changing profits."""

    def __init__(self, instance: Instance, t: int):
        spec = instance.types[t].spec
        self.gpus, self.cpu, self.mem = spec.gpu_count, spec.cpu_milli, spec.memory_mib
        shapes = instance.shapes_on(t)
        fits = [instance.fits[(t, s)] for s in shapes]
        self.usable = all(f.kind != "mig" for f in fits)  # MIG has no per-GPU form here
        self.shapes = np.array(shapes, dtype=np.int64)
        self.cpus = np.array([instance.shapes[s].request.cpu_milli for s in shapes], dtype=float)
        self.mems = np.array([instance.shapes[s].request.memory_mib for s in shapes], dtype=float)
        kinds = [f.kind for f in fits]
        millis = [f.milli for f in fits if f.kind == "fraction"]
        unit = reduce(math.gcd, [*millis, MILLI_PER_GPU]) if millis else MILLI_PER_GPU
        self.capacity = MILLI_PER_GPU // unit
        self.frac_sizes = sorted({m // unit for m in millis})
        size_index = {m: i for i, m in enumerate(self.frac_sizes)}
        self.frac_of = np.array(
            [size_index[f.milli // unit] if k == "fraction" else -1 for f, k in zip(fits, kinds, strict=True)]
        )
        self.whole_sizes = sorted({f.gpus for f in fits if f.kind == "whole"})
        whole_index = {k: i for i, k in enumerate(self.whole_sizes)}
        self.whole_of = np.array(
            [whole_index[f.gpus] if k == "whole" else -1 for f, k in zip(fits, kinds, strict=True)]
        )

    def value(self, profits: np.ndarray, lam: float, nu: float) -> float:
        """The bound at (lam, nu) for per-shape `profits` (aligned with `self.shapes`)."""
        adjusted = profits - lam * self.cpus - nu * self.mems
        frac = np.full(len(self.frac_sizes), 0.0)
        whole = np.full(len(self.whole_sizes), 0.0)
        is_frac, is_whole = self.frac_of >= 0, self.whole_of >= 0
        np.maximum.at(frac, self.frac_of[is_frac], adjusted[is_frac])
        np.maximum.at(whole, self.whole_of[is_whole], adjusted[is_whole])
        per_gpu = _knapsack(self.capacity, self.frac_sizes, frac.tolist())
        best = [0.0] * (self.gpus + 1)
        for g in range(1, self.gpus + 1):
            v = best[g - 1] + per_gpu
            for k, w in zip(self.whole_sizes, whole.tolist(), strict=True):
                if k <= g and w > 0:
                    v = max(v, best[g - k] + w)
            best[g] = v
        return lam * self.cpu + nu * self.mem + best[self.gpus]

    def bound(self, profits: np.ndarray, rounds: int = 2, evals: int = 24) -> float:
        """min over the multipliers tried; never above the node's GPU capacity."""
        cap = float(self.gpus * MILLI_PER_GPU)
        if not self.usable or not len(self.shapes):
            return cap if len(self.shapes) else 0.0
        profits = np.maximum(profits, 0.0)
        lam_max = float((profits / np.maximum(self.cpus, 1.0)).max()) if self.cpu else 0.0
        nu_max = float((profits / np.maximum(self.mems, 1.0)).max()) if self.mem else 0.0
        lam = nu = 0.0
        best = self.value(profits, lam, nu)
        for _ in range(rounds):
            lam, v = _golden(lambda x, nu=nu: self.value(profits, x, nu), 0.0, lam_max, evals)
            best = min(best, v)
            nu, v = _golden(lambda y, lam=lam: self.value(profits, lam, y), 0.0, nu_max, evals)
            best = min(best, v)
        return min(cap, best)


def _knapsack(capacity: int, sizes: list[int], values: list[float]) -> float:
    """Best value of an unbounded knapsack of `capacity` (items with value <= 0 never help)."""
    items = [(s, v) for s, v in zip(sizes, values, strict=True) if v > 0 and s <= capacity]
    if not items:
        return 0.0
    dp = [0.0] * (capacity + 1)
    for c in range(1, capacity + 1):
        best = dp[c - 1]
        for s, v in items:
            if s <= c and dp[c - s] + v > best:
                best = dp[c - s] + v
        dp[c] = best
    return dp[capacity]


def _golden(f, lo: float, hi: float, evals: int) -> tuple[float, float]:
    """(argmin, min) of a convex `f` on [lo, hi], by golden-section search, ends included."""
    best_x, best_v = lo, f(lo)
    if hi <= lo:
        return best_x, best_v
    v_hi = f(hi)
    if v_hi < best_v:
        best_x, best_v = hi, v_hi
    a, b = lo, hi
    x1, x2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(evals):
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - _GOLDEN * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + _GOLDEN * (b - a)
            f2 = f(x2)
        for x, v in ((x1, f1), (x2, f2)):
            if v < best_v:
                best_x, best_v = x, v
    return best_x, best_v
