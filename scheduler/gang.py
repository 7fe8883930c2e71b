"""Pod groups (gang scheduling): a distributed job's pods are placed all together or not at all.

A pod joins a group with the label `tessellate.dev/pod-group: NAME` and says how many
members must run together with the annotation `tessellate.dev/pod-group-min-available: N`
(the contract of the coscheduling plugin's PodGroup `minMember`, carried on the pods so that
no CRD is needed). Groups are per namespace.

When any member is tried, every pending member is decided in one pass with the cache
lock held. Decisions are assumed as they are made; if fewer than `N` members are bound
or placed at the end, every decision of the pass is forgotten, so a half-placed job never
holds GPUs that the other half waits for (the deadlock gang scheduling exists to prevent).
Bound members count towards `N`: after a restart, or once the group has started, further
members are placed one by one like any pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tessellate.placement import Unschedulable
from tessellate.placement.batch import BatchOptions
from tessellate.placement.gang import demand_order, place_together
from tessellate.scheduler.batching import reserve_batch, solve_batch

from tessellate.wire.podspec import PodRequestError

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache, Placed
    from tessellate.scheduler.podrecord import PodRecord

POD_GROUP = "tessellate.dev/pod-group"
MIN_AVAILABLE = "tessellate.dev/pod-group-min-available"
MAX_MIN_AVAILABLE = 10_000
REASON_NEEDS_MIG_PLAN = "needs new MIG instances, which pod groups do not wait for yet"


class PodGroupError(ValueError):
    """A pod's group label or annotation that cannot be honoured as written."""


@dataclass(frozen=True)
class PodGroup:
    namespace: str
    name: str
    min_available: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_group(pod: dict[str, Any]) -> PodGroup | None:
    """The group a pod belongs to (None: it schedules alone); PodGroupError says what is wrong."""
    meta = pod.get("metadata") or {}
    name = (meta.get("labels") or {}).get(POD_GROUP)
    raw = (meta.get("annotations") or {}).get(MIN_AVAILABLE)
    if name is None:
        if raw is not None:
            raise PodGroupError(f"annotation {MIN_AVAILABLE} is set but the pod has no label {POD_GROUP}")
        return None
    if not str(name).strip():
        raise PodGroupError(f"label {POD_GROUP} is empty; name the pod group")
    if raw is None:
        raise PodGroupError(
            f"pod group {name!r} needs annotation {MIN_AVAILABLE}: how many of its pods must run together"
        )
    try:
        count = int(str(raw).strip())
    except ValueError:
        raise PodGroupError(f"annotation {MIN_AVAILABLE} must be an integer, got {raw!r}") from None
    if not 1 <= count <= MAX_MIN_AVAILABLE:
        raise PodGroupError(f"annotation {MIN_AVAILABLE} must be 1..{MAX_MIN_AVAILABLE}, got {count}")
    return PodGroup(namespace=meta.get("namespace") or "default", name=str(name), min_available=count)


@dataclass
class GroupDecision:
    """One pass over a group: what was placed (assumed, to bind) and what was not, and why."""

    group: PodGroup
    placed: list[Placed] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """uid -> why that member was not placed (for all members when the group was not placed)."""
    members: list[PodRecord] = field(default_factory=list)
    """The pending members this pass tried, in the order they were decided."""
    running: int = 0
    """Members already bound or assumed before this pass."""


def decision_order(members: Iterable[PodRecord]) -> list[PodRecord]:
    """Higher priority first, then the core's demand order (biggest GPU demand), then name."""

    def key(rec: PodRecord) -> tuple:
        demand = demand_order(rec.request.request) if rec.request is not None else 0
        return (-rec.priority, demand, rec.key)

    return sorted(members, key=key)


def decide_group(
    cache: ClusterCache,
    group: PodGroup,
    pending: Callable[[PodRecord], bool],
    batch: BatchOptions | None = None,
) -> GroupDecision:
    """Decide every pending member of `group`; keep the decisions only if enough members run.

    `pending` says which records are this scheduler's to place now (the caller's filter:
    our scheduler name, unbound, not deleting, not gated). When one member at a time leaves
    too few placed, `batch` (if given) decides the members together with CP-SAT
    (`placement.batch`), which may fit them where greedy order cannot. Expects `cache.lock`.
    """
    decision = GroupDecision(group)
    mins: set[int] = set()
    for rec in cache.group_members(group.key):
        if rec.group is not None:
            mins.add(rec.group.min_available)
        if rec.node_name or rec.uid in cache.assumed:
            if not rec.deleting:
                decision.running += 1
        elif pending(rec) and rec.problem is None and rec.uid not in cache.mig_waits:
            decision.members.append(rec)
    decision.members = decision_order(decision.members)
    if len(mins) > 1:
        listed = ", ".join(map(str, sorted(mins)))
        return _fail_all(decision, f"pod group {group.key}: members disagree on {MIN_AVAILABLE} ({listed})")
    exist = decision.running + len(decision.members)
    if exist < group.min_available:
        return _fail_all(
            decision,
            f"pod group {group.key}: waiting for {group.min_available - exist} more pod(s) "
            f"({MIN_AVAILABLE} is {group.min_available}, {exist} exist)",
        )

    def decide(rec: PodRecord) -> Placed | str:
        if cache.tenancy.active and (why := cache.tenancy.prefilter(rec)) is not None:
            return why  # each member's own queue label, not only the first member's
        try:
            result = cache.decide(rec)
        except PodRequestError as exc:
            return str(exc)
        if isinstance(result, Unschedulable):
            return result.message
        if result.assignment.mig_plans:
            cache.forget(rec.uid)
            return REASON_NEEDS_MIG_PLAN
        return result

    outcome = place_together(
        decision.members, group.min_available, decision.running, decide, lambda p: cache.forget(p.uid)
    )
    decision.placed = [placed for _, placed in outcome.kept]
    decision.failed = {rec.uid: why for rec, why in outcome.refused}
    if outcome.enough:
        return decision
    together = _decide_together(cache, decision, batch) if batch is not None else None
    if together is not None:
        return together
    first, why = outcome.refused[0]
    return _fail_all(
        decision,
        f"pod group {group.key}: {group.min_available} pod(s) must run together and only "
        f"{decision.running + outcome.rolled_back} fit now; "
        f"{len(outcome.refused)} member(s) do not fit, e.g. {first.key}: {why}",
    )


def _decide_together(
    cache: ClusterCache, decision: GroupDecision, options: BatchOptions
) -> GroupDecision | None:
    """The members decided as one batch (`scheduler/batching.py`); None (nothing reserved)
    unless enough of them fit."""
    members = decision.members
    result = solve_batch(cache, members, options)
    if result is None or decision.running + len(result.assignments) < decision.group.min_available:
        return None
    decision.placed = reserve_batch(cache, members, result)
    chosen = {p.uid for p in decision.placed}
    decision.failed = {uid: why for uid, why in decision.failed.items() if uid not in chosen}
    return decision


def _fail_all(decision: GroupDecision, message: str) -> GroupDecision:
    decision.failed = {rec.uid: message for rec in decision.members}
    return decision
