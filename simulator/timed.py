"""Time-based replay with departures: a discrete-event engine over the placement core.

The other protocol next to `simulator.replay.run_inflation` (the FGD paper's
workload inflation, no departures). Here every pod arrives at its
``creation_time`` and leaves at its ``deletion_time``; a pod that does not fit
waits in a pending queue until capacity is released. Placement goes through
the same `placement.Placer` and `ClusterState.allocate/release` as the live
scheduler, never a copy of them.

Event order (deterministic). Events are grouped by timestamp; at one time `t`:

1. departures at `t`, by pod name: a running pod releases its allocation; a pod
   still pending is *withdrawn* (leaves the queue, counted separately); a pod
   that already timed out is ignored;
2. if anything was released: one retry pass over the pending queue (below);
3. arrivals at `t`, by pod name: each is placed at once if it fits, otherwise
   it joins the end of the queue (arrivals do not wait behind queued pods:
   like kube-scheduler, a new pod is tried even when older pods are
   unschedulable, so there is no head-of-line blocking);
4. max-wait expiries: pods pending since `t - max_wait` or earlier fail
   (*timed out*). A pod may thus still start when its wait equals `max_wait`
   exactly, and with ``max_wait=0`` a pod that does not fit on arrival fails.

Then the metrics are recorded for `t` (one *step*).

Retry pass. Pending pods are retried only when capacity was freed (a
departure), in arrival order (FIFO; priority is not modelled). Every question
is the placement core's own (`placement.checks`), asked of each kind of node
for the request as `Placer` translates it there (`placement.timeslice.routes`).
Identical requests are grouped, and since the last complete pass only the
released nodes gained capacity, so one vectorised check of every pending
request against those nodes (`simulator.pending`) picks the requests that fit,
and each placement re-asks only about the node it changed; a pass costs
O(distinct pending requests) numpy work, not O(queue) Python work.
Nothing is released during a pass, so once a request fails, any request that
needs at least as much in every check (`Placer.needs_at_least`: CPU, memory,
pod slot, GPU count, milli and GPU memory, models, MIG profile and count, on
every kind of node) fails too and is skipped without a placement attempt. The
outcome is that of retrying every pending pod at every event
(tests/simulator/test_timed_naive.py). ``retry_limit`` caps the placement attempts
(feasibility checks) per pass; pods not reached wait for the next departure,
and the released nodes are remembered until a pass completes.

Batch mode (``batch``: `placement.batch.BatchOptions`). The retry pass first takes the
head of the queue, the oldest ``max_pods`` pending pods that fit alone on a released
node, and decides them together (`placement.batch.place_batch`: CP-SAT, never worse
than the greedy order); then the greedy pass above runs over what is still pending.
Arrivals at one time are decided the same way before the per-arrival loop (which then
places or queues the rest). Without ``batch`` nothing of this runs.

Pods with ``deletion_time`` None run forever; a pod whose ``deletion_time``
equals its ``creation_time`` never occupies anything and is counted as
``zero_duration`` (skipped). Pods without ``creation_time`` are an error
unless ``on_missing_creation`` is ``"start"`` (they arrive at t=0, the trace
start) or ``"skip"`` (they are left out and counted).

Metrics. Ratios are fractions in [0, 1] (not %): allocation ratio = allocated
milli-GPU / total milli-GPU; fragmentation F is the FGD paper's, summed over
nodes under a target workload built from the trace's own pods (as in
`simulator.replay.target_workload`); fragmentation ratio = F / idle milli-GPU
(0 when nothing is idle). Time averages weight each step's value by the time
until the next step, over [first event, last event]. Queueing delay is
start - creation_time over placed pods (0 for pods placed on arrival); pods
never placed are censored and not in the delay statistics.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    Fragmentation,
    NumpyInts,
    Placer,
    PolicyContext,
    TargetWorkload,
    create_policy,
)
from tessellate.placement.batch import SKIPPED, BatchOptions, BatchResult, place_batch
from tessellate.placement.migplace import MigChoice, MigChooser
from tessellate.simulator.metrics import FragmentationRecorder
from tessellate.simulator.migmetrics import MigFragmentationMeter, mig_demand
from tessellate.simulator.pending import PendingQueue
from tessellate.simulator.replay import target_workload
from tessellate.simulator.trace import PodRecord, Trace

if TYPE_CHECKING:
    from tessellate.simulator.tenancy import TenancyResult

MissingCreation = Literal["error", "start", "skip"]

PLACED = "placed"
TIMED_OUT = "timed_out"
WITHDRAWN = "withdrawn"
PENDING = "pending"


@dataclass
class TimedSeries:
    """Cluster metrics over time: one row per step (or per grid sample)."""

    time: np.ndarray  # seconds from the trace start
    allocated_milli: np.ndarray  # int64
    frag_milli: np.ndarray
    idle_milli: np.ndarray
    pending: np.ndarray  # int64, queue length
    running: np.ndarray  # int64, placed pods still running
    total_milli: int
    mig_frag_slices: np.ndarray | None = None
    """MIG fragmentation summed over the GPUs in MIG mode (memory slices); None without MIG nodes."""

    def __len__(self) -> int:
        return len(self.time)

    @property
    def alloc_ratio(self) -> np.ndarray:
        if self.total_milli == 0:
            return np.zeros(len(self.time))
        return self.allocated_milli / self.total_milli

    @property
    def frag_ratio(self) -> np.ndarray:
        # Totals are running sums of per-node differences: a full cluster's idle is ~1e-12,
        # not 0, so "nothing idle" is anything below a millionth of a milli-GPU.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.idle_milli > 1e-6, self.frag_milli / self.idle_milli, 0.0)

    def at(self, times: np.ndarray) -> TimedSeries:
        """The step function's values at `times` (state after every event at or before it)."""
        rows = np.searchsorted(self.time, times, side="right") - 1
        rows = np.clip(rows, 0, len(self.time) - 1)
        return TimedSeries(
            time=np.asarray(times, dtype=np.float64),
            allocated_milli=self.allocated_milli[rows],
            frag_milli=self.frag_milli[rows],
            idle_milli=self.idle_milli[rows],
            pending=self.pending[rows],
            running=self.running[rows],
            total_milli=self.total_milli,
            mig_frag_slices=None if self.mig_frag_slices is None else self.mig_frag_slices[rows],
        )

    def time_weights(self) -> np.ndarray:
        """Each step's duration (until the next step); the last step lasts 0."""
        return np.diff(self.time, append=self.time[-1]) if len(self.time) else np.zeros(0)

    def time_average(self, values: np.ndarray) -> float:
        """Time-weighted mean of a per-step quantity; the last value when no time passes."""
        if len(values) == 0:
            return math.nan
        weights = self.time_weights()
        total = weights.sum()
        if total <= 0:
            return float(values[-1])
        return float((values * weights).sum() / total)


@dataclass
class TimedResult:
    """Everything one timed replay produced."""

    workload: str
    policy: str
    seed: int
    max_wait: float | None
    total_gpus: int
    steps: TimedSeries
    """One row per distinct event time, after all of that time's events."""
    grid: TimedSeries
    """`steps` sampled on a regular time grid (for plots)."""
    start_time: dict[str, float]
    """Placed pods: when they started."""
    delays: np.ndarray
    """Queueing delay (start - creation) of each placed pod, in placement order."""
    outcome: dict[str, str]
    """Every replayed pod: placed / timed_out / withdrawn / pending (still waiting at the end)."""
    reasons: dict[str, str]
    """Pods that did not fit on arrival: the scheduler's message at that moment."""
    placed_immediately: int = 0
    placed_after_wait: int = 0
    timed_out: int = 0
    withdrawn: int = 0
    pending_at_end: int = 0
    zero_duration: int = 0
    skipped_no_time: int = 0
    departures: int = 0
    """Departures of running pods processed (each one a `release`)."""
    retry_passes: int = 0
    retry_attempts: int = 0
    batch: BatchOptions | None = None
    batch_solves: list[BatchSolve] = field(default_factory=list)
    """Batch mode: one row per `place_batch` call (empty without batch mode)."""
    state: ClusterState | None = field(default=None, repr=False)
    tenancy: TenancyResult | None = field(default=None, repr=False)
    """Queue-aware replays (`simulator.queued`): per queue and GPU model; None otherwise."""

    @property
    def placed(self) -> int:
        return self.placed_immediately + self.placed_after_wait

    @property
    def never_placed(self) -> int:
        return self.timed_out + self.withdrawn + self.pending_at_end

    @property
    def gpu_hours(self) -> float:
        """Allocated GPU over the replay's span (the integral of allocated milli-GPU), in GPU-hours."""
        steps = self.steps
        return float((steps.allocated_milli * steps.time_weights()).sum()) / MILLI_PER_GPU / 3600

    def delay_percentile(self, q: float) -> float:
        return float(np.percentile(self.delays, q)) if len(self.delays) else 0.0

    def summary(self) -> dict[str, float]:
        """Flat numbers for tables (ratios are fractions; times are seconds)."""
        steps = self.steps
        return {
            "pods": float(len(self.outcome)),
            "placed_immediately": float(self.placed_immediately),
            "placed_after_wait": float(self.placed_after_wait),
            "never_placed": float(self.never_placed),
            "timed_out": float(self.timed_out),
            "withdrawn": float(self.withdrawn),
            "pending_at_end": float(self.pending_at_end),
            "zero_duration": float(self.zero_duration),
            "skipped_no_time": float(self.skipped_no_time),
            "delay_p50_s": self.delay_percentile(50),
            "delay_p95_s": self.delay_percentile(95),
            "delay_max_s": float(self.delays.max()) if len(self.delays) else 0.0,
            "delay_mean_s": float(self.delays.mean()) if len(self.delays) else 0.0,
            "alloc_ratio_mean": steps.time_average(steps.alloc_ratio),
            "alloc_ratio_peak": float(steps.alloc_ratio.max()) if len(steps) else 0.0,
            "frag_milli_mean": steps.time_average(steps.frag_milli),
            "frag_ratio_mean": steps.time_average(steps.frag_ratio),
            "pending_mean": steps.time_average(steps.pending),
            "pending_peak": float(steps.pending.max()) if len(steps) else 0.0,
            "running_mean": steps.time_average(steps.running),
            "running_peak": float(steps.running.max()) if len(steps) else 0.0,
            "departures": float(self.departures),
            "retry_passes": float(self.retry_passes),
            "retry_attempts": float(self.retry_attempts),
            "span_s": float(steps.time[-1] - steps.time[0]) if len(steps) else 0.0,
            **self._mig_summary(),
            **self._batch_summary(),
            **(self.tenancy.summary() if self.tenancy is not None else {}),
        }

    def _batch_summary(self) -> dict[str, float]:
        """Batch mode only (so a run without it reports exactly the columns it always did)."""
        if self.batch is None:
            return {}
        solved = [s for s in self.batch_solves if s.solved]
        times = np.array([s.solve_s for s in solved]) if solved else np.zeros(1)
        return {
            "gpu_hours": self.gpu_hours,
            "batch_calls": float(len(self.batch_solves)),
            "batch_solves": float(len(solved)),
            "batch_improved": float(sum(not s.fallback for s in solved)),
            "batch_fallbacks": float(sum(s.fallback for s in solved)),
            "batch_gain_milli": float(sum(s.placed_milli - s.greedy_milli for s in self.batch_solves)),
            "batch_solve_p50_s": float(np.percentile(times, 50)),
            "batch_solve_p95_s": float(np.percentile(times, 95)),
            "batch_solve_max_s": float(times.max()),
        }

    def _mig_summary(self) -> dict[str, float]:
        frag = self.steps.mig_frag_slices
        if frag is None:
            return {}
        return {
            "mig_frag_slices_mean": self.steps.time_average(frag),
            "mig_frag_slices_peak": float(frag.max()) if len(frag) else 0.0,
        }


@dataclass(frozen=True, slots=True)
class BatchSolve:
    """One `place_batch` call of a batch-mode replay (what benchmarks report)."""

    time: float
    where: Literal["retry", "arrivals"]
    pods: int
    status: str
    solve_s: float
    total_s: float
    fallback: bool
    greedy_milli: int
    placed_milli: int

    @property
    def solved(self) -> bool:
        return self.status not in SKIPPED

    @classmethod
    def of(cls, now: float, where: Literal["retry", "arrivals"], pods: int, r: BatchResult) -> BatchSolve:
        return cls(
            now, where, pods, r.status, r.solve_s, r.total_s, r.fallback, r.greedy_milli, r.placed_milli
        )


def _timeline(
    trace: Trace, on_missing_creation: MissingCreation
) -> tuple[list[tuple[float, str, PodRecord]], list[tuple[float, str]], int, int]:
    """Sorted arrivals and departures, plus the zero-duration and skipped counts."""
    if on_missing_creation not in ("error", "start", "skip"):
        raise ValueError(
            f"on_missing_creation must be 'error', 'start' or 'skip', got {on_missing_creation!r}"
        )
    missing = [p for p in trace.pods if p.creation_time is None]
    if missing and on_missing_creation == "error":
        raise ValueError(
            f"trace {trace.name!r}: {len(missing)} of {len(trace.pods)} pods have no creation_time "
            f"(first: {missing[0].name!r}); the timed replay needs arrival times. Use the inflation "
            "protocol (simulator.replay.run_inflation) for this trace, or pass "
            "on_missing_creation='start' (arrive at t=0) or 'skip' (leave them out)."
        )
    arrivals: list[tuple[float, str, PodRecord]] = []
    departures: list[tuple[float, str]] = []
    names: set[str] = set()
    zero = skipped = 0
    for pod in trace.pods:
        if pod.name in names:
            raise ValueError(f"trace {trace.name!r}: duplicate pod name {pod.name!r}")
        names.add(pod.name)
        created = pod.creation_time
        if created is None:
            if on_missing_creation == "skip":
                skipped += 1
                continue
            created = 0.0
        deleted = pod.deletion_time
        if deleted is not None:
            if deleted < created:
                raise ValueError(
                    f"trace {trace.name!r}: pod {pod.name!r} deleted ({deleted:g}) "
                    f"before created ({created:g})"
                )
            if deleted == created:
                zero += 1
                continue
            departures.append((float(deleted), pod.name))
        arrivals.append((float(created), pod.name, pod))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    departures.sort()
    return arrivals, departures, zero, skipped


class _Steps:
    """The per-step rows of `TimedSeries`; fragmentation from snapshots of the nodes that
    changed (one version compare per step), evaluated in batches at the end. Without
    `fragmentation` none of that is done and the series' F and idle are NaN."""

    def __init__(
        self,
        state: ClusterState,
        target: TargetWorkload,
        demand: dict[str, float] | None,
        fragmentation: bool = True,
    ):
        self.state = state
        self.recorder = FragmentationRecorder(Fragmentation(target, state), state) if fragmentation else None
        self.mig_meter = MigFragmentationMeter(state, demand) if state.mig.capable.any() else None
        self.seen_version = state.version.copy()
        self.time: list[float] = []
        self.allocated: list[int] = []
        self.pending: list[int] = []
        self.running: list[int] = []
        self.mig_frag: list[float] = []

    def record(self, now: float, allocated: int, pending: int) -> None:
        state = self.state
        changed = np.flatnonzero(self.seen_version != state.version)
        if changed.size:
            self.seen_version[changed] = state.version[changed]
            if self.recorder is not None:
                self.recorder.record(len(self.time), changed)
            if self.mig_meter is not None:
                self.mig_meter.update(changed)
        if self.mig_meter is not None:
            self.mig_frag.append(self.mig_meter.total)
        self.time.append(now)
        self.allocated.append(allocated)
        self.pending.append(pending)
        self.running.append(len(state.live))

    def series(self) -> TimedSeries:
        if self.recorder is not None:
            frag, idle = self.recorder.totals(len(self.time))
        else:
            frag = idle = np.full(len(self.time), np.nan)
        return TimedSeries(
            time=np.array(self.time, dtype=np.float64),
            allocated_milli=np.array(self.allocated, dtype=np.int64),
            frag_milli=np.array(frag, dtype=np.float64),
            idle_milli=np.array(idle, dtype=np.float64),
            pending=np.array(self.pending, dtype=np.int64),
            running=np.array(self.running, dtype=np.int64),
            total_milli=self.state.total_gpu_milli,
            mig_frag_slices=np.array(self.mig_frag, dtype=np.float64) if self.mig_meter is not None else None,
        )


class TimedReplay:
    """One timed replay of a trace: the cluster, its pending queue and what happened so far.

    `run` processes the event times in order; each `step` is departures, a retry
    pass, arrivals and expiries, as the module docstring lays out.
    """

    def __init__(
        self,
        trace: Trace,
        policy: str,
        seed: int = 0,
        *,
        max_wait: float | None = None,
        retry_limit: int = 1000,
        samples: int = 200,
        on_missing_creation: MissingCreation = "error",
        mig_choice: MigChoice = "aware",
        mig_reconfig_s: float = 0.0,
        batch: BatchOptions | None = None,
        speeds: Mapping[str, float] | None = None,
        fragmentation: bool = True,
    ) -> None:
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds or None, got {max_wait}")
        if retry_limit < 1:
            raise ValueError(f"retry_limit must be at least 1, got {retry_limit}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        if mig_reconfig_s < 0:
            raise ValueError(f"mig_reconfig_s must be >= 0 seconds, got {mig_reconfig_s}")
        self.trace, self.policy, self.seed = trace, policy, seed
        self.max_wait, self.retry_limit, self.samples = max_wait, retry_limit, samples
        self.mig_reconfig_s = mig_reconfig_s
        self.batch = batch
        self.batch_solves: list[BatchSolve] = []
        self.arrivals, self.departures, self.zero_duration, self.skipped = _timeline(
            trace, on_missing_creation
        )
        self.state = ClusterState(sorted(trace.nodes, key=lambda n: n.name))
        self.speeds = speeds
        self.runtime: dict[str, float] = {}
        self.ends: list[tuple[float, str]] = []  # speeds mode: (departure, pod) of running pods
        if speeds is not None:  # a pod runs for its trace lifetime / the speed where it starts
            self.runtime = {
                pod: r.deletion_time - t for t, pod, r in self.arrivals if r.deletion_time is not None
            }
            self.departures = []
        target, demand = target_workload(trace), mig_demand(trace)
        self.placer = Placer(
            self.state,
            create_policy(policy, PolicyContext(rng=NumpyInts(seed), target=target)),
            MigChooser(mig_choice, demand),
        )
        self.queue = PendingQueue(self.placer)
        self.expiries: list[tuple[float, int, str]] = []  # (deadline, arrival seq, pod)
        self.released: set[int] = set()  # nodes released since the last complete retry pass
        self.steps = _Steps(self.state, target, demand, fragmentation)
        self.start_time: dict[str, float] = {}
        self.delays: list[float] = []
        self.outcome: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.allocated = 0  # milli-GPU held by running pods
        self.placed_immediately = self.placed_after_wait = self.timed_out = self.withdrawn = 0
        self.departed = self.retry_passes = self.retry_attempts = 0
        self._arrived = self._departed_idx = self._seq = 0

    def run(self, progress: Callable[[int], None] | None = None) -> TimedResult:
        """Replay every event; `progress(n)` as in `run_timed`."""
        reported = 0
        while (now := self._next_time()) is not None:
            self.step(now)
            if progress is not None and self._arrived - reported >= 1000:
                progress(self._arrived - reported)
                reported = self._arrived
        if progress is not None and self._arrived > reported:
            progress(self._arrived - reported)
        assert self.allocated == self.state.allocated_gpu_milli, "allocation bookkeeping out of step"
        return self._result()

    def _next_time(self) -> float | None:
        """The earliest pending arrival, departure or expiry; None when nothing is left."""
        inf = math.inf
        now = min(
            self.arrivals[self._arrived][0] if self._arrived < len(self.arrivals) else inf,
            self.departures[self._departed_idx][0] if self._departed_idx < len(self.departures) else inf,
            self.expiries[0][0] if self.expiries else inf,
            self.ends[0][0] if self.ends else inf,
        )
        return None if now == inf else now

    def step(self, now: float) -> None:
        """Everything that happens at `now`, then one row of metrics."""
        freed = self._depart(now)
        if not len(self.queue) or (freed and self._retry_pass(now)):
            self.released.clear()  # every pending pod has been checked against all nodes since
        self._arrive(now)
        self._expire(now)
        self.steps.record(now, self.allocated, len(self.queue))

    def _depart(self, now: float) -> bool:
        """Departures at `now`: running pods release, pending ones are withdrawn. True if any released."""
        freed = False
        while self._departed_idx < len(self.departures) and self.departures[self._departed_idx][0] == now:
            pod = self.departures[self._departed_idx][1]
            self._departed_idx += 1
            if pod in self.state.live:
                gone = self.state.release(pod)
                self.allocated -= gone.request.total_gpu_milli
                self.released.add(gone.node)
                self.departed += 1
                freed = True
            elif pod in self.queue:
                self.queue.remove(pod)
                self.outcome[pod] = WITHDRAWN
                self.withdrawn += 1
        while self.ends and self.ends[0][0] == now:  # speeds mode: runtimes end
            gone = self.state.release(heapq.heappop(self.ends)[1])
            self.allocated -= gone.request.total_gpu_milli
            self.released.add(gone.node)
            self.departed += 1
            freed = True
        return freed

    def _retry_pass(self, now: float) -> bool:
        """One FIFO pass over the pending requests that fit now; False if cut by `retry_limit`.

        Since the last complete pass only the released nodes gained capacity, so a pending
        request fits now only on one of them; nothing is released during the pass, so a
        request that failed dooms every request that needs at least as much.
        """
        self.retry_passes += 1
        queue = self.queue
        released = np.fromiter(sorted(self.released), dtype=np.int64, count=len(self.released))
        if self.batch is not None:
            self._batch_head(now, released)
        heap = [(queue.head(queue.requests[rid])[0], int(rid)) for rid in queue.open_pass(released)]
        heapq.heapify(heap)
        failed: list[int] = []
        tried = 0
        while heap and tried < self.retry_limit:
            _, rid = heapq.heappop(heap)
            if queue.doomed(rid, failed):
                continue
            request = queue.requests[rid]
            tried += 1
            if not queue.fits(rid):
                failed.append(rid)
                continue
            _, pod = queue.head(request)
            decision = self.placer.place(pod, request)
            if not isinstance(decision, Assignment):  # cannot happen: the queue said it fits
                failed.append(rid)
                continue
            self._start(pod, decision, now, queue.remove(pod))
            queue.changed(decision.node)
            self.placed_after_wait += 1
            if request in queue.groups:
                heapq.heappush(heap, (queue.head(request)[0], rid))
        self.retry_attempts += tried
        return not heap

    def _batch_head(self, now: float, released: np.ndarray) -> None:
        """Batch mode: the oldest pending pods that fit alone on a released node, decided together."""
        queue = self.queue
        groups = [queue.groups[queue.requests[rid]] for rid in queue.open_pass(released).tolist()]
        oldest = heapq.merge(*(g.items() for g in groups), key=lambda item: item[1])
        pods = [(pod, queue.request_of[pod]) for pod, _ in itertools.islice(oldest, self.batch.max_pods)]  # type: ignore[union-attr]
        if len(pods) < 2:
            return  # one pod: the greedy pass decides it as well as any batch
        result = place_batch(self.placer, pods, self.batch)
        self.batch_solves.append(BatchSolve.of(now, "retry", len(pods), result))
        for assignment in result.assignments:
            self._start(assignment.pod, assignment, now, queue.remove(assignment.pod))
            self.placed_after_wait += 1

    def _batch_arrivals(self, now: float) -> None:
        """Batch mode: this time's arrivals decided together (the loop in `_arrive` counts them)."""
        end = self._arrived
        while end < len(self.arrivals) and self.arrivals[end][0] == now:
            end += 1
        burst = self.arrivals[self._arrived : end]
        size = self.batch.max_pods  # type: ignore[union-attr]
        for first in range(0, len(burst) if len(burst) >= 2 else 0, size):
            pods = [(pod, record.request) for _, pod, record in burst[first : first + size]]
            if len(pods) < 2:
                break
            result = place_batch(self.placer, pods, self.batch)
            self.batch_solves.append(BatchSolve.of(now, "arrivals", len(pods), result))
            for assignment in result.assignments:
                self._start(assignment.pod, assignment, now, now)

    def _arrive(self, now: float) -> None:
        """Arrivals at `now`, by name: placed at once if they fit, else queued."""
        if self.batch is not None:
            self._batch_arrivals(now)
        while self._arrived < len(self.arrivals) and self.arrivals[self._arrived][0] == now:
            _, pod, record = self.arrivals[self._arrived]
            self._arrived += 1
            self._seq += 1
            if self.batch is not None and pod in self.start_time:  # placed by `_batch_arrivals`
                self.placed_immediately += 1
                continue
            decision = self.placer.place(pod, record.request)
            if isinstance(decision, Assignment):
                self._start(pod, decision, now, now)
                self.placed_immediately += 1
                continue
            self.queue.push(pod, record.request, self._seq, now)
            self.outcome[pod] = PENDING
            self.reasons[pod] = decision.message
            if self.max_wait is not None:
                heapq.heappush(self.expiries, (now + self.max_wait, self._seq, pod))

    def _expire(self, now: float) -> None:
        """Pods pending for `max_wait` fail (stale entries of pods placed or withdrawn are dropped)."""
        while self.expiries and self.expiries[0][0] <= now:
            _, _, pod = heapq.heappop(self.expiries)
            if pod in self.queue:
                self.queue.remove(pod)
                self.outcome[pod] = TIMED_OUT
                self.timed_out += 1

    def _start(self, pod: str, assignment: Assignment, now: float, created: float) -> None:
        self.state.allocate(assignment)
        self.allocated += assignment.request.total_gpu_milli
        if assignment.mig_plans:
            now += self.mig_reconfig_s
        self.start_time[pod] = now
        self.delays.append(now - created)
        self.outcome[pod] = PLACED
        if self.speeds is not None and pod in self.runtime:
            node = self.state.nodes[assignment.node]
            gpu = node.gpu_count > 0 and assignment.request.total_gpu_milli > 0
            speed = self.speeds.get(node.gpu_model, 1.0) if gpu else 1.0
            heapq.heappush(self.ends, (now + self.runtime[pod] / speed, pod))

    def _result(self) -> TimedResult:
        steps = self.steps.series()
        grid = steps.at(np.linspace(steps.time[0], steps.time[-1], self.samples)) if len(steps) else steps
        return TimedResult(
            workload=self.trace.name,
            policy=self.policy,
            seed=self.seed,
            max_wait=self.max_wait,
            total_gpus=steps.total_milli // MILLI_PER_GPU,
            steps=steps,
            grid=grid,
            start_time=self.start_time,
            delays=np.array(self.delays, dtype=np.float64),
            outcome=self.outcome,
            reasons=self.reasons,
            placed_immediately=self.placed_immediately,
            placed_after_wait=self.placed_after_wait,
            timed_out=self.timed_out,
            withdrawn=self.withdrawn,
            pending_at_end=len(self.queue),
            zero_duration=self.zero_duration,
            skipped_no_time=self.skipped,
            departures=self.departed,
            retry_passes=self.retry_passes,
            retry_attempts=self.retry_attempts,
            batch=self.batch,
            batch_solves=self.batch_solves,
            state=self.state,
        )


def run_timed(
    trace: Trace,
    policy: str,
    seed: int = 0,
    *,
    max_wait: float | None = None,
    retry_limit: int = 1000,
    samples: int = 200,
    progress: Callable[[int], None] | None = None,
    on_missing_creation: MissingCreation = "error",
    mig_choice: MigChoice = "aware",
    mig_reconfig_s: float = 0.0,
    batch: BatchOptions | None = None,
    speeds: Mapping[str, float] | None = None,
    fragmentation: bool = True,
) -> TimedResult:
    """Replay `trace` in time with departures; see the module docstring for the rules.

    With `speeds` (relative speed per GPU model, capacity planning): a pod's trace lifetime
    (deletion - creation) is its runtime on a speed-1 GPU; it departs that long divided by
    the speed of the model it started on after it starts (CPU-only: speed 1), so a pending
    pod is never withdrawn: it waits until placed (or `max_wait`).

    MIG requests are placed by `mig_choice` (`placement.migplace`); a placement that
    creates MIG instances (its assignment carries `MigPlan`s) holds its capacity at once
    but starts `mig_reconfig_s` later, the time the reconfiguration takes to apply.
    With `batch`, pending heads and arrival bursts are decided together (module docstring).
    `fragmentation=False` skips the fragmentation series (F and idle are NaN in `steps` and
    `grid`), for callers that read only placements and waits: capacity planning.

    Nodes are in name order (score ties go to the lowest name); `seed` feeds the
    policy's random source (only the random policies use it). `progress(n)` is
    called with the number of newly processed arrivals (at the end of a step, once
    at least 1000 have accumulated, then the rest), so its total is the number
    of replayed pods.
    """
    replay = TimedReplay(
        trace,
        policy,
        seed,
        max_wait=max_wait,
        retry_limit=retry_limit,
        samples=samples,
        on_missing_creation=on_missing_creation,
        mig_choice=mig_choice,
        mig_reconfig_s=mig_reconfig_s,
        batch=batch,
        speeds=speeds,
        fragmentation=fragmentation,
    )
    return replay.run(progress)
