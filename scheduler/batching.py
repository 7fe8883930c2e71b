"""Deciding several pending pods together (`placement.batch`): pod groups and retried pods.

One pod at a time, an early pod may take the room a later, larger one needed. Two places
in the scheduler hand the core a batch instead: a pod group that falls short one member
at a time (`scheduler/gang.py`), and the pods retried together after a cluster change
(`decide_retries`: the head of the unschedulable queue, woken by a pod leaving or a node
changing). `place_batch` runs the greedy order first and keeps a CP-SAT answer only if it
holds strictly more GPU, so a batch never places less than one-at-a-time would.

Only pods the core alone can judge together are batched: no extended resources and no
required anti-affinity (both are checked per pod by the filters, not between members of
a batch), no MIG (a new instance needs the node agent first), no pod group, and no queue
limit on the pod's queue (the limit counts pods placed before it), and nothing the queue's
PreFilter refuses (an unknown queue, a namespace the queue does not admit). Their filter masks do
not depend on other pods, so computing them once before the batch is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tessellate.placement.batch import BatchOptions, BatchResult, place_batch

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache, Placed
    from tessellate.scheduler.podrecord import PodRecord


def batchable(cache: ClusterCache, rec: PodRecord) -> bool:
    """Whether the core alone decides this pod (see the module docstring)."""
    request = rec.request
    return (
        rec.problem is None
        and request is not None
        and not request.extended
        and not rec.anti_affinity
        and not request.request.is_mig
        and cache.tenancy.unlimited(rec)
        and not (cache.tenancy.active and cache.tenancy.prefilter(rec))
    )


def solve_batch(
    cache: ClusterCache, members: Sequence[PodRecord], options: BatchOptions
) -> BatchResult | None:
    """The batch's decision (nothing reserved yet); None when it cannot be batched."""
    if not members or not cache.ensure_built() or cache.placer is None:
        return None
    if not all(batchable(cache, rec) for rec in members):
        return None
    eligible = {rec.uid: cache.filter(rec)[0] for rec in members}
    pods = [(rec.uid, rec.request.request) for rec in members if rec.request is not None]
    return place_batch(cache.placer, pods, options, eligible)


def reserve_batch(cache: ClusterCache, members: Sequence[PodRecord], result: BatchResult) -> list[Placed]:
    """Reserve every assignment of `result`, in order; all or nothing if one fails."""
    by_uid = {rec.uid: rec for rec in members}
    placed: list[Placed] = []
    try:
        for assignment in result.assignments:
            placed.append(cache.reserve(by_uid[assignment.pod], assignment))
    except Exception:
        for p in placed:
            cache.forget(p.uid)
        raise
    return placed


@dataclass(frozen=True)
class RetryBatch:
    """Retried pods decided together: what was reserved (to bind) and who is left."""

    placed: list[Placed]
    left: list[PodRecord]
    """Pods the batch did not place: each goes on to its own cycle (and, there, preemption)."""
    result: BatchResult


def decide_retries(
    cache: ClusterCache, members: Sequence[PodRecord], options: BatchOptions
) -> RetryBatch | None:
    """Decide pods retried after a cluster change as one batch and reserve what it places;
    None (nothing reserved) when they cannot be batched. Expects `cache.lock`."""
    result = solve_batch(cache, members, options)
    if result is None:
        return None
    placed = reserve_batch(cache, members, result)
    chosen = {p.uid for p in placed}
    return RetryBatch(placed, [rec for rec in members if rec.uid not in chosen], result)
