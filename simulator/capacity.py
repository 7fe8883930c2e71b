"""The cheapest mix of node shapes that meets a service target, found through timed replays.

What is asked: for a workload (grown by `growth`) and candidate node shapes with prices,
how many nodes of each shape so that, on every seed, at least `placed` of the pods start
within `max_wait` and the 95th percentile of the wait is at most `wait_p95_s` (pods never
placed count as waiting forever). Every candidate mix is judged by `simulator.timed` with
the shapes' GPU speeds (a pod runs its trace lifetime divided by the speed of the GPU model
it starts on), the same placement core as the scheduler.

Method (each evaluation is one timed replay per seed, cached by mix; with `workers` > 1 the
seeds of a mix replay in parallel processes, with the same results):

1. feasible start: every shape at `existing + k` nodes, k doubled from 1 until the target
   is met, then bisected down to the smallest such k;
2. descent: shape by shape, the count is bisected down to the smallest that still meets
   the target with the others fixed; the pass repeats until nothing changes, then every
   shape is checked at one node fewer (a mix is only returned when no single node can be
   removed). This runs from the start once per shape order (each shape first, then the
   dearest per unit of GPU speed first) and, to find trades, once per shape from the start
   with that shape doubled and descended last; the cheapest result wins;
3. frontier: every evaluated mix is kept with its cost and worst-seed figures; those no
   other mix beats in cost, placed share and p95 wait at once form the frontier.

Bisection assumes more nodes never hurt; the final one-fewer check does not assume it.
The answer is a local optimum over mixes, not a proven global one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from tessellate.placement import Assignment, ClusterState, NumpyInts, Placer, PolicyContext, create_policy
from tessellate.simulator.nodetypes import NodeShape
from tessellate.simulator.replay import target_workload
from tessellate.simulator.timed import run_timed
from tessellate.simulator.trace import PodRecord, Trace

Mix = tuple[int, ...]


class PlanError(ValueError):
    """A plan that cannot be made as asked; the message says why and what to change."""


@dataclass(frozen=True)
class Target:
    placed: float = 0.99
    """Share of pods that must start within `max_wait`."""
    wait_p95_s: float = 600.0
    """95th percentile of the wait over all pods (never placed: forever), seconds."""


@dataclass(frozen=True)
class Evaluation:
    """One mix, judged on every seed; the worst seed decides."""

    mix: Mix
    cost_per_hour: float
    placed_worst: float
    wait_p95_worst: float
    placed_mean: float
    wait_p95_mean: float
    meets: bool


def grow(trace: Trace, growth: float, seed: int) -> Trace:
    """The workload at `growth` times its arrival rate, resampled with `seed`.

    Every pod is kept once per whole unit of growth and once more with probability equal to
    the fraction (below 1, a pod is kept with probability `growth`). An extra copy arrives at
    the creation time of a pod drawn at random from the trace, so the daily shape of the
    arrivals stays, and keeps its own lifetime."""
    if growth <= 0:
        raise PlanError(f"--growth must be positive, got {growth}")
    if growth == 1:
        return trace
    rng = np.random.default_rng(seed)
    pods = list(trace.pods)
    times = np.array([p.creation_time or 0.0 for p in pods])
    out: list[PodRecord] = []
    for pod in pods:
        copies = int(growth) + (1 if rng.random() < growth - int(growth) else 0)
        for k in range(copies):
            if k == 0:
                out.append(pod)
                continue
            start = float(times[rng.integers(len(times))])
            lifetime = None if pod.deletion_time is None else pod.deletion_time - (pod.creation_time or 0.0)
            out.append(
                replace(
                    pod,
                    name=f"{pod.name}-g{k}",
                    creation_time=start,
                    deletion_time=None if lifetime is None else start + lifetime,
                )
            )
    return replace(trace, name=f"{trace.name}x{growth:g}", pods=tuple(out))


def cluster(shapes: Sequence[NodeShape], mix: Mix) -> tuple:
    return tuple(shape.node(i) for shape, count in zip(shapes, mix, strict=True) for i in range(count))


def cost(shapes: Sequence[NodeShape], mix: Mix) -> float:
    return float(sum(s.price_per_hour * n for s, n in zip(shapes, mix, strict=True)))


def wait_p95(delays: np.ndarray, never: int) -> float:
    """95th percentile of the wait over all pods, pods never placed waiting forever."""
    values = np.concatenate([np.sort(delays), np.full(never, math.inf)])
    return float(np.percentile(values, 95, method="higher")) if len(values) else 0.0


def unplaceable(workload: Trace, shapes: Sequence[NodeShape]) -> list[PodRecord]:
    """Pods no shape can hold even empty (more nodes never help them)."""
    nodes = cluster(shapes, tuple(1 for _ in shapes))
    state = ClusterState(nodes)
    placer = Placer(
        state, create_policy("bestfit", PolicyContext(rng=NumpyInts(0), target=target_workload(workload)))
    )
    fits: dict[object, bool] = {}
    lost = []
    for pod in workload.pods:
        if pod.request not in fits:
            fits[pod.request] = isinstance(placer.place(pod.name, pod.request), Assignment)
        if not fits[pod.request]:
            lost.append(pod)
    return lost


def replay_seed(
    workload: Trace,
    nodes: tuple,
    policy: str,
    seed: int,
    max_wait: float,
    speeds: Mapping[str, float],
) -> tuple[float, float]:
    """(placed share, p95 wait) of one seed's workload on `nodes`; no fragmentation series,
    which the planner never reads."""
    trace = replace(workload, nodes=nodes)
    result = run_timed(trace, policy, seed, max_wait=max_wait, samples=2, speeds=speeds, fragmentation=False)
    pods = max(1, len(result.outcome))
    return result.placed / pods, wait_p95(result.delays, len(result.outcome) - result.placed)


_WORKER_WORKLOADS: list[Sequence[Trace]] = []
"""In a planner's worker process: the workloads, sent once when the process starts."""


def _worker_start(workloads: Sequence[Trace]) -> None:
    _WORKER_WORKLOADS[:] = [workloads]


def _worker_replay(
    seed: int, nodes: tuple, policy: str, max_wait: float, speeds: Mapping[str, float]
) -> tuple[float, float]:
    """`replay_seed` in a worker process, on the workload it was started with (top level: picklable)."""
    return replay_seed(_WORKER_WORKLOADS[0][seed], nodes, policy, seed, max_wait, speeds)


@dataclass
class Planner:
    """The search of the module docstring over `shapes` for `workloads` (one per seed)."""

    workloads: Sequence[Trace]
    shapes: Sequence[NodeShape]
    speeds: dict[str, float]
    target: Target
    policy: str = "fgd"
    max_wait: float = 3600.0
    on_eval: Callable[[Evaluation], None] | None = None
    seen: dict[Mix, Evaluation] = field(default_factory=dict)
    workers: int = 1
    """Processes for the seeds of one mix during `solve` (0: one per CPU); 1 replays them here,
    in turn. Results are the same either way: each seed's replay is deterministic."""
    _pool: Executor | None = field(default=None, init=False, repr=False)

    @contextmanager
    def replays(self) -> Iterator[None]:
        """A process pool for the seeds' replays while the block runs (one per search, not per
        mix: the workloads travel to each process once)."""
        workers = min(self.workers or os.cpu_count() or 1, len(self.workloads))
        if workers <= 1 or self._pool is not None:
            yield
            return
        with ProcessPoolExecutor(workers, initializer=_worker_start, initargs=(self.workloads,)) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def _replay_seeds(self, nodes: tuple) -> list[tuple[float, float]]:
        """(placed share, p95 wait) per seed, in seed order."""
        if not nodes:
            return [(0.0, math.inf)] * len(self.workloads)
        policy, max_wait, speeds = self.policy, self.max_wait, self.speeds
        if self._pool is None:
            return [replay_seed(w, nodes, policy, s, max_wait, speeds) for s, w in enumerate(self.workloads)]
        seeds = range(len(self.workloads))
        futures = [self._pool.submit(_worker_replay, s, nodes, policy, max_wait, speeds) for s in seeds]
        return [f.result() for f in futures]

    def evaluate(self, mix: Mix) -> Evaluation:
        if mix in self.seen:
            return self.seen[mix]
        figures = self._replay_seeds(cluster(self.shapes, mix))
        placed, waits = [p for p, _ in figures], [w for _, w in figures]
        worst_placed, worst_wait = min(placed), max(waits)
        evaluation = Evaluation(
            mix=mix,
            cost_per_hour=cost(self.shapes, mix),
            placed_worst=worst_placed,
            wait_p95_worst=worst_wait,
            placed_mean=float(np.mean(placed)),
            wait_p95_mean=float(np.mean(waits)),
            meets=worst_placed >= self.target.placed and worst_wait <= self.target.wait_p95_s,
        )
        self.seen[mix] = evaluation
        if self.on_eval:
            self.on_eval(evaluation)
        return evaluation

    def meets(self, mix: Mix) -> bool:
        return self.evaluate(mix).meets

    def _floor(self) -> Mix:
        return tuple(s.existing for s in self.shapes)

    def feasible_start(self) -> Mix:
        floor = self._floor()
        limit = max(s.max_count for s in self.shapes)

        def uniform(k: int) -> Mix:
            return tuple(min(s.max_count, e + k) for s, e in zip(self.shapes, floor, strict=True))

        if self.meets(floor):
            return floor
        k = 1
        while not self.meets(uniform(k)):
            if k >= limit:
                best = self.evaluate(uniform(k))
                raise PlanError(
                    f"even {', '.join(f'{n} x {s.name}' for s, n in zip(self.shapes, best.mix, strict=True))}"
                    f" misses the target (placed {best.placed_worst:.3f}, wait p95 "
                    f"{best.wait_p95_worst:,.0f} s): raise max_count in types.yaml, add a larger shape, "
                    "or relax --target"
                )
            k = min(limit, 2 * k)
        lo, hi = k // 2, k  # uniform(lo) fails (or lo = 0: the floor, which failed), uniform(hi) meets
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.meets(uniform(mid)) else (mid, hi)
        return uniform(hi)

    def _lowest(self, mix: Mix, i: int) -> Mix:
        """`mix` with shape i bisected down to the fewest nodes that still meet the target."""
        lo, hi = self.shapes[i].existing - 1, mix[i]  # hi meets; lo is "below the floor"

        def at(n: int) -> Mix:
            return (*mix[:i], n, *mix[i + 1 :])

        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.meets(at(mid)) else (mid, hi)
        return at(hi)

    def descend(self, start: Mix, order: Sequence[int]) -> Mix:
        mix = start
        while True:
            before = mix
            for i in order:
                mix = self._lowest(mix, i)
            if mix != before:
                continue
            fewer = [(*mix[:i], mix[i] - 1, *mix[i + 1 :]) for i in order if mix[i] > self.shapes[i].existing]
            smaller = [m for m in fewer if self.meets(m)]
            if not smaller:
                return mix
            mix = min(smaller, key=lambda m: cost(self.shapes, m))

    def orders(self) -> list[list[int]]:
        """Each shape first, then the dearest per unit of GPU speed first."""

        def dearness(i: int) -> float:
            s = self.shapes[i]
            return s.price_per_hour / max(1e-9, s.gpus * self.speeds.get(s.gpu_model, 1.0))

        by_dearness = sorted(range(len(self.shapes)), key=dearness, reverse=True)
        return [[first, *(i for i in by_dearness if i != first)] for first in by_dearness]

    def solve(self) -> Evaluation:
        with self.replays():
            return self._solve()

    def _solve(self) -> Evaluation:
        start = self.feasible_start()
        answers = [self.descend(start, order) for order in self.orders()]
        for i, shape in enumerate(self.shapes):  # trades: more of one shape, fewer of the rest
            boosted = (*start[:i], min(shape.max_count, max(1, 2 * start[i])), *start[i + 1 :])
            if boosted != start:
                order = [j for j in self.orders()[0] if j != i] + [i]
                answers.append(self.descend(boosted, order))
        best = min(answers, key=lambda m: (cost(self.shapes, m), m))
        return self.evaluate(best)

    def frontier(self) -> list[Evaluation]:
        """Evaluated mixes that no other beats in cost, placed share and p95 wait at once."""
        evals = list(self.seen.values())

        def beats(a: Evaluation, b: Evaluation) -> bool:
            no_worse = (
                a.cost_per_hour <= b.cost_per_hour
                and a.placed_worst >= b.placed_worst
                and a.wait_p95_worst <= b.wait_p95_worst
            )
            better = (
                a.cost_per_hour < b.cost_per_hour
                or a.placed_worst > b.placed_worst
                or a.wait_p95_worst < b.wait_p95_worst
            )
            return no_worse and better

        front = [e for e in evals if not any(beats(o, e) for o in evals)]
        return sorted(front, key=lambda e: (e.cost_per_hour, e.mix))
