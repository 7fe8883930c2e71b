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
departure), in arrival order (FIFO; priority is not modelled). Nothing is
released during a pass, so once a request fails, any request that needs at
least as much of everything (same or more CPU, memory, GPUs and per-GPU
milli, an allowed-model set that is the same or narrower) fails too and is
skipped without a placement attempt. Identical requests are grouped, and
since the last complete pass only the released nodes gained capacity, so one
vectorised check of every pending request against those nodes (CPU, memory,
GPU model, per-node GPU summaries) picks the few requests worth trying; a pass
costs O(distinct pending requests) numpy work, not O(queue) Python work.
``retry_limit`` caps the placement attempts (full feasibility checks) per
pass; pods not reached wait for the next departure, and the released nodes
are remembered until a pass completes.

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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    Fragmentation,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    create_policy,
)
from placement.fit import feasible_mask, model_mask
from placement.migplace import MigChoice, MigChooser
from simulator.metrics import FragmentationRecorder
from simulator.migmetrics import MigFragmentationMeter, mig_demand
from simulator.replay import target_workload
from simulator.trace import PodRecord, Trace

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
    state: ClusterState | None = field(default=None, repr=False)

    @property
    def placed(self) -> int:
        return self.placed_immediately + self.placed_after_wait

    @property
    def never_placed(self) -> int:
        return self.timed_out + self.withdrawn + self.pending_at_end

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
        }

    def _mig_summary(self) -> dict[str, float]:
        frag = self.steps.mig_frag_slices
        if frag is None:
            return {}
        return {
            "mig_frag_slices_mean": self.steps.time_average(frag),
            "mig_frag_slices_peak": float(frag.max()) if len(frag) else 0.0,
        }


def _requirement(request: Request) -> tuple[int, int, int, int, frozenset[str] | None, str, int]:
    """(cpu, memory, GPU count, per-GPU milli, allowed models or None for any, MIG profile, MIG count)."""
    models = frozenset(m for m in request.gpu_models if m) or None
    return (
        request.cpu_milli,
        request.memory_mib,
        request.gpu_count,
        request.gpu_milli,
        models,
        request.mig_profile,
        request.mig_count,
    )


def _needs_at_least(big: tuple, small: tuple) -> bool:
    """True when `big` can fit only where `small` fits too (so `small` failing dooms `big`)."""
    cpu, mem, count, milli, models, profile, instances = big
    s_cpu, s_mem, s_count, s_milli, s_models, s_profile, s_instances = small
    if cpu < s_cpu or mem < s_mem:
        return False
    if s_instances or instances:  # MIG rooms are not ordered against milli-GPU: same profile only
        if s_instances == 0 and s_count == 0:
            return True
        if profile != s_profile or instances < s_instances:
            return False
        return s_models is None or (models is not None and models <= s_models)
    if s_count == 0:
        return True  # the small one needs no GPU: the big one needs cpu/memory/pod slot at least as much
    if count < s_count or milli < s_milli:
        return False
    return s_models is None or (models is not None and models <= s_models)


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


class _Queue:
    """Pending pods grouped by identical request; each group keeps arrival order.

    Every distinct request gets an id and a row in numpy arrays of its needs, so
    that a retry pass can find, in one vectorised step, the few requests that
    could possibly fit on the nodes released since they last did not fit.
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.groups: dict[Request, dict[str, int]] = {}  # request -> {pod: arrival seq}
        self.request_of: dict[str, Request] = {}
        self.since: dict[str, float] = {}  # pod -> creation time
        self.ids: dict[Request, int] = {}
        self.requests: list[Request] = []
        self.needs: list[tuple] = []  # per id: _requirement(request)
        self._grow(16)

    def _grow(self, rows: int) -> None:
        """(Re)allocate the per-id arrays with room for `rows` ids, keeping the filled rows."""
        used = len(self.requests)
        old = getattr(self, "waiting", None)
        fresh = {
            "waiting": np.zeros(rows, dtype=np.int64),  # pods pending per id
            "cpu": np.zeros(rows, dtype=np.int64),
            "mem": np.zeros(rows, dtype=np.int64),
            "count": np.zeros(rows, dtype=np.int64),
            "milli": np.zeros(rows, dtype=np.int64),
            "access": np.zeros((rows, len(self.state)), dtype=bool),  # GPU model allowed
        }
        for name, array in fresh.items():
            if old is not None:
                array[:used] = getattr(self, name)[:used]
            setattr(self, name, array)

    def __len__(self) -> int:
        return len(self.request_of)

    def __contains__(self, pod: str) -> bool:
        return pod in self.request_of

    def _id(self, request: Request) -> int:
        rid = self.ids.get(request)
        if rid is None:
            rid = self.ids[request] = len(self.requests)
            if rid >= len(self.waiting):
                self._grow(2 * len(self.waiting))
            self.requests.append(request)
            self.needs.append(_requirement(request))
            self.cpu[rid], self.mem[rid] = request.cpu_milli, request.memory_mib
            self.count[rid], self.milli[rid] = request.gpu_count, request.gpu_milli
            self.access[rid] = model_mask(self.state, request.gpu_models) if request.gpu_count else True
        return rid

    def push(self, pod: str, request: Request, seq: int, created: float) -> None:
        self.groups.setdefault(request, {})[pod] = seq
        self.request_of[pod] = request
        self.since[pod] = created
        rid = self._id(request)  # may regrow `waiting`, so it is looked up after this
        self.waiting[rid] += 1

    def remove(self, pod: str) -> float:
        request = self.request_of.pop(pod)
        group = self.groups[request]
        del group[pod]
        if not group:
            del self.groups[request]
        self.waiting[self.ids[request]] -= 1
        return self.since.pop(pod)

    def head(self, request: Request) -> tuple[int, str]:
        group = self.groups[request]
        pod = next(iter(group))
        return group[pod], pod

    def candidates(self, nodes: np.ndarray) -> np.ndarray:
        """Ids of pending requests that pass cheap necessary fit checks on one of `nodes`.

        CPU, memory, GPU model and the per-node GPU summaries are checked (looser
        than `placement.fit.feasible_mask`, which still decides); a request
        failing here cannot fit on any of `nodes`.
        """
        live = np.flatnonzero(self.waiting > 0)
        if live.size == 0 or nodes.size == 0:
            return live[:0]
        state = self.state
        count, milli = self.count[live], self.milli[live]
        ok = (self.cpu[live, None] <= state.cpu_left[nodes]) & (self.mem[live, None] <= state.mem_left[nodes])
        gpu_ok = np.where(
            (milli < MILLI_PER_GPU)[:, None],
            milli[:, None] <= state.gpu_max_left[nodes],
            count[:, None] <= state.gpu_free_count[nodes],
        )
        ok &= (count == 0)[:, None] | (gpu_ok & self.access[np.ix_(live, nodes)])
        return live[ok.any(axis=1)]


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
) -> TimedResult:
    """Replay `trace` in time with departures; see the module docstring for the rules.

    MIG requests are placed by `mig_choice` (`placement.migplace`); a placement that
    creates MIG instances (its assignment carries `MigPlan`s) holds its capacity at once
    but starts `mig_reconfig_s` later, the time the reconfiguration takes to apply.

    Nodes are in name order (score ties go to the lowest name); `seed` feeds the
    policy's random source (only the random policies use it). `progress(n)` is
    called with the number of newly processed arrivals (at the end of a step, once
    at least 1000 have accumulated, then the rest), so its total is the number
    of replayed pods.
    """
    if max_wait is not None and max_wait < 0:
        raise ValueError(f"max_wait must be >= 0 seconds or None, got {max_wait}")
    if retry_limit < 1:
        raise ValueError(f"retry_limit must be at least 1, got {retry_limit}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if mig_reconfig_s < 0:
        raise ValueError(f"mig_reconfig_s must be >= 0 seconds, got {mig_reconfig_s}")
    arrivals, departures, zero, skipped = _timeline(trace, on_missing_creation)

    state = ClusterState(sorted(trace.nodes, key=lambda n: n.name))
    target = target_workload(trace)
    demand = mig_demand(trace)
    placer = Placer(
        state,
        create_policy(policy, PolicyContext(rng=NumpyInts(seed), target=target)),
        MigChooser(mig_choice, demand),
    )
    queue = _Queue(state)
    expiries: list[tuple[float, int, str]] = []  # (deadline, arrival seq, pod)
    released: set[int] = set()  # nodes released since the last complete retry pass

    start_time: dict[str, float] = {}
    delays: list[float] = []
    outcome: dict[str, str] = {}
    reasons: dict[str, str] = {}
    counts = {"immediate": 0, "waited": 0, "timed_out": 0, "withdrawn": 0, "departures": 0}
    passes = attempts = 0

    # Fragmentation is evaluated after the run from snapshots of the nodes that changed
    # at each step; per step that costs one version compare.
    recorder = FragmentationRecorder(Fragmentation(target, state), state)
    mig_meter = MigFragmentationMeter(state, demand) if state.mig.capable.any() else None
    rows_mig_frag: list[float] = []
    seen_version = state.version.copy()
    rows_t: list[float] = []
    rows_alloc: list[int] = []
    rows_pending: list[int] = []
    rows_running: list[int] = []
    allocated = 0

    def start(pod: str, assignment: Assignment, now: float, created: float) -> None:
        nonlocal allocated
        state.allocate(assignment)
        allocated += assignment.request.total_gpu_milli
        if assignment.mig_plans:
            now += mig_reconfig_s
        start_time[pod] = now
        delays.append(now - created)
        outcome[pod] = PLACED

    def retry_pass(now: float) -> bool:
        """One FIFO pass over the pending requests that may fit now; False if cut by retry_limit."""
        nonlocal passes, attempts
        passes += 1
        # Since the last complete pass, only `released` nodes gained capacity, so a pending
        # request can fit now only on one of them (feasibility is monotone in free capacity).
        heap = []
        for rid in queue.candidates(np.fromiter(released, dtype=np.int64, count=len(released))):
            request = queue.requests[rid]
            heap.append((queue.head(request)[0], rid))
        heapq.heapify(heap)
        failed: list[tuple] = []
        tried = 0
        while heap and tried < retry_limit:
            _, rid = heapq.heappop(heap)
            need = queue.needs[rid]
            if any(_needs_at_least(need, f) for f in failed):
                continue
            request = queue.requests[rid]
            tried += 1
            if not feasible_mask(state, request).any():
                failed.append(need)
                continue
            _, pod = queue.head(request)
            decision = placer.place(pod, request)
            if not isinstance(decision, Assignment):  # cannot happen: the filter said it fits
                failed.append(need)
                continue
            created = queue.remove(pod)
            start(pod, decision, now, created)
            counts["waited"] += 1
            if request in queue.groups:
                heapq.heappush(heap, (queue.head(request)[0], rid))
        attempts += tried
        return not heap

    n_arr, n_dep = len(arrivals), len(departures)
    i = j = 0
    seq = 0
    reported = 0
    inf = math.inf
    while i < n_arr or j < n_dep or expiries:
        now = min(
            arrivals[i][0] if i < n_arr else inf,
            departures[j][0] if j < n_dep else inf,
            expiries[0][0] if expiries else inf,
        )
        # 1. departures
        freed = False
        while j < n_dep and departures[j][0] == now:
            pod = departures[j][1]
            j += 1
            if pod in state.live:
                gone = state.release(pod)
                allocated -= gone.request.total_gpu_milli
                released.add(gone.node)
                counts["departures"] += 1
                freed = True
            elif pod in queue:
                queue.remove(pod)
                outcome[pod] = WITHDRAWN
                counts["withdrawn"] += 1
        # 2. retries, only when capacity was freed
        if not len(queue) or (freed and retry_pass(now)):
            released.clear()  # every pending pod has been checked against all nodes since
        # 3. arrivals
        while i < n_arr and arrivals[i][0] == now:
            _, pod, record = arrivals[i]
            i += 1
            seq += 1
            decision = placer.place(pod, record.request)
            if isinstance(decision, Assignment):
                start(pod, decision, now, now)
                counts["immediate"] += 1
            else:
                queue.push(pod, record.request, seq, now)
                outcome[pod] = PENDING
                reasons[pod] = decision.message
                if max_wait is not None:
                    heapq.heappush(expiries, (now + max_wait, seq, pod))
        # 4. max-wait expiries (stale entries of pods already placed or withdrawn are dropped)
        while expiries and expiries[0][0] <= now:
            _, _, pod = heapq.heappop(expiries)
            if pod in queue:
                queue.remove(pod)
                outcome[pod] = TIMED_OUT
                counts["timed_out"] += 1
        # metrics of this step
        changed = np.flatnonzero(seen_version != state.version)
        if changed.size:
            seen_version[changed] = state.version[changed]
            recorder.record(len(rows_t), changed)
            if mig_meter is not None:
                mig_meter.update(changed)
        if mig_meter is not None:
            rows_mig_frag.append(mig_meter.total)
        rows_t.append(now)
        rows_alloc.append(allocated)
        rows_pending.append(len(queue))
        rows_running.append(len(state.live))
        if progress is not None and i - reported >= 1000:
            progress(i - reported)
            reported = i
    if progress is not None and i > reported:
        progress(i - reported)

    total_milli = state.total_gpu_milli
    assert allocated == state.allocated_gpu_milli, "allocation bookkeeping out of step with the state"
    rows_frag, rows_idle = recorder.totals(len(rows_t))
    steps = TimedSeries(
        time=np.array(rows_t, dtype=np.float64),
        allocated_milli=np.array(rows_alloc, dtype=np.int64),
        frag_milli=np.array(rows_frag, dtype=np.float64),
        idle_milli=np.array(rows_idle, dtype=np.float64),
        pending=np.array(rows_pending, dtype=np.int64),
        running=np.array(rows_running, dtype=np.int64),
        total_milli=total_milli,
        mig_frag_slices=np.array(rows_mig_frag, dtype=np.float64) if mig_meter is not None else None,
    )
    grid = steps.at(np.linspace(steps.time[0], steps.time[-1], samples)) if len(steps) else steps
    return TimedResult(
        workload=trace.name,
        policy=policy,
        seed=seed,
        max_wait=max_wait,
        total_gpus=total_milli // MILLI_PER_GPU,
        steps=steps,
        grid=grid,
        start_time=start_time,
        delays=np.array(delays, dtype=np.float64),
        outcome=outcome,
        reasons=reasons,
        placed_immediately=counts["immediate"],
        placed_after_wait=counts["waited"],
        timed_out=counts["timed_out"],
        withdrawn=counts["withdrawn"],
        pending_at_end=len(queue),
        zero_duration=zero,
        skipped_no_time=skipped,
        departures=counts["departures"],
        retry_passes=passes,
        retry_attempts=attempts,
        state=state,
    )
