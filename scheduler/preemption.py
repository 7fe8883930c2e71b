"""Preemption: a pod that fits nowhere may evict lower-priority pods, as kube-scheduler does.

The bound pods of lower priority on the nodes the pod may use (taints, affinity and
resource kind allowed) are the candidates; the search is the core's
(`placement.preemption.fewest_victims`, shared with reclaim and the simulator): per
node, the least important pods go first until the pod fits, then victims are given back,
most important first, while it still fits (kube-scheduler's "reprieve"); the node whose
most important victim matters least wins, then the smallest sum of victim priorities,
then the fewest victims. Whether the pod fits with victims gone is this module's what-if
(`fits_without`) on the cache's state, restored exactly afterwards: assignments are
released and re-allocated as they were, never recomputed.

The scheduler then records `status.nominatedNodeName` on the pod, deletes the victims
(with their grace period, uid-preconditioned) and retries the pod once they are gone.
With queues, priority preemption stays within the pod's own queue; across queues only
reclaim (`scheduler/tenancy.py`) takes back what a queue borrowed over its quota.
Not modelled: PodDisruptionBudgets, and pod groups (their members do not preempt).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from tessellate.placement import Assignment, Unschedulable
from tessellate.placement.preemption import Candidate, fewest_victims
from tessellate.placement.quota.book import Charge

from tessellate.kube import timestamp

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache
    from tessellate.scheduler.nominator import Nominator
    from tessellate.scheduler.podrecord import PodRecord

NEVER = "Never"
MAX_CANDIDATES = 100
"""Nodes that work after which the search stops (kube-scheduler samples similarly)."""


@dataclass(frozen=True)
class Preemption:
    node: str
    victims: tuple[PodRecord, ...]
    reclaimed_by: str | None = None
    """The claimant's queue when the victims are pods borrowing over their queue's quota
    (`scheduler/tenancy.py`); None for priority preemption."""

    def rank(self) -> tuple[int, int, int]:
        priorities = [v.priority for v in self.victims]
        return (max(priorities), sum(priorities), len(priorities))

    def describe(self) -> str:
        if self.reclaimed_by is not None:
            return (
                f"reclaiming for queue {self.reclaimed_by}: preempting {len(self.victims)} pod(s) "
                f"borrowed over their queue's quota on node {self.node}"
            )
        return f"preempting {len(self.victims)} lower-priority pod(s) on node {self.node}"


def victims_still_leaving(cache: ClusterCache, nominator: Nominator, rec: PodRecord) -> bool:
    """True while pods deleted for `rec` still exist: it waits instead of preempting again.

    Known from this scheduler's own nominations, and, after a restart or a failover, from
    the pod's `status.nominatedNodeName`: a lower-priority pod terminating there counts
    (kube-scheduler's rule for whether a pod may preempt others).
    """
    if nominator.awaiting_victims(rec.uid, cache.pods.__contains__):
        return True
    nominated = ((rec.obj.get("status") or {}).get("nominatedNodeName")) or ""
    if not nominated:
        return False
    return any(
        other.node_name == nominated and other.deleting and other.priority < rec.priority
        for other in cache.pods.values()
    )


def find_preemption(cache: ClusterCache, rec: PodRecord) -> Preemption | None:
    """The node and the fewest, least important victims that let `rec` fit; None if none.

    Expects `cache.lock` held and `rec` not placed by `cache.decide` just before.
    """
    if rec.preemption_policy == NEVER or rec.request is None or not cache.ensure_built():
        return None
    if min(cache.priorities, default=rec.priority) >= rec.priority:
        return None  # the common case, one priority for all: no pod scan
    state = cache.state
    assert state is not None
    allowed, _ = cache.filter(rec, pods_matter=False)
    tenancy = cache.tenancy
    queue = tenancy.leaf_or_default(rec) if tenancy.active else None
    lower: list[PodRecord] = []
    for other in cache.pods.values():
        node = state.index.get(other.node_name) if other.node_name else None
        if node is None or not allowed[node] or other.deleting or other.priority >= rec.priority:
            continue
        if queue is not None and tenancy.leaf_or_default(other) != queue:
            continue  # across queues only reclaim takes GPUs back (a queue's quota is guaranteed)
        lower.append(other)
    return _search(cache, rec, lower, MAX_CANDIDATES)


def victims_on(
    cache: ClusterCache, rec: PodRecord, node: int, lower: list[PodRecord]
) -> list[PodRecord] | None:
    """The search on one node: the victims among `lower` (all on `node`) that must go for `rec`
    to fit there (None: it never fits, or fits without evicting anyone)."""
    found = _search(cache, rec, lower, 1)
    return list(found.victims) if found is not None else None


def _search(cache: ClusterCache, rec: PodRecord, lower: list[PodRecord], max_nodes: int) -> Preemption | None:
    """`placement.preemption.fewest_victims` over `lower`, with the cache's what-if as `fits`."""
    state, charges = cache.state, cache.charges
    assert state is not None and charges is not None
    candidates = [
        Candidate(
            (Charge(other.uid, "", "", Fraction(0), priority=other.priority, started=started(other), node=n),)
        )
        for other in lower
        if (n := state.index.get(other.node_name)) is not None and charges.holdings(other.uid)
    ]
    found = fewest_victims(
        candidates,
        lambda victims: fits_without(cache, rec, [v.pod for v in victims], int(victims[0].node)),  # type: ignore[arg-type]
        lambda taken, c: True,
        max_nodes=max_nodes,
    )
    if found is None:
        return None
    return Preemption(state.names[int(found.node)], tuple(cache.pods[v.pod] for v in found.pods))  # type: ignore[arg-type]


def started(rec: PodRecord) -> float:
    """Creation time in seconds (preemption takes the youngest first among equals); 0 if unreadable."""
    return timestamp((rec.obj.get("metadata") or {}).get("creationTimestamp")) or 0.0


def fits_without(cache: ClusterCache, rec: PodRecord, uids: Iterable[str], node: int) -> bool:
    """What-if on one node: with the pods `uids` gone (their GPUs, CPU, memory and extended
    resources), would `rec` pass the filters and fit there? The state is restored exactly:
    assignments are released and re-allocated as they were, never recomputed."""
    state, charges, placer = cache.state, cache.charges, cache.placer
    assert state is not None and charges is not None and placer is not None and rec.request is not None
    only = np.zeros(len(state), dtype=bool)
    only[node] = True
    used = {name: amounts.copy() for name, amounts in charges.ext_used.items()}
    held: list[Assignment] = []
    try:
        for uid in dict.fromkeys(uids):
            held.extend(state.release(key) for key in charges.holdings(uid))
            for name, amount in charges.extended_charge(uid).items():
                if name in used:
                    used[name][node] -= amount
        mask, _ = cache.filter(rec, used=used, mask=only)
        return bool(mask[node]) and not isinstance(
            placer.place(rec.uid, rec.request.request, mask), Unschedulable
        )
    finally:
        for assignment in reversed(held):
            state.allocate(assignment)
