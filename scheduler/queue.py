"""The scheduling queue: kube-scheduler's active heap, backoff heap and parking lot.

Pods are tried by priority, then arrival, within their tenant queue (the Queue a pod
names, `scheduler/tenancy.py`); across tenant queues, the one furthest below its fair
share goes first (the `rank` snapshot; one queue, `default`, without Queues). A pod that did not fit backs off
(1 s doubling to 10 s by default) and then waits in the unschedulable set
until something that could make it fit happens (a pod leaves, a node is added
or changes) or a periodic flush; a pod whose spec can never work waits until
the pod itself changes. Thread-safe: informers add, one loop pops.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tessellate.scheduler.nominator import Nominator


@dataclass
class QueuedPod:
    uid: str
    key: str
    priority: int
    arrival: int
    attempts: int = 0
    first_seen: float = field(default_factory=time.monotonic)
    backoff_until: float = 0.0
    invalid: bool = False
    moves_seen: int = 0
    """The queue's move count when this attempt began (see `SchedulingQueue.unschedulable`)."""
    tenant: str = "default"
    """The tenant queue it waits in (its `tessellate.dev/queue`)."""
    batched_at: int = -1
    """The move count when this pod was last tried in a batch of retries: once per change."""


class SchedulingQueue:
    def __init__(
        self,
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        unschedulable_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self.clock = clock
        self._cond = threading.Condition()
        self._active: dict[str, list[tuple[int, int, str]]] = {}  # tenant -> [(-priority, arrival, uid)]
        self.rank: Callable[[], Mapping[str, tuple]] = dict
        """Tenant -> order key, lowest first (the tenancy's fair-share snapshot; read, no lock)."""
        self._backoff: list[tuple[float, str]] = []  # (ready at, uid)
        self._unschedulable: dict[str, float] = {}  # uid -> parked at
        self._pods: dict[str, QueuedPod] = {}
        self._where: dict[str, str] = {}  # uid -> active | backoff | unschedulable | inflight
        self._seq = itertools.count()
        self._moves = 0
        """How many times `move_all_to_active` ran: a cluster change an in-flight attempt missed."""
        self._closed = False
        self.nominator = Nominator()
        """Preemptors waiting for their victims to leave."""

    # -- producers -------------------------------------------------------------------

    def add(self, uid: str, key: str, priority: int, tenant: str = "default") -> None:
        """A new or changed pending pod: (re)try it now, keeping its attempt count."""
        with self._cond:
            pod = self._pods.get(uid)
            if pod is None:
                pod = QueuedPod(uid, key, priority, next(self._seq), tenant=tenant)
                self._pods[uid] = pod
            else:
                pod.priority = priority
                if pod.tenant != tenant and self._where.get(uid) == "active":
                    pod.tenant = tenant
                    self._push_active(pod)  # the entry in the old tenant's heap goes stale
                    return
                pod.tenant = tenant
                pod.invalid = False
                if self._where.get(uid) in ("active", "inflight", "backoff"):
                    return
            self._push_active(pod)

    def remove(self, uid: str) -> None:
        self.nominator.forget(uid)
        with self._cond:
            self._pods.pop(uid, None)
            self._where.pop(uid, None)
            self._unschedulable.pop(uid, None)

    def move_all_to_active(self) -> int:
        """A cluster change that may help: parked pods (not invalid ones) get another try."""
        with self._cond:
            self._moves += 1
            moved = 0
            for uid in list(self._unschedulable):
                pod = self._pods.get(uid)
                if pod is None:
                    continue
                del self._unschedulable[uid]
                self._requeue(pod)
                moved += 1
            return moved

    # -- the scheduling loop -----------------------------------------------------------

    def pop(self, timeout: float | None = None) -> QueuedPod | None:
        """The next pod to try, or None on timeout/close."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                self._flush()
                popped = self._pop_active()
                if popped is not None:
                    return popped
                wait = self._next_wakeup()
                if deadline is not None:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def claim(self, uid: str, key: str, priority: int) -> QueuedPod:
        """Take a pod out of line as if popped: its pod group is being scheduled with another member.

        Wherever it waited (active, backoff, parked), it is now in flight and ends with
        `done`, `unschedulable` or `retry`, like a popped pod; stale heap entries are skipped.
        """
        with self._cond:
            pod = self._pods.get(uid)
            if pod is None:
                pod = QueuedPod(uid, key, priority, next(self._seq))
                self._pods[uid] = pod
            self._unschedulable.pop(uid, None)
            self._where[uid] = "inflight"
            pod.moves_seen = self._moves
            return pod

    def claim_retries(self, head: QueuedPod, limit: int) -> list[QueuedPod]:
        """Pods to decide together with `head`, a pod retried after a cluster change.

        The active pods that are retries too (tried before), of `head`'s priority, in
        arrival order, at most `limit`, and none already batched since the last change
        (a pod the batch left out goes on to its own cycle, `release`). They leave the
        line as if popped; `head` is marked batched as well. Empty when `head` is new or
        was already batched since the last change.
        """
        with self._cond:
            if head.attempts == 0 or head.batched_at == self._moves or limit < 1:
                return []
            head.batched_at = self._moves
            behind = sorted(
                (pod.arrival, uid)
                for uid in {uid for _, _, uid in self._active.get(head.tenant, ())}
                if self._where.get(uid) == "active" and (pod := self._pods[uid]).priority == head.priority
            )
            claimed = []
            for _, uid in behind:
                pod = self._pods[uid]
                if pod.attempts == 0 or pod.batched_at == self._moves or uid == head.uid:
                    continue
                pod.batched_at = self._moves
                pod.moves_seen = self._moves
                self._where[uid] = "inflight"
                claimed.append(pod)
                if len(claimed) == limit:
                    break
            return claimed

    def release(self, uid: str) -> None:
        """A pod claimed for a batch that did not place it: back in line now, no backoff
        (its own cycle decides it next, and may preempt for it)."""
        with self._cond:
            pod = self._pods.get(uid)
            if pod is not None and self._where.get(uid) == "inflight":
                self._push_active(pod)

    def done(self, uid: str) -> None:
        """Bound (or gone): stop tracking it."""
        self.remove(uid)

    def unschedulable(self, uid: str, invalid: bool = False) -> None:
        """The attempt failed: back off, then park until something changes.

        If the cluster changed while the attempt ran (a `move_all_to_active` it could not
        see, say capacity freed just after its decision), the pod is not parked but retried
        after its backoff: parking it would miss that wake-up, as kube-scheduler's queue
        also guards against with its move-request cycle.
        """
        with self._cond:
            pod = self._pods.get(uid)
            if pod is None or self._where.get(uid) != "inflight":
                return
            pod.attempts += 1
            pod.invalid = invalid
            pod.backoff_until = self.clock() + self.backoff_of(pod)
            if invalid:
                self._where[uid] = "invalid"  # only a change of the pod itself can help
            elif pod.moves_seen != self._moves:
                self._requeue(pod)
            else:
                self._unschedulable[uid] = self.clock()
                self._where[uid] = "unschedulable"

    def retry(self, uid: str) -> None:
        """A transient error (a failed bind): back off and try again without waiting for events."""
        with self._cond:
            pod = self._pods.get(uid)
            if pod is None:
                return
            pod.attempts += 1
            pod.backoff_until = self.clock() + self.backoff_of(pod)
            self._requeue(pod)

    def clear_backoff(self, uid: str) -> None:
        """Retry at the next cluster change with no backoff (a preemptor whose victims are leaving)."""
        with self._cond:
            pod = self._pods.get(uid)
            if pod is not None:
                pod.backoff_until = 0.0

    def backoff_of(self, pod: QueuedPod) -> float:
        return min(self.initial_backoff * 2 ** max(pod.attempts - 1, 0), self.max_backoff)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> dict[str, int]:
        with self._cond:
            counts = {"active": 0, "backoff": 0, "unschedulable": 0}
            for where in self._where.values():
                where = "unschedulable" if where == "invalid" else where
                if where in counts:
                    counts[where] += 1
            return counts

    def uids(self) -> list[str]:
        with self._cond:
            return list(self._pods)

    def __contains__(self, uid: str) -> bool:
        with self._cond:
            return uid in self._pods

    # -- internals ---------------------------------------------------------------------

    def _push_active(self, pod: QueuedPod) -> None:
        self._unschedulable.pop(pod.uid, None)
        self._where[pod.uid] = "active"
        heapq.heappush(self._active.setdefault(pod.tenant, []), (-pod.priority, pod.arrival, pod.uid))
        self._cond.notify()

    def _pop_active(self) -> QueuedPod | None:
        """The first live entry of the tenant queue that ranks first (stale entries dropped)."""
        rank = self.rank()
        while self._active:
            tenant = min(self._active, key=lambda t: (rank.get(t, ()), t))
            heap = self._active[tenant]
            while heap:
                _, _, uid = heapq.heappop(heap)
                pod = self._pods.get(uid)
                if self._where.get(uid) == "active" and pod is not None and pod.tenant == tenant:
                    self._where[uid] = "inflight"
                    pod.moves_seen = self._moves
                    if not heap:
                        del self._active[tenant]
                    return pod
            del self._active[tenant]
        return None

    def _requeue(self, pod: QueuedPod) -> None:
        if pod.backoff_until > self.clock():
            self._where[pod.uid] = "backoff"
            heapq.heappush(self._backoff, (pod.backoff_until, pod.uid))
            self._cond.notify()
        else:
            self._push_active(pod)

    def _flush(self) -> None:
        now = self.clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, uid = heapq.heappop(self._backoff)
            pod = self._pods.get(uid)
            if pod is not None and self._where.get(uid) == "backoff":
                self._push_active(pod)
        for uid, parked in list(self._unschedulable.items()):
            pod = self._pods.get(uid)
            if pod is not None and now - parked >= self.unschedulable_timeout:
                del self._unschedulable[uid]
                self._requeue(pod)

    def _next_wakeup(self) -> float | None:
        now = self.clock()
        times = []
        if self._backoff:
            times.append(self._backoff[0][0] - now)
        if self._unschedulable:
            times.append(min(self._unschedulable.values()) + self.unschedulable_timeout - now)
        return max(min(times), 0.001) if times else None
