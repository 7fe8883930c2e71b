"""Queue-aware placement over the core: limits as node masks, reclaim as a what-if.

`QueuedPlacer` is the glue a driver without Kubernetes needs (the simulator, tests):
it places through `Placer.place` with `quota_mask` as the eligible nodes, commits with
`ClusterState.allocate` and `QuotaBook.charge` together, and answers reclaim's "would
it fit with these pods gone" by releasing them from the state, asking `Placer.fits`
about the one node they free, and allocating them back exactly as they were. The live
scheduler does the same with its own cache and filters; nothing here re-decides a fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tessellate.placement.cycle import Placer
from tessellate.placement.gang import GroupOutcome, demand_order, place_together
from tessellate.placement.model import Assignment, Request, Unschedulable
from tessellate.placement.preemption import Candidate, Victims, fewest_victims, victim_order
from tessellate.placement.quota.book import Charge, QuotaBook
from tessellate.placement.quota.nodes import NodeKinds, blocking_messages, quota_mask
from tessellate.placement.quota.reclaim import reclaim_by_kind
from tessellate.placement.quota.units import placed_units


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a pod was not placed: a queue limit, or the cluster's own reasons."""

    message: str
    limited: bool
    """True when only a queue limit stands in the way (it would fit on the cluster)."""


class QueuedPlacer:
    """Places pods of leaf queues on `placer.state`, keeping `book` in step with it."""

    def __init__(self, placer: Placer, book: QuotaBook) -> None:
        self.placer, self.book, self.state = placer, book, placer.state
        self.kinds = NodeKinds(placer.state)

    def place(
        self,
        pod: str,
        queue: str,
        request: Request,
        *,
        priority: int = 0,
        started: float = 0.0,
        group: str = "",
    ) -> Assignment | Waiting:
        """Place and commit `pod` within its queue's limits, or say why it waits."""
        mask = quota_mask(self.book, self.kinds, queue, request)
        decision = self.placer.place(pod, request, mask)
        if isinstance(decision, Assignment):
            self.commit(decision, queue, priority=priority, started=started, group=group)
            return decision
        return self.why(queue, request, mask, decision)

    def why(self, queue: str, request: Request, mask: np.ndarray | None, decision: Unschedulable) -> Waiting:
        """The message of a pod `Placer.place` refused under `mask`: the binding limit when it
        would fit without the mask, else the cluster's reasons (said to be within quota if so)."""
        if mask is not None and self.placer.fits(request).any():
            return Waiting(blocking_messages(self.book, self.kinds, queue, request)[0], True)
        for model, units in sorted(self.kinds.demand(request).items()):
            if self.book.within_quota(queue, model, units):
                return Waiting(self.book.capacity_message(queue, model, units, decision.message), False)
        return Waiting(decision.message, False)

    def commit(
        self, a: Assignment, queue: str, *, priority: int = 0, started: float = 0.0, group: str = ""
    ) -> Charge | None:
        """Allocate `a` and charge its units to `queue` (None: a CPU-only pod, not charged)."""
        self.state.allocate(a)
        model, units = placed_units(self.state, a)
        if not model:
            return None
        return self.book.charge(
            a.pod, queue, model, units, priority=priority, started=started, node=a.node, group=group
        )

    def release(self, pod: str) -> Assignment:
        """Give back what `pod` holds, in the state and in the book."""
        self.book.release(pod)
        return self.state.release(pod)

    def reclaim_for(self, queue: str, request: Request) -> Victims | None:
        """Over-quota pods whose preemption would let `request` of `queue` (within its quota) fit
        (`reclaim_by_kind`: per kind of node where the pod stays within quota, the first answer)."""
        fits = lambda vs, nodes: self._fits_without(request, vs, nodes)  # noqa: E731
        return next(reclaim_by_kind(self.book, self.kinds, queue, request, fits), None)

    def preempt_for(self, queue: str, request: Request, priority: int) -> Victims | None:
        """Lower-priority pods of the same queue whose preemption lets `request` fit: priority
        preemption as the live scheduler does it (within a queue; across queues only reclaim
        takes GPUs), through the same search (`placement.preemption.fewest_victims`). A pod
        group is one candidate, and only when every running member has a lower priority."""
        singles: list[Candidate] = []
        groups: dict[str, list[Charge]] = {}
        for c in self.book.pods_of(queue):
            if c.group:
                groups.setdefault(c.group, []).append(c)
            elif c.priority < priority:
                singles.append(Candidate((c,)))
        for members in groups.values():
            if all(m.priority < priority for m in members):
                singles.append(Candidate(tuple(sorted(members, key=victim_order))))
        if not singles:
            return None
        everywhere = np.ones(len(self.state), dtype=bool)
        return fewest_victims(
            singles, lambda vs: self._fits_without(request, vs, everywhere), lambda taken, c: True
        )

    def _fits_without(self, request: Request, victims: Sequence[Charge], kind: np.ndarray) -> bool:
        """Whether `request` fits on the first victim's node with all `victims` released."""
        node = int(victims[0].node)  # type: ignore[call-overload]
        if not kind[node]:
            return False
        held = [self.state.release(v.pod) for v in victims]
        try:
            return bool(self.placer.fits(request, np.array([node]))[0])
        finally:
            for a in reversed(held):
                self.state.allocate(a)

    def place_group(
        self,
        members: Sequence[tuple[str, Request]],
        queue: str,
        min_available: int,
        running: int = 0,
        *,
        priority: int = 0,
        started: float = 0.0,
        group: str = "",
    ) -> GroupOutcome[tuple[str, Request], Assignment]:
        """All-or-nothing placement of a pod group (`placement.gang.place_together`): each
        member is placed within the limits left after the members before it, so the group
        is admitted against its queue's limits as a whole, and taken back if too few run."""

        def decide(member: tuple[str, Request]) -> Assignment | str:
            result = self.place(member[0], queue, member[1], priority=priority, started=started, group=group)
            return result.message if isinstance(result, Waiting) else result

        ordered = sorted(members, key=lambda m: (demand_order(m[1]), m[0]))
        return place_together(ordered, min_available, running, decide, lambda a: self.release(a.pod))
