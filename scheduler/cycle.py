"""One scheduling cycle, phase by phase, as kube-scheduler's `schedule_one.go` sequences them.

The cycle runs under the cache lock and does no I/O: it decides and returns an
`Outcome` that says what the binding side (`scheduler/app.py`) must do: bind, fail
with a message, preempt, publish a MIG plan and wait, or bind a pod group's members.

    Batch       a pod retried after a cluster change, with the retries behind it, decided
                together (`retry_cycle`, `scheduler/batching.py`); who is left goes on alone
    Lookup      the pod still needs placing (not gone, bound, deleting, assumed)
    Permit      a reserved pod waiting for its MIG instances: still waiting, or decide again
    PreFilter   the pod can be scheduled as written (request, constraints, group, its queue)
    Group       all-or-nothing pass for a pod group (`scheduler/gang.py`)
    Filter      the profile's filter plugins (`scheduler/framework.py`), then
    Score       the placement policy, and
    Reserve     assume the decision in the cache (`ClusterCache.decide`)
    PostFilter  when nothing fits: reclaim for a pod within its queue's quota, else preemption
    Permit      a decision that creates MIG instances waits for the node agent

Every failure after Reserve unreserves (`ClusterCache.forget`) before it propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tessellate.placement import Unschedulable
from tessellate.placement.batch import BatchOptions
from tessellate.scheduler.batching import batchable, decide_retries
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.gang import GroupDecision, decide_group
from tessellate.scheduler.migplans import MigWait
from tessellate.scheduler.nominator import Nominator
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.preemption import NEVER, Preemption, find_preemption, victims_still_leaving

from tessellate.wire.podspec import PodRequestError


@dataclass(frozen=True)
class Skip:
    """Nothing to place now; `park`: keep it unschedulable until a change wakes it."""

    park: bool = False


@dataclass(frozen=True)
class Invalid:
    """The pod cannot be scheduled as written (or its MIG wait ended): `message` says why."""

    rec: PodRecord
    message: str
    as_written: bool = True
    """False when the pod itself is fine and only this attempt ended (a MIG wait gave up)."""


@dataclass(frozen=True)
class Rejected:
    """No node fits; `preemption` names victims whose deletion would make room."""

    rec: PodRecord
    message: str
    preemption: Preemption | None = None


@dataclass(frozen=True)
class Bind:
    rec: PodRecord
    placed: Placed


@dataclass(frozen=True)
class WaitForMig:
    """Reserved; the node agent must create MIG instances first (`plan` is the node's new
    `tessellate.dev/mig-plan` value)."""

    rec: PodRecord
    wait: MigWait
    plan: str


@dataclass(frozen=True)
class BindGroup:
    decision: GroupDecision


@dataclass(frozen=True)
class BindBatch:
    """Retried pods decided together: reserved ones to bind, and the uids left to their own cycle."""

    placed: list[tuple[PodRecord, Placed]]
    left: list[str]
    improved: bool
    """The CP-SAT answer placed more than one-at-a-time would have."""


Outcome = Skip | Invalid | Rejected | Bind | WaitForMig | BindGroup
"""What `scheduling_cycle` returns; `retry_cycle` returns a `BindBatch` (or None)."""


@dataclass
class CycleSettings:
    mig_plan_timeout: float
    preemption: bool
    pending: Callable[[PodRecord], bool]
    """Whether a pod is this scheduler's to place now (for a group's other members)."""
    group_batch: BatchOptions | None = None
    """Pod groups that do not fit one member at a time are tried as one CP-SAT batch."""
    retry_batch: BatchOptions | None = None
    """Pods retried after a cluster change are decided as one batch (None: one at a time)."""
    nominator: Nominator = field(default_factory=Nominator)
    """Preemptors waiting for their victims (the queue's, `SchedulingQueue.nominator`)."""


def scheduling_cycle(cache: ClusterCache, uid: str, settings: CycleSettings) -> tuple[Outcome, float]:
    """Run the cycle for pod `uid` (cache lock held): the outcome and the seconds it took to
    decide (the algorithm latency kube-scheduler reports)."""
    rec = cache.pods.get(uid)
    if rec is None or rec.node_name or rec.deleting:
        if rec is None or rec.deleting:
            cache.forget(uid)  # drops a MIG reservation nobody will use
        return Skip(), 0.0
    ended: str | None = None
    if uid in cache.mig_waits:
        waiting, ended = _permit_wait(cache, uid)
        if waiting:
            return Skip(park=True), 0.0
    elif uid in cache.assumed:
        return Skip(), 0.0
    started = time.perf_counter()
    outcome = _decide(cache, rec, ended, settings)
    return outcome, time.perf_counter() - started


def retry_cycle(
    cache: ClusterCache, uids: list[str], settings: CycleSettings
) -> tuple[BindBatch | None, float]:
    """The Batch phase for `uids` (the retried head first; cache lock held). None when fewer
    than two of them can be batched, or the head cannot: then each pod has its own cycle."""
    if settings.retry_batch is None:
        return None, 0.0
    members = [
        rec
        for uid in uids
        if (rec := cache.pods.get(uid)) is not None and _batch_member(cache, rec, settings)
    ]
    if len(members) < 2 or members[0].uid != uids[0]:
        return None, 0.0
    started = time.perf_counter()
    decided = decide_retries(cache, members, settings.retry_batch)
    if decided is None:
        return None, 0.0
    by_uid = {rec.uid: rec for rec in members}
    placed = [(by_uid[p.uid], p) for p in decided.placed]
    left = [uid for uid in uids if uid not in {p.uid for p in decided.placed}]
    return BindBatch(placed, left, decided.result.improved), time.perf_counter() - started


def _batch_member(cache: ClusterCache, rec: PodRecord, settings: CycleSettings) -> bool:
    settled = rec.node_name or rec.deleting or rec.uid in cache.assumed or rec.uid in cache.mig_waits
    return not settled and rec.group is None and settings.pending(rec) and batchable(cache, rec)


def _permit_wait(cache: ClusterCache, uid: str) -> tuple[bool, str | None]:
    """(still waiting, why the wait ended badly). A wait that ended unreserves, so the pod is
    decided again on the instances that now exist (or anywhere, when it failed)."""
    outcome = cache.mig_wait_outcome(uid)
    if not outcome.ready and outcome.message is None:
        return True, None
    cache.forget(uid)
    return False, outcome.message


def _decide(cache: ClusterCache, rec: PodRecord, ended: str | None, settings: CycleSettings) -> Outcome:
    if ended is not None:
        return Invalid(rec, ended, as_written=False)
    if rec.problem is not None:  # PreFilter
        return Invalid(rec, rec.problem)
    if cache.tenancy.active and (why := cache.tenancy.prefilter(rec)) is not None:
        return Rejected(rec, why)  # waits until a Queue changes
    if rec.group is not None:
        return BindGroup(decide_group(cache, rec.group, settings.pending, settings.group_batch))
    try:
        result = cache.decide(rec)  # Filter, Score, Reserve
    except PodRequestError as exc:
        return Invalid(rec, str(exc))
    if isinstance(result, Unschedulable):
        preemption = _post_filter(cache, rec, settings.nominator) if settings.preemption else None
        message = (
            cache.tenancy.explain(cache, rec, result.message) if cache.tenancy.active else result.message
        )
        return Rejected(rec, message, preemption)
    if not result.assignment.mig_plans:
        return Bind(rec, result)
    try:  # Permit: the node agent must create the instances first
        wait, plan = cache.start_mig_wait(result, settings.mig_plan_timeout)
    except Exception:
        cache.forget(rec.uid)
        raise
    return WaitForMig(rec, wait, plan)


def _reclaim(cache: ClusterCache, rec: PodRecord, nominator: Nominator) -> Preemption | None:
    """Borrowed GPUs taken back for a pod within its queue's quota (before priority preemption);
    pods already being deleted for other preemptors count as gone, never as victims again."""
    if not cache.tenancy.active or rec.preemption_policy == NEVER:
        return None
    leaving = nominator.doomed(cache.pods.__contains__, besides=rec.uid)
    found = cache.tenancy.find_reclaim(cache, rec, leaving)
    return None if found is None else Preemption(found.node, found.victims, reclaimed_by=found.queue)


def _post_filter(cache: ClusterCache, rec: PodRecord, nominator: Nominator) -> Preemption | None:
    """Victims to delete for `rec`; none while earlier victims are still leaving."""
    if victims_still_leaving(cache, nominator, rec):
        return None
    preemption = _reclaim(cache, rec, nominator) or find_preemption(cache, rec)
    if preemption is not None:
        nominator.nominate(rec.uid, (v.uid for v in preemption.victims))
    return preemption
