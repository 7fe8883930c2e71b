"""The timed replay with queues, quotas, reclaim and pod groups (docs/queues.md).

Same events as `simulator.timed` (departures, then placement, then expiries, one
metrics row per time), but pods belong to queues (`PodRecord.queue`, a leaf of the
`QueueTree`; empty: `default`) and every decision goes through `placement.quota`:

- Pending pods are tried queue by queue, the queue furthest below its fair share first
  (`QuotaBook.queue_key`, re-ranked after each attempt), within a queue by priority, then
  arrival. Arrivals join the pending pods and are tried in the same step (a pod placed
  in the step it arrived counts as placed immediately). When nothing was released, only
  the step's arrivals are tried: nothing that failed before can fit now.
- A queue's limits are a node mask for `Placer.place` (`quota_mask`): no queue ever holds
  more than its limit; a pod blocked only by a limit waits with the limit message.
- A pod that does not fit and would stay within its queue's quota reclaims: the core picks
  over-quota pods to preempt (`QueuedPlacer.reclaim_for`, lowest priority then youngest,
  the fewest needed); they go back to pending (keeping their arrival order and their
  trace deletion time: the work they did is lost) and the pod starts.
- Pods of a `pod_group` start together (`placement.gang.place_together` through
  `QueuedPlacer.place_group`) once at least `pod_group_min` members (default: all the
  group's pods in the trace) are pending or running; members arriving later join a
  running group one by one. Preempting one member preempts its whole group.

- A pod that still does not fit preempts lower-priority pods of its own queue, as the live
  scheduler does (`QueuedPlacer.preempt_for`: the same victim search,
  `placement.preemption`, lowest priority then youngest, the fewest needed).

Not modelled here: reclaim or priority preemption on behalf of a pod group (a group waits
for idle capacity), batch mode.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement import Assignment, Request
from tessellate.placement.quota import (
    QueueTree,
    QuotaBook,
    UnknownQueueError,
    blocking_messages,
    gpu_capacity,
    quota_mask,
)
from tessellate.placement.quota.admit import QueuedPlacer
from tessellate.simulator.tenancy import ReclaimEvent, TenancyRecorder
from tessellate.simulator.timed import PENDING, PLACED, TIMED_OUT, WITHDRAWN, TimedReplay, TimedResult
from tessellate.simulator.trace import PodRecord, Trace, TraceError

PREEMPTED = "preempted"
"""Outcome of a pod that ran, was preempted by reclaim and never started again."""
MAX_REPASSES = 3
"""Extra passes in one step after a reclaim freed more than its pod needed."""


@dataclass(slots=True)
class _Pending:
    record: PodRecord
    queue: str | None
    """None: the pod names no existing leaf queue; it waits and is never tried."""
    seq: int
    since: float
    deadline: float | None = None


Entry = tuple[str, str]
"""("pod", name) or ("group", name): what a queue tries in one attempt."""


class _Pods:
    """The pending pods: per queue the entries to try, their demand for fair shares."""

    def __init__(self, replay: QueuedTimedReplay) -> None:
        self.replay = replay
        self.pods: dict[str, _Pending] = {}
        self.entries: dict[str, dict[Entry, tuple[int, int]]] = {}  # queue -> entry -> (-priority, seq)
        self.group_pending: dict[str, dict[str, None]] = {}
        self.units: dict[tuple[str, str], Fraction] = {}
        self.count: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.pods)

    def __contains__(self, pod: object) -> bool:
        return pod in self.pods

    def push(self, p: _Pending) -> Entry | None:
        self.pods[p.record.name] = p
        if p.queue is None:
            return None
        self.count[p.queue] = self.count.get(p.queue, 0) + 1
        self._demand(p, +1)
        group = p.record.pod_group
        key = (-p.record.priority, p.seq)
        if not group:
            entry: Entry = ("pod", p.record.name)
        else:
            entry = ("group", group)
            self.group_pending.setdefault(group, {})[p.record.name] = None
            key = min(key, self.entries.get(p.queue, {}).get(entry, key))
        self.entries.setdefault(p.queue, {})[entry] = key
        return entry

    def remove(self, pod: str) -> _Pending:
        p = self.pods.pop(pod)
        if p.queue is None:
            return p
        self.count[p.queue] -= 1
        self._demand(p, -1)
        entries = self.entries[p.queue]
        group = p.record.pod_group
        if not group:
            del entries[("pod", pod)]
        else:
            members = self.group_pending[group]
            del members[pod]
            if not members:
                del self.group_pending[group]
                del entries[("group", group)]
        return p

    def _demand(self, p: _Pending, sign: int) -> None:
        for model, units in self.replay.qp.kinds.demand(p.record.request).items():
            key = (p.queue, model)
            self.units[key] = self.units.get(key, Fraction(0)) + sign * units  # type: ignore[index]


class QueuedTimedReplay(TimedReplay):
    """`TimedReplay` with queues (module docstring); `queues` None: every pod in `default`."""

    def __init__(
        self,
        trace: Trace,
        policy: str,
        seed: int = 0,
        *,
        queues: QueueTree | None = None,
        reclaim: bool = True,
        reclaim_limit: int = 100,
        **options,
    ) -> None:
        if options.get("batch") is not None:
            raise ValueError("batch mode does not combine with queues; drop one of them")
        super().__init__(trace, policy, seed, **options)
        self.tree = queues if queues is not None else QueueTree([])
        self.book = QuotaBook(self.tree, gpu_capacity(self.state))
        self.qp = QueuedPlacer(self.placer, self.book)
        self.reclaim_enabled, self.reclaim_limit = reclaim, reclaim_limit
        self.queue = _Pods(self)  # type: ignore[assignment]
        self.pods: _Pods = self.queue  # type: ignore[assignment]
        times = [a[0] for a in self.arrivals[:1]] + [d[0] for d in self.departures[-1:]]
        span = max(times) - min(times) if times else 0.0
        self.tenancy = TenancyRecorder(self.book, min_interval=span / (4 * self.samples))
        self.group_min = _group_minimums(trace)
        self.group_running: dict[str, set[str]] = {}
        self.records = {p.name: p for p in trace.pods}
        self.seq_of: dict[str, int] = {}
        self.queue_of: dict[str, str] = {}
        self.started_once: set[str] = set()
        self.delays_by_queue: dict[str, list[float]] = {}
        self.reclaim_events: list[ReclaimEvent] = []
        self.priority_preemptions = 0
        """Pods started by preempting lower-priority pods of their own queue."""
        self.priorities_vary = len({pod.priority for pod in trace.pods}) > 1
        """Without two priorities no pod can preempt another: the search is skipped."""
        self.preempted: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.restarted = self.groups_started = self.group_rollbacks = 0
        self._fresh: list[tuple[str, Entry]] = []
        self._changed = True

    # -- one step ---------------------------------------------------------------------------

    def step(self, now: float) -> None:
        freed = self._depart(now)
        self._arrive(now)
        full = freed
        for _ in range(1 + MAX_REPASSES):
            if not self._pass(now, full):
                break
            full = True  # a reclaim may have freed more than its pod took
        self._fresh.clear()
        self._expire(now)
        self.steps.record(now, self.allocated, len(self.pods))
        self.tenancy.record(now, self.pods.units, self.pods.count, self._changed)
        self._changed = False

    def _depart(self, now: float) -> bool:
        freed = False
        while self._departed_idx < len(self.departures) and self.departures[self._departed_idx][0] == now:
            pod = self.departures[self._departed_idx][1]
            self._departed_idx += 1
            if pod in self.state.live:
                self._stop(pod)
                self.departed += 1
                freed = True
            elif pod in self.pods:
                self.pods.remove(pod)
                if pod in self.started_once:
                    self.outcome[pod] = PREEMPTED
                else:
                    self.outcome[pod] = WITHDRAWN
                    self.withdrawn += 1
                self._changed = True
        return freed

    def _stop(self, pod: str) -> Assignment:
        gone = self.qp.release(pod)
        self.allocated -= gone.request.total_gpu_milli
        group = self.trace_pod(pod).pod_group
        if group:
            self.group_running[group].discard(pod)
        self._changed = True
        return gone

    def trace_pod(self, pod: str) -> PodRecord:
        return self.records[pod]

    def _arrive(self, now: float) -> None:  # type: ignore[override]
        while self._arrived < len(self.arrivals) and self.arrivals[self._arrived][0] == now:
            _, pod, record = self.arrivals[self._arrived]
            self._arrived += 1
            self._seq += 1
            self.seq_of[pod] = self._seq
            try:
                queue: str | None = self.tree.leaf_for(record.queue)
            except UnknownQueueError as exc:
                queue = None
                self.unknown[record.queue] = self.unknown.get(record.queue, 0) + 1
                self.reasons[pod] = str(exc)
            if queue is not None:
                self.queue_of[pod] = queue
            deadline = None if self.max_wait is None else now + self.max_wait
            entry = self.pods.push(_Pending(record, queue, self._seq, now, deadline))
            self.outcome[pod] = PENDING
            if deadline is not None:
                heapq.heappush(self.expiries, (deadline, self._seq, pod))
            if entry is not None:
                self._fresh.append((queue, entry))  # type: ignore[arg-type]
            self._changed = True

    def _expire(self, now: float) -> None:
        while self.expiries and self.expiries[0][0] <= now:
            deadline, _, pod = heapq.heappop(self.expiries)
            p = self.pods.pods.get(pod)
            if p is None or p.deadline != deadline:
                continue  # placed, withdrawn, or requeued since with a new deadline
            self.pods.remove(pod)
            if pod in self.started_once:
                self.outcome[pod] = PREEMPTED
            else:
                self.outcome[pod] = TIMED_OUT
                self.timed_out += 1
            self._changed = True

    # -- the pass -----------------------------------------------------------------------------

    def _candidates(self, full: bool) -> dict[str, Iterator[Entry]]:
        """Per queue the entries to try, in priority-then-arrival order."""
        if full:
            chosen = {q: sorted(e.items(), key=lambda kv: kv[1]) for q, e in self.pods.entries.items() if e}
            return {q: (entry for entry, _ in items) for q, items in chosen.items()}
        fresh: dict[str, dict[Entry, tuple[int, int]]] = {}
        for queue, entry in self._fresh:
            key = self.pods.entries.get(queue, {}).get(entry)
            if key is not None:
                fresh.setdefault(queue, {})[entry] = key
        return {q: (e for e, _ in sorted(items.items(), key=lambda kv: kv[1])) for q, items in fresh.items()}

    def _pass(self, now: float, full: bool) -> bool:
        """Try the candidates queue by queue in the core's order; True if a reclaim happened."""
        candidates = self._candidates(full)
        if not candidates:
            return False
        if full:
            self.retry_passes += 1
        single = len(candidates) == 1  # one queue: its own order is all there is to decide
        fair = {} if single else self.book.fair_shares(self.pods.units)
        models = self.book.models

        def rank(q: str) -> tuple:
            return () if single else self.book.queue_key(q, fair, models)

        heap = [(rank(q), q) for q in candidates]
        heapq.heapify(heap)
        failed: list[Request] = []
        reclaim_tried: set[tuple] = set()
        reclaimed = False
        while heap:
            _, queue = heapq.heappop(heap)
            entry = next(candidates[queue], None)
            if entry is None:
                continue
            kind, name = entry
            if kind == "pod":
                if name in self.pods:
                    reclaimed |= self._try_pod(name, queue, now, failed, reclaim_tried)
            elif name in self.pods.group_pending:
                self._try_group(name, queue, now)
            heapq.heappush(heap, (rank(queue), queue))
        return reclaimed

    def _try_pod(
        self, pod: str, queue: str, now: float, failed: list[Request], reclaim_tried: set[tuple]
    ) -> bool:
        """One attempt; True if it reclaimed capacity."""
        p = self.pods.pods[pod]
        request = p.record.request
        self.retry_attempts += 1
        mask = quota_mask(self.book, self.qp.kinds, queue, request)
        if mask is not None and not mask.any():
            if pod not in self.reasons:
                self.reasons[pod] = blocking_messages(self.book, self.qp.kinds, queue, request)[0]
            return False
        doomed = (
            mask is None
            and pod in self.reasons
            and any(self.placer.needs_at_least(request, small) for small in failed)
        )
        decision = None if doomed else self.placer.place(pod, request, mask)
        if isinstance(decision, Assignment):
            self._begin(pod, queue, decision, now)
            return False
        if mask is None and not doomed:
            failed.append(request)
        if decision is not None and pod not in self.reasons:
            self.reasons[pod] = self.qp.why(queue, request, mask, decision).message
        if len(reclaim_tried) >= self.reclaim_limit:
            return False
        if self._try_reclaim(pod, queue, request, now, failed, reclaim_tried):
            return True
        return self._try_priority(pod, queue, request, now, failed, reclaim_tried)

    def _try_priority(
        self, pod: str, queue: str, request: Request, now: float, failed: list[Request], tried: set
    ) -> bool:
        """Priority preemption within the pod's queue (`QueuedPlacer.preempt_for`); True if it
        preempted."""
        priority = self.pods.pods[pod].record.priority
        key = ("priority", queue, request, priority)
        if not self.priorities_vary or key in tried:
            return False
        if not any(c.priority < priority for c in self.book.pods_of(queue)):
            return False
        tried.add(key)
        victims = self.qp.preempt_for(queue, request, priority)
        if victims is None:
            return False
        self._preempt([v.pod for v in victims.pods], now)
        self.priority_preemptions += 1
        failed.clear()  # capacity was freed: what failed before may fit now
        decision = self.placer.place(pod, request, quota_mask(self.book, self.qp.kinds, queue, request))
        if isinstance(decision, Assignment):
            self._begin(pod, queue, decision, now)
        return True

    def _try_reclaim(
        self, pod: str, queue: str, request: Request, now: float, failed: list[Request], reclaim_tried: set
    ) -> bool:
        """Reclaim for a pod within its queue's quota; True if it preempted."""
        if not self.reclaim_enabled or (queue, request) in reclaim_tried:
            return False
        if not any(self.book.within_quota(queue, m, u) for m, u in self.qp.kinds.demand(request).items()):
            return False
        reclaim_tried.add((queue, request))
        victims = self.qp.reclaim_for(queue, request)
        if victims is None:
            return False
        names = self._preempt([v.pod for v in victims.pods], now)
        failed.clear()  # capacity was freed: what failed before may fit now
        decision = self.placer.place(pod, request, quota_mask(self.book, self.qp.kinds, queue, request))
        self.reclaim_events.append(
            ReclaimEvent(
                now, queue, pod, victims.pods[0].model, tuple(names), tuple(self.queue_of[v] for v in names)
            )
        )
        if isinstance(decision, Assignment):
            self._begin(pod, queue, decision, now)
        return True

    def _try_group(self, group: str, queue: str, now: float) -> None:
        members = list(self.pods.group_pending[group])
        running = len(self.group_running.get(group, ()))
        if running + len(members) < self.group_min[group]:
            return  # not enough members have arrived
        self.retry_attempts += 1
        priority = self.trace_pod(members[0]).priority
        outcome = self.qp.place_group(
            [(m, self.trace_pod(m).request) for m in members],
            queue,
            self.group_min[group],
            running,
            priority=priority,
            started=now,
            group=group,
        )
        if outcome.rolled_back:
            self.group_rollbacks += 1
        if not outcome.enough:
            for (pod, _), why in outcome.refused:
                self.reasons.setdefault(pod, why)
            return
        if not running and outcome.kept:
            self.groups_started += 1
        for (pod, _), assignment in outcome.kept:
            self._account(pod, queue, assignment, now)

    def _begin(self, pod: str, queue: str, a: Assignment, now: float) -> None:
        p = self.pods.pods[pod]
        self.qp.commit(a, queue, priority=p.record.priority, started=now, group=p.record.pod_group)
        self._account(pod, queue, a, now)

    def _account(self, pod: str, queue: str, a: Assignment, now: float) -> None:
        """Bookkeeping of a start the state and the quota book already hold."""
        p = self.pods.remove(pod)
        self.allocated += a.request.total_gpu_milli
        start = now + (self.mig_reconfig_s if a.mig_plans else 0.0)
        group = p.record.pod_group
        if group:
            self.group_running.setdefault(group, set()).add(pod)
        self.outcome[pod] = PLACED
        self._changed = True
        if pod in self.started_once:
            self.restarted += 1
            return
        self.started_once.add(pod)
        self.start_time[pod] = start
        delay = start - p.since
        self.delays.append(delay)
        self.delays_by_queue.setdefault(queue, []).append(delay)
        if p.since == now:
            self.placed_immediately += 1
        else:
            self.placed_after_wait += 1

    def _preempt(self, pods: list[str], now: float) -> list[str]:
        """Stop `pods` (and the rest of their groups) and queue them again; returns all stopped."""
        stopped: list[str] = []
        for pod in pods:
            group = self.trace_pod(pod).pod_group
            for victim in [pod] if not group else sorted(self.group_running.get(group, ())):
                if victim not in self.state.live:
                    continue
                self._stop(victim)
                stopped.append(victim)
                queue = self.queue_of[victim]
                self.preempted[queue] = self.preempted.get(queue, 0) + 1
                record = self.trace_pod(victim)
                seq = self.seq_of[victim]
                deadline = None if self.max_wait is None else now + self.max_wait
                entry = self.pods.push(_Pending(record, queue, seq, now, deadline))
                self.outcome[victim] = PENDING
                if deadline is not None:
                    heapq.heappush(self.expiries, (deadline, seq, victim))
                if entry is not None:
                    self._fresh.append((queue, entry))
        return stopped

    # -- the result ------------------------------------------------------------------------------

    def _result(self) -> TimedResult:
        result = super()._result()
        result.pending_at_end = sum(1 for pod in self.pods.pods if pod not in self.started_once)
        result.tenancy = self.tenancy.result(
            delays=self.delays_by_queue,
            reclaims=self.reclaim_events,
            preempted=self.preempted,
            restarted=self.restarted,
            unknown_queue=self.unknown,
            groups_started=self.groups_started,
            group_rollbacks=self.group_rollbacks,
            priority_preemptions=self.priority_preemptions,
        )
        return result


def _group_minimums(trace: Trace) -> dict[str, int]:
    """Members each pod group needs running; a group whose members disagree on their queue or
    their minimum, or that needs more members than the trace has, is an error (it could never
    be what the trace meant)."""
    members: dict[str, list[PodRecord]] = {}
    for pod in trace.pods:
        if pod.pod_group:
            members.setdefault(pod.pod_group, []).append(pod)
    out = {}
    for group, pods in members.items():
        queues = sorted({p.queue or "default" for p in pods})
        if len(queues) > 1:
            raise TraceError(
                trace.name,
                f"pod group {group!r}: members in queues {', '.join(queues)}; a group belongs to one queue",
            )
        minimums = sorted({p.pod_group_min for p in pods})
        if len(minimums) > 1:
            shown = ", ".join(map(str, minimums))
            raise TraceError(
                trace.name,
                f"pod group {group!r}: members disagree on pod_group_min ({shown}); "
                "give every member the same value",
            )
        need = minimums[0] or len(pods)
        if need > len(pods):
            raise TraceError(
                trace.name,
                f"pod group {group!r}: pod_group_min {need} but the trace has only "
                f"{len(pods)} members; it could never start",
            )
        out[group] = need
    return out


def run_queued(
    trace: Trace, policy: str, seed: int = 0, *, queues: QueueTree | None = None, **options
) -> TimedResult:
    """`simulator.timed.run_timed` with queues (module docstring); options as `run_timed`'s."""
    progress = options.pop("progress", None)
    return QueuedTimedReplay(trace, policy, seed, queues=queues, **options).run(progress)


def needs_queues(trace: Trace) -> bool:
    """Whether a trace uses queue-only features (queues, priorities, pod groups)."""
    return any(p.queue or p.pod_group for p in trace.pods) or len({p.priority for p in trace.pods}) > 1
