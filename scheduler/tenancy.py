"""Queues with quotas per GPU model, kept live: Queue objects in, one quota book in step
with the cache, and the answers the cycle asks of them (`placement.quota` decides).

Queue objects (`tessellate.dev/v1alpha1`, cluster-scoped) arrive from an informer. Each
is parsed on its own; one that cannot be parsed, or that breaks the tree (an unknown
parent, a cycle, children promised more than their parent), is quarantined: left out,
its status says why, and every other queue keeps working. Pods name their queue with
the label `tessellate.dev/queue`; without it they are in `default`.

The book is never written by the cycle directly: `sync` charges every allocation the
cache's placement state holds (bound or assumed) to its pod's queue and releases what
left, so usage always equals the sum of the queues' pods, including after a restart,
when the state is rebuilt from bound pods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
from tessellate.placement import Assignment
from tessellate.placement.quota import (
    DEFAULT_QUEUE,
    QUEUE_LABEL,
    NodeKinds,
    QueueSpec,
    QueueSpecError,
    QueueTree,
    QuotaBook,
    UnknownQueueError,
    blocking_messages,
    format_units,
    gpu_capacity,
    parse_queue,
    placed_units,
    quota_mask,
)
from tessellate.placement.quota.book import GPU_RESOURCE, Charge
from tessellate.placement.quota.reclaim import reclaim_by_kind
from tessellate.placement.state import ClusterState
from tessellate.scheduler.preemption import fits_without, started

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache
    from tessellate.scheduler.podrecord import PodRecord

log = logging.getLogger("tessellate.tenancy")

GROUP, VERSION, PLURAL = "tessellate.dev", "v1alpha1", "queues"
QUEUES_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
QUOTA_NOTE = " Not the quota: "
"""Joins the fit message and the queue's note (metrics strip what follows it)."""
MAX_QUEUES = 1000
"""More Queue objects than this are refused (each one costs every ordering decision)."""


def tenant_of(rec: PodRecord) -> str:
    """The tenant queue a pending pod waits in: its label, or `default`."""
    return Tenancy.label(rec) or DEFAULT_QUEUE


def owner(key: str) -> str:
    """The pod uid behind a placement-state key (a time-sliced pod holds `uid#sliceK` too)."""
    return key.split("#slice", 1)[0]


@dataclass(frozen=True)
class Reclaim:
    """Victims of queues over their quota whose preemption lets a pod within quota fit."""

    node: str
    victims: tuple[PodRecord, ...]
    queue: str
    """The claimant's queue (the victims' events say `Reclaimed by queue <queue>`)."""


class Tenancy:
    """The live queues: specs from Queue objects, the quota book, and the cycle's questions."""

    def __init__(self, scheduler_name: str = "tessellate", default: QueueSpec | None = None) -> None:
        self.scheduler_name = scheduler_name
        self.default = default
        self._objects: dict[str, dict[str, Any]] = {}
        self.problems: dict[str, str] = {}
        """Queue name -> why its object is left out (shown in its status)."""
        self.tree = QueueTree([], default=default)
        self.book: QuotaBook | None = None
        self._kinds: NodeKinds | None = None
        self._synced_state: ClusterState | None = None
        self._seen: dict[str, Assignment] = {}
        """Every allocation read into the book (charged, or not ours to charge)."""
        self._seen_on: dict[int, set[str]] = {}
        self._versions = np.zeros(0, dtype=np.int64)
        self.rank: Mapping[str, tuple] = {}
        """Queue -> order key (furthest below fair share first): a snapshot the scheduling
        queue reads without locks; replaced whole by `publish_rank`."""
        self.version = 0
        """Bumped whenever the set of valid queues changes."""
        self._fair: Mapping[tuple[str, str], Fraction] = {}

    # -- Queue objects (informer handlers; cache lock held) ---------------------------------

    @property
    def active(self) -> bool:
        """True once any Queue object exists: before that every pod is in `default`."""
        return bool(self._objects) or self.default is not None

    def replace(self, items: Iterable[dict[str, Any]]) -> None:
        self._objects = {}
        for obj in items:
            name = str((obj.get("metadata") or {}).get("name") or "")
            if name:
                self._objects[name] = obj
        self._rebuild()

    def upsert(self, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if name:
            self._objects[name] = obj
            self._rebuild()

    def delete(self, obj: dict[str, Any]) -> None:
        if self._objects.pop(str((obj.get("metadata") or {}).get("name") or ""), None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        """Parse every object alone; quarantine the ones the tree refuses, one at a time."""
        problems: dict[str, str] = {}
        specs: dict[str, QueueSpec] = {}
        for i, (name, obj) in enumerate(sorted(self._objects.items())):
            if i >= MAX_QUEUES:
                problems[name] = f"more than {MAX_QUEUES} Queue objects; this one is ignored"
                continue
            try:
                specs[name] = parse_queue(obj, i)
            except QueueSpecError as exc:
                problems[name] = str(exc)
        while True:
            try:
                tree = QueueTree(list(specs.values()), default=self.default)
                break
            except QueueSpecError as exc:
                bad = exc.queue if exc.queue in specs else next(iter(sorted(specs)), None)
                if bad is None:
                    raise
                problems[bad] = str(exc)
                del specs[bad]
        # A queue whose parent was quarantined cannot be placed in the tree either.
        self.tree, self.problems = tree, problems
        self.book, self._synced_state, self._seen, self._seen_on = None, None, {}, {}
        self.version += 1
        for name, why in problems.items():
            log.warning("Queue %s is left out: %s", name, why)

    # -- the book, in step with the placement state ----------------------------------------

    def sync(self, cache: ClusterCache) -> QuotaBook | None:
        """The book for the cache's current state: every allocation charged to its pod's queue.

        Only the nodes whose `ClusterState.version` moved since the last call are re-read
        (`ClusterState.keys_on`), so a cycle costs the pods of the node it changed, not all."""
        state = cache.state if cache.ensure_built() else None
        if state is None:
            self.book = None
            return None
        if self.book is None or self._synced_state is not state:
            self.book = QuotaBook(self.tree, gpu_capacity(state))
            self._kinds = NodeKinds(state)
            self._seen, self._seen_on = {}, {}
            self._versions = np.full(len(state), -1, dtype=state.version.dtype)
            self._synced_state = state
        changed = np.flatnonzero(state.version != self._versions)
        if changed.size:
            self._versions = state.version.copy()
            for node in changed.tolist():
                self._sync_node(cache, state, node)
        return self.book

    def _sync_node(self, cache: ClusterCache, state: ClusterState, node: int) -> None:
        """Bring one node's allocations into the book: forget what left or changed, read what is new."""
        live, mine = state.live, self._seen_on.setdefault(node, set())
        for key in [k for k in mine if live.get(k) is not self._seen[k]]:
            self._forget(key)
        for key in state.keys_on[node] - mine:
            if key in self._seen:
                self._forget(key)  # moved from another node not re-read yet
            self._read(cache, state, key, live[key])

    def _forget(self, key: str) -> None:
        assignment = self._seen.pop(key)
        self._seen_on[assignment.node].discard(key)
        if self.book is not None and key in self.book.charges:
            self.book.release(key)

    def _read(self, cache: ClusterCache, state: ClusterState, key: str, assignment: Assignment) -> None:
        assert self.book is not None
        self._seen[key] = assignment
        self._seen_on.setdefault(assignment.node, set()).add(key)
        rec = cache.pods.get(owner(key))
        if rec is None or rec.scheduler_name != self.scheduler_name:
            return  # another scheduler's pod: it takes capacity, no queue's quota
        model, units = placed_units(state, assignment)
        if model:
            self.book.charge(
                key,
                self.leaf_or_default(rec),
                model,
                units,
                priority=rec.priority,
                started=started(rec),
                node=assignment.node,
            )

    def leaf_or_default(self, rec: PodRecord) -> str:
        """The pod's queue; a running pod whose queue is gone is counted in `default`."""
        try:
            return self.tree.leaf_for(self.label(rec))
        except UnknownQueueError:
            return DEFAULT_QUEUE

    @staticmethod
    def label(rec: PodRecord) -> str:
        return str(((rec.obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL) or "")

    # -- what the cycle asks ----------------------------------------------------------------

    def prefilter(self, rec: PodRecord) -> str | None:
        """Why a pending pod cannot be queued as written: its queue is missing or broken, or
        does not admit the pod's namespace (a pod author picks the label, not the quota)."""
        label = self.label(rec)
        if label in self.problems:
            return f"queue {label!r} is not usable: {self.problems[label]}; fix the Queue object"
        try:
            leaf = self.tree.leaf_for(label)
        except UnknownQueueError as exc:
            return f"{exc} (label {QUEUE_LABEL})"
        return self.tree.refusal_for_namespace(leaf, rec.namespace)

    def limit_mask(self, cache: ClusterCache, rec: PodRecord) -> tuple[np.ndarray | None, str]:
        """Nodes where the pod stays within its queue's limits, and the message for the rest."""
        book = self.sync(cache)
        if book is None or self._kinds is None or rec.request is None:
            return None, ""
        queue = self.leaf_or_default(rec)
        request = rec.request.request
        mask = quota_mask(book, self._kinds, queue, request)
        if mask is None:
            return None, ""
        messages = blocking_messages(book, self._kinds, queue, request)
        return mask, messages[0] if messages else f"queue {queue}: limit reached"

    def explain(self, cache: ClusterCache, rec: PodRecord, message: str) -> str:
        """The wait message of a pod that fits nowhere, saying when the quota is not the reason:
        within its queue's quota, only the cluster's capacity (or reclaim) is missing."""
        book = self.sync(cache)
        if book is None or self._kinds is None or rec.request is None:
            return message
        queue = self.leaf_or_default(rec)
        for model, units in sorted(self._kinds.demand(rec.request.request).items()):
            quota = book.entry(queue, model).quota
            if quota > 0 and book.within_quota(queue, model, units):
                return (
                    f"{message}{QUOTA_NOTE}queue {queue} is within its quota of {format_units(quota)} "
                    f"{GPU_RESOURCE} ({model}) ({format_units(book.usage(queue, model))} in use, pod asks "
                    f"{format_units(units)}); the cluster lacks the capacity, and no borrowed GPU is left"
                )
        return message

    def unlimited(self, rec: PodRecord) -> bool:
        """No limit anywhere on the pod's queue path (batching computes masks only once)."""
        if not self.active:
            return True
        path = self.tree.paths.get(self.leaf_or_default(rec), ())
        return all(
            r.limit is None for q in path if q in self.tree.specs for r in self.tree.specs[q].resources
        )

    def find_reclaim(
        self, cache: ClusterCache, rec: PodRecord, leaving: Set[str] = frozenset()
    ) -> Reclaim | None:
        """Over-quota pods to preempt so that `rec`, within its queue's quota, fits; `leaving`:
        pods already being deleted (their room counts as free, they are not chosen again)."""
        book = self.sync(cache)
        kinds, state, placer = self._kinds, cache.state, cache.placer
        if book is None or kinds is None or state is None or placer is None or rec.request is None:
            return None
        queue = self.leaf_or_default(rec)
        allowed, _ = cache.filter(rec, pods_matter=False)
        fits = lambda vs, nodes: self._fits_without(cache, rec, vs, nodes, leaving)  # noqa: E731
        for found in reclaim_by_kind(book, kinds, queue, rec.request.request, fits, allowed):
            uids = dict.fromkeys(u for c in found.pods if (u := owner(c.pod)) not in leaving)
            victims = tuple(cache.pods[uid] for uid in uids if uid in cache.pods)
            if victims:
                return Reclaim(state.names[int(found.node)], victims, queue)
        return None

    @staticmethod
    def _fits_without(
        cache: ClusterCache, rec: PodRecord, victims: Sequence[Charge], nodes: np.ndarray, leaving: Set[str]
    ) -> bool:
        """The preemption what-if (`scheduler.preemption.fits_without`) on the first victim's
        node, with the pods already leaving from that node counted as gone too."""
        state = cache.state
        assert state is not None
        node = int(victims[0].node)  # type: ignore[arg-type]
        if not nodes[node]:
            return False
        here = state.names[node]
        gone = [owner(c.pod) for c in victims]
        gone += [
            uid for uid in leaving if (other := cache.pods.get(uid)) is not None and other.node_name == here
        ]
        return fits_without(cache, rec, gone, node)

    # -- ordering, status and metrics -------------------------------------------------------

    def pending_demand(self, cache: ClusterCache, pending: Callable[[PodRecord], bool]) -> dict:
        """(queue, model) -> GPU units its pending pods ask for (the least over the kinds)."""
        demand: dict[tuple[str, str], Fraction] = {}
        if self.sync(cache) is None or self._kinds is None:  # the node kinds follow the state
            return demand
        for rec in cache.pods.values():
            if rec.request is None or not pending(rec):
                continue
            queue = self.leaf_or_default(rec)
            for model, units in self._kinds.demand(rec.request.request).items():
                demand[(queue, model)] = demand.get((queue, model), Fraction(0)) + units
        return demand

    def publish_rank(self, cache: ClusterCache, demand: Mapping[tuple[str, str], Fraction]) -> dict:
        """Recompute fair shares (from `pending_demand`) and the queue order; returns the shares."""
        book = self.sync(cache)
        if book is None or not self.active:
            self.rank = {}
            return {}
        self._fair = book.fair_shares(demand)
        self.rerank(cache)
        return self._fair

    def rerank(self, cache: ClusterCache, queue: str | None = None) -> None:
        """The queue order from current usage and the last fair shares: after every placement,
        so that one queue cannot run ahead of its share between two fair-share refreshes.
        With `queue` (whose usage moved), only the leaves under its root are re-ranked."""
        book = self.sync(cache) if self.active else None
        if book is None:
            return
        models = book.models
        leaves = self.tree.leaves
        if queue is not None and queue in self.tree.paths and set(self.rank) >= set(leaves):
            root = self.tree.paths[queue][0]
            leaves = [leaf for leaf in leaves if self.tree.paths[leaf][0] == root]
            self.rank = {**self.rank, **{leaf: book.queue_key(leaf, self._fair, models) for leaf in leaves}}
            return
        self.rank = {leaf: book.queue_key(leaf, self._fair, models) for leaf in leaves}

    def status(self, fair: Mapping[tuple[str, str], Fraction], pending: Mapping) -> dict[str, dict]:
        """Queue name -> the `status` the leader writes (allocated, pending, fair share, conditions)."""
        book = self.book
        out: dict[str, dict] = {}
        for name in self._objects:
            if name in self.problems:
                out[name] = {"conditions": [_condition("Ready", "False", "InvalidSpec", self.problems[name])]}
                continue
            used = book.usage_by_model(name) if book is not None else {}
            asked = {m: u for (q, m), u in pending.items() if q == name}
            share = {m: u for (q, m), u in fair.items() if q == name}
            models = sorted(set(used) | set(asked) | set(share))
            out[name] = {
                "allocated": {m: _number(used.get(m, 0)) for m in models if used.get(m)},
                "pending": {m: _number(asked.get(m, 0)) for m in models if asked.get(m)},
                "fairShare": {m: _number(share.get(m, 0)) for m in models if m in share},
                "allocatedGPUs": _number(sum(used.values(), Fraction(0))),
                "pendingGPUs": _number(sum(asked.values(), Fraction(0))),
                "conditions": [_condition("Ready", "True", "Valid", "the queue takes pods")],
            }
        return out


def _number(x: Fraction | int) -> float | int:
    """A JSON number for a status field (an int when whole)."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else float(format_units(x))


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message[:1024]}
