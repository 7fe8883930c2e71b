"""The quota book: which pod holds how many GPU units of which model for which queue.

One writer pair, `charge` and `release`, keeps every queue's usage (leaves and, summed,
their parents) equal to the sum of its charged pods' units. Decisions read from it:
whether a pod would cross a limit (with the exact message the pod waits with), whether
it stays within its quota (what reclaim needs), fair shares and the queue order.
Charges are per pod and model; a pod group is charged member by member, and admitted
(`group_refusal`) on the sum of its members' units.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement.quota.fairshare import Key, fair_shares
from tessellate.placement.quota.order import queue_key, queue_order
from tessellate.placement.quota.spec import ResourceQuota
from tessellate.placement.quota.tree import QueueTree
from tessellate.placement.quota.units import format_units

ZERO = Fraction(0)
GPU_RESOURCE = "nvidia.com/gpu"


class QuotaBookError(ValueError):
    """A charge or release the book cannot take (a caller's bookkeeping bug); nothing changed."""


@dataclass(frozen=True, slots=True)
class Charge:
    """What one running pod holds: `units` of `model` for leaf `queue`.

    `priority` and `started` (any increasing clock: later is younger) order reclaim
    victims; `node` is where the pod runs (reclaim looks for victims one node at a time);
    `group` names its pod group ("": none), whose members reclaim preempts together."""

    pod: str
    queue: str
    model: str
    units: Fraction
    priority: int = 0
    started: float = 0.0
    node: Hashable = None
    group: str = ""


class QuotaBook:
    """Per (queue, model) usage over a `QueueTree`, and the decisions read from it.

    `capacity` is the GPUs per model in the cluster (fair shares divide it); update it with
    `set_capacity` when nodes come and go."""

    def __init__(self, tree: QueueTree, capacity: Mapping[str, Fraction | int] | None = None) -> None:
        self.tree = tree
        self.capacity: dict[str, Fraction] = {}
        self.set_capacity(capacity or {})
        self.charges: dict[str, Charge] = {}
        self._used: dict[Key, Fraction] = {}
        self._pods: dict[str, dict[str, Charge]] = {name: {} for name in tree}

    def set_capacity(self, capacity: Mapping[str, Fraction | int]) -> None:
        self.capacity = {m: Fraction(c) for m, c in capacity.items() if m}

    # -- the writers ----------------------------------------------------------------------

    def charge(
        self,
        pod: str,
        queue: str,
        model: str,
        units: Fraction,
        *,
        priority: int = 0,
        started: float = 0.0,
        node: Hashable = None,
        group: str = "",
    ) -> Charge:
        """Record that `pod` now holds `units` of `model` for leaf `queue` (limits are not
        checked here: ask `limit_refusal` first; a restarted scheduler charges what is bound)."""
        if pod in self.charges:
            raise QuotaBookError(f"pod {pod} is already charged to queue {self.charges[pod].queue}")
        if queue not in self.tree or not self.tree.is_leaf(queue):
            raise QuotaBookError(f"pod {pod}: {queue!r} is not a leaf queue")
        if units < 0:
            raise QuotaBookError(f"pod {pod}: negative units {units}")
        c = Charge(pod, queue, model, Fraction(units), priority, started, node, group)
        self.charges[pod] = c
        self._pods[queue][pod] = c
        for name in self.tree.paths[queue]:
            key = (name, model)
            self._used[key] = self._used.get(key, ZERO) + c.units
        return c

    def release(self, pod: str) -> Charge | None:
        """Forget `pod`'s charge (None if it held none: CPU-only pods are never charged)."""
        c = self.charges.pop(pod, None)
        if c is None:
            return None
        del self._pods[c.queue][pod]
        for name in self.tree.paths[c.queue]:
            key = (name, c.model)
            self._used[key] -= c.units
        return c

    # -- reading --------------------------------------------------------------------------

    def usage(self, queue: str, model: str) -> Fraction:
        """Units of `model` held by `queue` (a parent: by all its leaves)."""
        return self._used.get((queue, model), ZERO)

    def usage_by_model(self, queue: str) -> dict[str, Fraction]:
        return {m: u for (q, m), u in self._used.items() if q == queue and u}

    def pods_of(self, queue: str) -> list[Charge]:
        return list(self._pods[queue].values())

    def entry(self, queue: str, model: str) -> ResourceQuota:
        return self.tree.specs[queue].entry(model)

    @property
    def models(self) -> list[str]:
        """Models with capacity or usage, sorted."""
        return sorted({*self.capacity, *(m for (_, m) in self._used)})

    def headroom(self, queue: str, model: str) -> Fraction | None:
        """Units of `model` the leaf may still add before some limit on its path (None: no limit)."""
        room: Fraction | None = None
        for name in self.tree.paths[queue]:
            limit = self.entry(name, model).limit
            if limit is not None:
                left = limit - self.usage(name, model)
                room = left if room is None else min(room, left)
        return room

    def limit_refusal(self, queue: str, model: str, units: Fraction, what: str = "pod") -> str | None:
        """None if `units` more of `model` keep every queue on `queue`'s path within its limit;
        else the message the pod waits with, naming the queue whose limit binds."""
        for name in reversed(self.tree.paths[queue]):
            limit = self.entry(name, model).limit
            used = self.usage(name, model)
            if limit is not None and used + units > limit:
                who = f"queue {queue}:" if name == queue else f"queue {queue}: parent queue {name}'s"
                return (
                    f"{who} limit {format_units(limit)} {GPU_RESOURCE} ({model}) reached "
                    f"({format_units(used)} in use, {what} asks {format_units(units)})"
                )
        return None

    def group_refusal(self, queue: str, units: Mapping[str, Fraction]) -> str | None:
        """`limit_refusal` for a pod group as a whole: its members' units summed per model."""
        for model in sorted(units):
            why = self.limit_refusal(queue, model, units[model], what="pod group")
            if why is not None:
                return why
        return None

    def quota_left(self, queue: str, model: str) -> Fraction:
        """The leaf's quota minus its usage of `model` (negative: it borrows)."""
        return self.entry(queue, model).quota - self.usage(queue, model)

    def within_quota(self, queue: str, model: str, units: Fraction) -> bool:
        """Whether `units` more of `model` keep the leaf at or below its quota (then reclaim may
        make room for them)."""
        return units <= self.quota_left(queue, model)

    def over_quota(self, queue: str, model: str) -> bool:
        return self.quota_left(queue, model) < 0

    def capacity_message(self, queue: str, model: str, units: Fraction, why: str) -> str:
        """Why a pod within its queue's quota still waits: the cluster lacks the capacity."""
        quota = self.entry(queue, model).quota
        return (
            f"queue {queue}: within quota {format_units(quota)} {GPU_RESOURCE} ({model}) "
            f"({format_units(self.usage(queue, model))} in use, pod asks {format_units(units)}) "
            f"but the cluster lacks the capacity: {why}"
        )

    # -- sharing and order ----------------------------------------------------------------

    def fair_shares(self, pending: Mapping[Key, Fraction] | None = None) -> dict[Key, Fraction]:
        """Fair share per (queue, model) of this book's capacity; `pending` units per leaf and
        model count as demand next to usage."""
        return fair_shares(self.tree, self.capacity, self._used, pending or {})

    def order(self, queues: Iterable[str], fair: Mapping[Key, Fraction]) -> list[str]:
        """Leaf queues furthest below their fair share first (`placement.quota.order`)."""
        return queue_order(self.tree, queues, self.models, self.usage, fair)

    def queue_key(
        self, queue: str, fair: Mapping[Key, Fraction], models: Sequence[str] | None = None
    ) -> tuple:
        """`order`'s sort key of one leaf (for a heap that re-ranks a queue after each placement)."""
        return queue_key(self.tree, queue, self.models if models is None else models, self.usage, fair)
