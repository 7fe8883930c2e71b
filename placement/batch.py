"""Batch placement: decide a few pending pods together with CP-SAT, never worse than greedy.

`Placer` decides one pod at a time, so a burst of pending pods is placed in whatever
order it arrived, and an early pod may take the room a later, larger one needed (two
4-GPU pods splitting the one idle 8-GPU node). `place_batch` first runs that greedy
order, then, only when greedy leaves a pod pending that fits alone, asks CP-SAT for the
most GPU the batch can hold at once, with the greedy answer as the solver's hint and a
small bonus for agreeing with it (so equal outcomes keep the policy's choices).

Every question about fit is the core's: a pod's candidate nodes are where `Placer.fits`
says it fits alone now, its GPUs where `placement.devices.fraction_fits` says so, and
the answer is replayed through `ClusterState.allocate`. If that refuses anything, or the
answer does not place strictly more (GPU milli, then pods) than greedy, the greedy
result is returned: never worse than greedy, never an invalid answer. Both replays
allocate on the placer's own state and release everything before returning (only
`ClusterState.version` moves, which only makes caches rescore); the caller applies
`BatchResult.assignments` in order.

Not modelled (decided greedily, in order, after the modelled pods): MIG requests
(instance layouts are the MIG book's to choose) and one-GPU requests on a cluster with
time-sliced nodes (where `Placer` routes them between whole GPUs and slices).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model
from tessellate.placement.cycle import Placer
from tessellate.placement.devices import fraction_fits
from tessellate.placement.model import MILLI_PER_GPU, Assignment, Request
from tessellate.placement.state import ClusterState
from tessellate.placement.timeslice import takes_a_slice

SKIPPED_COMPLETE = "greedy-complete"
"""Greedy placed every pod that fits alone: nothing can do better, the solver is not run."""
SKIPPED_BOUND = "greedy-at-bound"
"""Greedy already holds as much GPU as the batch could (the free GPU where its pods fit, or
their whole demand), and no CPU-only pod waits: the solver is not run."""
SKIPPED = frozenset({SKIPPED_COMPLETE, SKIPPED_BOUND})
INVALID = "invalid-answer"
"""The solver's answer was refused by `ClusterState.allocate` (the greedy result stands)."""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How hard `place_batch` tries: batch size, solver time, candidate nodes per pod."""

    max_pods: int = 16
    """Pods modelled together; later pods of a larger batch are decided greedily after them."""
    time_limit_s: float = 0.2
    candidates: int = 6
    """Per pod: the policy's best nodes and, as many again, the nodes with the most free GPU."""
    workers: int = 1
    agree_bonus: bool = True
    """Prefer the greedy node among equally good answers (stable decisions do not churn)."""

    def __post_init__(self) -> None:
        if self.max_pods < 1 or self.candidates < 1 or self.workers < 1:
            raise ValueError(f"batch sizes and worker count must be at least 1: {self}")
        if not self.time_limit_s > 0:
            raise ValueError(f"batch time limit must be positive seconds, got {self.time_limit_s}")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What to allocate (in order), what stays pending, and how the decision was reached."""

    assignments: tuple[Assignment, ...]
    pending: tuple[str, ...]
    """Pods of the batch left unplaced, in the given order."""
    greedy_milli: int
    greedy_pods: int
    placed_milli: int
    """GPU milli of `assignments`: `greedy_milli` unless the batch answer won."""
    status: str
    """CP-SAT's status name, one of `SKIPPED`, or `INVALID`."""
    solve_s: float = 0.0
    """Solver wall time (0 when it did not run)."""
    total_s: float = 0.0
    """Everything `place_batch` did: greedy replay, model, solve, validation."""
    fallback: bool = False
    """The solver ran but the greedy result is returned (invalid, or not strictly better)."""
    modelled: int = 0
    """Pods in the CP-SAT model; the rest were decided greedily."""
    solver_milli: int | None = None
    """GPU milli of the solver's validated answer (None: not run or refused)."""
    left_to_greedy: tuple[str, ...] = field(default=())
    """Pods never modelled: MIG requests and slice-routed one-GPU requests."""

    @property
    def solved(self) -> bool:
        return self.status not in SKIPPED

    @property
    def improved(self) -> bool:
        return self.solved and not self.fallback


Pod = tuple[str, Request]


@contextmanager
def _trial(state: ClusterState) -> Iterator[list[Assignment]]:
    """A scratch scope on the real state: what the body allocates (and appends to the yielded
    list) is released on exit, last first, so the state is as it was."""
    made: list[Assignment] = []
    try:
        yield made
    finally:
        for a in reversed(made):
            state.release(a.pod)


def _greedy(
    placer: Placer, pods: Sequence[Pod], made: list[Assignment], eligible: Mapping[str, np.ndarray]
) -> None:
    """`Placer` one pod at a time in the given order, allocating each (into `made`)."""
    for name, request in pods:
        decision = placer.place(name, request, eligible.get(name))
        if isinstance(decision, Assignment):
            placer.state.allocate(decision)
            made.append(decision)


def _score(assignments: Sequence[Assignment]) -> tuple[int, int]:
    return sum(a.request.total_gpu_milli for a in assignments), len(assignments)


def _modelled(state: ClusterState, request: Request) -> bool:
    """Whether the model can express the request exactly (see the module docstring)."""
    if request.is_mig:
        return False
    return not (state.time_sliced and bool(takes_a_slice(request.gpu_count, request.gpu_milli)))


def _at_bound(
    state: ClusterState, pods: Sequence[Pod], fits: dict[str, np.ndarray], greedy: Sequence[Assignment]
) -> bool:
    """Whether greedy's GPU on the modelled pods already equals a bound no answer can pass."""
    where = np.logical_or.reduce([fits[name] for name, _ in pods])
    demand = sum(r.total_gpu_milli for name, r in pods if fits[name].any())
    bound = min(demand, int(state.gpu_total_left[where].sum()))
    names = {name for name, _ in pods}
    return _score([a for a in greedy if a.pod in names])[0] >= bound


def place_batch(
    placer: Placer,
    pods: Sequence[Pod],
    options: BatchOptions | None = None,
    eligible: Mapping[str, np.ndarray] | None = None,
) -> BatchResult:
    """Decide `pods` (name, request) together on `placer`'s state; the state is left as it was.

    The first `options.max_pods` modellable pods go to CP-SAT; every other pod, and every
    modelled pod the answer leaves out, is then tried greedily in the given order.
    `eligible` (pod name -> node mask) narrows where a pod may go, as `Placer.place` takes
    it: the live scheduler's filters (taints, affinity) decided per pod.
    """
    options = options or BatchOptions()
    eligible = eligible or {}
    started = time.perf_counter()
    state = placer.state
    if len({name for name, _ in pods}) != len(pods):
        raise ValueError("place_batch: duplicate pod names in the batch")
    with _trial(state) as made:
        _greedy(placer, pods, made, eligible)
        greedy = tuple(made)
    greedy_milli, greedy_pods = _score(greedy)
    placed = {a.pod for a in greedy}
    model_pods = [p for p in pods if _modelled(state, p[1])][: options.max_pods]
    modelled = {name for name, _ in model_pods}
    left = tuple(name for name, _ in pods if name not in modelled)

    def result(chosen: tuple[Assignment, ...], status: str, **extra: object) -> BatchResult:
        names = {a.pod for a in chosen}
        return BatchResult(
            assignments=chosen,
            pending=tuple(name for name, _ in pods if name not in names),
            greedy_milli=greedy_milli,
            greedy_pods=greedy_pods,
            placed_milli=_score(chosen)[0],
            status=status,
            total_s=time.perf_counter() - started,
            modelled=len(model_pods),
            left_to_greedy=left,
            **extra,  # type: ignore[arg-type]
        )

    fits = {name: _fits(placer, request, eligible.get(name)) for name, request in model_pods}
    waiting = [r for n, r in model_pods if n not in placed and fits[n].any()]
    if not waiting:
        return result(greedy, SKIPPED_COMPLETE)
    if _at_bound(state, model_pods, fits, greedy) and not any(r.is_cpu_only for r in waiting):
        return result(greedy, SKIPPED_BOUND)
    hint = {a.pod: a for a in greedy if a.pod in modelled}
    model = _BatchModel(placer, model_pods, fits, hint, options)
    status, solve_s, answer = model.solve()
    if answer is None:
        return result(greedy, status, solve_s=solve_s, fallback=True)
    with _trial(state) as made:
        try:
            for a in model.decode(answer):
                state.allocate(a)
                made.append(a)
        except (ValueError, RuntimeError):  # OverCommitError; a GPU choice that is not free
            made_ok = None
        else:
            made_ok = len(made)
            _greedy(placer, [p for p in pods if p[0] not in {a.pod for a in made}], made, eligible)
        chosen = tuple(made)
    if made_ok is None:
        return result(greedy, INVALID, solve_s=solve_s, fallback=True)
    solver_milli = _score(chosen[:made_ok])[0]
    if _score(chosen) <= (greedy_milli, greedy_pods):
        return result(greedy, status, solve_s=solve_s, fallback=True, solver_milli=solver_milli)
    return result(chosen, status, solve_s=solve_s, solver_milli=solver_milli)


def _fits(placer: Placer, request: Request, mask: np.ndarray | None) -> np.ndarray:
    fits = placer.fits(request)
    return fits if mask is None else fits & mask


@dataclass
class _Slot:
    """Where a fraction may sit on a node: an in-use GPU (`gpu`) or the b-th opened free GPU."""

    gpu: int | None
    bin: int | None
    var: cp_model.IntVar


class _BatchModel:
    """The CP-SAT model of one batch: per pod a node (or none), per fraction a GPU slot.

    Free GPUs of a node are interchangeable, so they are one count for whole-GPU pods plus
    `bins` opened one after another for fractions; GPUs already shared are modelled one by
    one (their free milli, GPU memory and sharer slots differ).
    """

    def __init__(
        self,
        placer: Placer,
        pods: Sequence[Pod],
        fits: dict[str, np.ndarray],
        hint: dict[str, Assignment],
        options: BatchOptions,
    ):
        self.placer, self.state, self.pods, self.options = placer, placer.state, list(pods), options
        self.fits = fits
        """Per pod: the nodes where it fits alone now (`Placer.fits`)."""
        self.model = cp_model.CpModel()
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}  # (pod, node) -> placed there
        self.slots: dict[tuple[int, int], list[_Slot]] = {}  # fractions: (pod, node) -> slots
        self.bins: dict[int, list[cp_model.IntVar]] = {}  # node -> opened free GPUs, in order
        self.hints: dict[cp_model.IntVar, int] = {}
        self.hint = hint
        self._build()

    def _candidates(self, name: str, request: Request, greedy_node: int | None) -> list[int]:
        """Where the pod fits alone now: the policy's best and the most free nodes, plus greedy's."""
        state, k = self.state, self.options.candidates
        feasible = np.flatnonzero(self.fits[name])
        if feasible.size <= 2 * k:
            return feasible.tolist()
        chosen: list[int] = [] if greedy_node is None else [greedy_node]
        policy = self.placer.policy
        if policy.pure and not request.is_cpu_only:
            scores = policy.normalize(policy.score(state, request, feasible))
            chosen += feasible[np.argsort(-scores, kind="stable")[:k]].tolist()
        if request.is_cpu_only:  # most free CPU; else most free GPU, then CPU
            roomiest = np.argsort(-state.cpu_left[feasible], kind="stable")
        else:
            roomiest = np.lexsort((-state.cpu_left[feasible], -state.gpu_total_left[feasible]))
        chosen += feasible[roomiest[:k]].tolist()
        return sorted(set(chosen))

    def _build(self) -> None:
        m = self.model
        weight = len(self.pods) + 1
        objective = []
        on_node: dict[int, list[int]] = {}
        for p, (name, request) in enumerate(self.pods):
            greedy = self.hint.get(name)
            nodes = self._candidates(name, request, None if greedy is None else greedy.node)
            for n in nodes:
                var = self.x[p, n] = m.new_bool_var(f"x{p}_{n}")
                self.hints[var] = int(greedy is not None and greedy.node == n)
                agree = int(self.options.agree_bonus and self.hints[var])
                objective.append(((request.total_gpu_milli * weight + 1) * weight + agree) * var)
                on_node.setdefault(n, []).append(p)
            m.add_at_most_one(self.x[p, n] for n in nodes)
        for n, members in on_node.items():
            self._node(n, members)
        m.maximize(sum(objective))
        for var, value in self.hints.items():
            m.add_hint(var, value)

    def _capacity(self, terms: list[tuple[int, cp_model.IntVar]], cap: int) -> None:
        """sum(coef * var) <= cap, left out when even all of them fit."""
        if sum(c for c, _ in terms) > cap:
            self.model.add(sum(c * v for c, v in terms) <= cap)

    def _node(self, n: int, members: list[int]) -> None:
        state = self.state
        reqs = [(p, self.pods[p][1]) for p in members]
        self._capacity([(r.cpu_milli, self.x[p, n]) for p, r in reqs], int(state.cpu_left[n]))
        self._capacity([(r.memory_mib, self.x[p, n]) for p, r in reqs], int(state.mem_left[n]))
        self._capacity([(1, self.x[p, n]) for p, _ in reqs], int(state.max_pods[n] - state.pod_count[n]))
        whole = [(p, r) for p, r in reqs if r.gpu_count and not r.is_fraction]
        fractions = [(p, r) for p, r in reqs if r.is_fraction]
        left = state.gpu_left[n, : state.gpu_count[n]]
        free = np.flatnonzero(left == MILLI_PER_GPU)
        shared = np.flatnonzero((left > 0) & (left < MILLI_PER_GPU))
        bins_wanted = sum(1 for _, r in fractions if free.size and fraction_fits(state, n, r)[free[0]])
        bins = self.bins[n] = [
            self.model.new_bool_var(f"open{n}_{b}") for b in range(min(free.size, bins_wanted))
        ]
        for a, b in itertools.pairwise(bins):
            self.model.add(a >= b)  # opened in order: no symmetric answers
        self._capacity(
            [(r.gpu_count, self.x[p, n]) for p, r in whole] + [(1, b) for b in bins], int(free.size)
        )
        per_gpu: dict[tuple[str, int], list[tuple[Request, cp_model.IntVar]]] = {}
        for p, r in fractions:
            fits = fraction_fits(state, n, r)
            slots = [
                _Slot(int(g), None, self.model.new_bool_var(f"y{p}_{n}_g{g}")) for g in shared if fits[g]
            ]
            if free.size and fits[free[0]]:
                slots += [_Slot(None, b, self.model.new_bool_var(f"y{p}_{n}_b{b}")) for b in range(len(bins))]
            self.model.add(sum(s.var for s in slots) == self.x[p, n])
            self.slots[p, n] = slots
            for s in slots:
                key = ("gpu", s.gpu) if s.gpu is not None else ("bin", s.bin)
                per_gpu.setdefault(key, []).append((r, s.var))  # type: ignore[arg-type]
        for (kind, i), users in per_gpu.items():
            gpu = i if kind == "gpu" else int(free[0])
            milli_cap = int(state.gpu_left[n, gpu]) if kind == "gpu" else MILLI_PER_GPU
            self._capacity([(r.gpu_milli, v) for r, v in users], milli_cap)
            self._capacity([(r.gpu_memory_mib, v) for r, v in users], int(state.gpu_mem_left[n, gpu]))
            sharers = int(state.sharer_cap[n, gpu] - state.gpu_sharers[n, gpu])
            self._capacity([(1, v) for _, v in users], sharers)
            if kind == "bin":
                for _, v in users:
                    self.model.add_implication(v, bins[i])
        self._hint_gpus(n, fractions, free, bins)

    def _hint_gpus(self, n: int, fractions: list[tuple[int, Request]], free: np.ndarray, bins: list) -> None:
        """Greedy's GPUs as slot hints: free GPUs numbered as bins in the order greedy opened them."""
        opened: dict[int, int] = {}
        free_set = set(free.tolist())
        for p, _ in fractions:
            for s in self.slots[p, n]:
                self.hints[s.var] = 0
            greedy = self.hint.get(self.pods[p][0])
            if greedy is None or greedy.node != n:
                continue
            g = greedy.gpus[0]
            if g in free_set:
                b = opened.setdefault(g, len(opened))
                match = [s for s in self.slots[p, n] if s.bin == b]
            else:
                match = [s for s in self.slots[p, n] if s.gpu == g]
            if match:
                self.hints[match[0].var] = 1
        for b, var in enumerate(bins):
            self.hints[var] = int(b < len(opened))

    def solve(self) -> tuple[str, float, cp_model.CpSolver | None]:
        """Run CP-SAT within the time limit: (status name, wall seconds, solver if it has an answer)."""
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.options.time_limit_s
        solver.parameters.num_workers = self.options.workers
        status = solver.solve(self.model)
        found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        return status.name, solver.wall_time, solver if found else None

    def decode(self, solver: cp_model.CpSolver) -> Iterator[Assignment]:
        """The answer as assignments, made while the caller allocates them one by one.

        Per node: whole-GPU pods first (the policy picks their GPUs among the free ones, as
        it would), then fractions on shared GPUs, then each opened bin on the lowest free
        GPU left.
        """
        state, policy = self.state, self.placer.policy
        chosen: dict[int, list[int]] = {}
        for (p, n), var in self.x.items():
            if solver.value(var):
                chosen.setdefault(n, []).append(p)
        for n in sorted(chosen):
            members = chosen[n]
            order = sorted(members, key=lambda p: (self.pods[p][1].is_fraction, p))
            bin_gpu: dict[int, int] = {}
            for p in order:
                name, request = self.pods[p]
                gpus: tuple[int, ...] = ()
                if request.is_fraction:
                    slot = next(s for s in self.slots[p, n] if solver.value(s.var))
                    if slot.gpu is not None:
                        gpus = (slot.gpu,)
                    else:
                        if slot.bin not in bin_gpu:
                            free = np.flatnonzero(state.gpu_left[n, : state.gpu_count[n]] == MILLI_PER_GPU)
                            taken = set(bin_gpu.values())
                            bin_gpu[slot.bin] = int(next(g for g in free if int(g) not in taken))  # type: ignore[index]
                        gpus = (bin_gpu[slot.bin],)  # type: ignore[index]
                elif request.gpu_count:
                    gpus = policy.choose_gpus(state, n, request)
                yield Assignment(pod=name, node=n, node_name=state.names[n], request=request, gpus=gpus)
