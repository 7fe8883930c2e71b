"""Preemption: a pod that fits nowhere may evict lower-priority pods, as kube-scheduler does.

For each node the pod may use (taints, affinity and resource kind allowed), every bound
pod of lower priority is taken out of the placement state in a what-if; if the pod then
fits, victims are given back one at a time, most important first, while it still fits
(kube-scheduler's "reprieve"), so only the pods that must go are chosen. The state is
restored exactly afterwards: assignments are released and re-allocated as they were,
never recomputed. Among the nodes that work, the one whose most important victim matters
least wins, then the smallest sum of victim priorities, then the fewest victims; nodes are
examined least important pods first, and the search stops when no node left can win.

The scheduler then records `status.nominatedNodeName` on the pod, deletes the victims
(with their grace period, uid-preconditioned) and retries the pod once they are gone.
With queues, priority preemption stays within the pod's own queue; across queues only
reclaim (`scheduler/tenancy.py`) takes back what a queue borrowed over its quota.
Not modelled: PodDisruptionBudgets, and pod groups (their members do not preempt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tessellate.placement import Assignment, Unschedulable

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
    state, charges = cache.state, cache.charges
    assert state is not None and charges is not None
    allowed, _ = cache.filter(rec, pods_matter=False)
    tenancy = cache.tenancy
    queue = tenancy.leaf_or_default(rec) if tenancy.active else None
    lower: dict[int, list[PodRecord]] = {}
    for other in cache.pods.values():
        node = state.index.get(other.node_name) if other.node_name else None
        if node is None or not allowed[node] or other.deleting or other.priority >= rec.priority:
            continue
        if queue is not None and tenancy.leaf_or_default(other) != queue:
            continue  # across queues only reclaim takes GPUs back (a queue's quota is guaranteed)
        if charges.holdings(other.uid):
            lower.setdefault(node, []).append(other)
    best: Preemption | None = None
    found = 0
    # Nodes whose least important pod matters least first: a node cannot beat the best so
    # far once even its least important pod outranks the best's most important victim.
    floor = {node: min(p.priority for p in pods) for node, pods in lower.items()}
    for node in sorted(lower, key=lambda n: (floor[n], n)):
        if best is not None and best.rank() <= (floor[node], floor[node], 1):
            break  # every node left has a victim at least this important
        victims = victims_on(cache, rec, node, lower[node])
        if not victims:
            continue  # never fits there, or fits without evicting anyone (then decide places it)
        candidate = Preemption(state.names[node], tuple(victims))
        if best is None or candidate.rank() < best.rank():
            best = candidate
        found += 1
        if found >= MAX_CANDIDATES:
            break
    return best


def victims_on(
    cache: ClusterCache, rec: PodRecord, node: int, lower: list[PodRecord]
) -> list[PodRecord] | None:
    """What-if on one node: the victims that must go for `rec` to fit there (None: it never fits)."""
    state, charges = cache.state, cache.charges
    assert state is not None and charges is not None and cache.placer is not None and rec.request is not None
    only = np.zeros(len(state), dtype=bool)
    only[node] = True
    used = {name: amounts.copy() for name, amounts in charges.ext_used.items()}
    held: dict[str, list[Assignment]] = {}
    out: set[str] = set()

    def take(victim: PodRecord) -> None:
        held[victim.uid] = [state.release(key) for key in charges.holdings(victim.uid)]
        for name, amount in charges.extended_charge(victim.uid).items():
            if name in used:
                used[name][node] -= amount
        out.add(victim.uid)

    def give_back(victim: PodRecord) -> None:
        for assignment in held.pop(victim.uid):
            state.allocate(assignment)
        for name, amount in charges.extended_charge(victim.uid).items():
            if name in used:
                used[name][node] += amount
        out.discard(victim.uid)

    def fits() -> bool:
        mask, _ = cache.filter(rec, used=used, mask=only)
        return bool(mask[node]) and not isinstance(
            cache.placer.place(rec.uid, rec.request.request, mask), Unschedulable
        )

    try:
        for victim in lower:
            take(victim)
        if not fits():
            return None
        for victim in sorted(lower, key=lambda v: (-v.priority, v.key)):
            give_back(victim)
            if not fits():
                take(victim)
        return [v for v in lower if v.uid in out]
    finally:
        for victim in lower:
            if victim.uid in out:
                give_back(victim)
