"""Which nodes a queue's pod may use without crossing a limit (or, for reclaim, its quota).

The answer is a node mask for `Placer.place(..., eligible=mask)`, so the core's own
filter and scorer then choose among the nodes quota allows: quota never re-asks whether
a pod fits. Units depend only on a node's GPU model and time-slicing replicas, so
`NodeKinds` groups the nodes by that pair once, and a mask is one decision per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from tessellate.placement.model import Request
from tessellate.placement.quota.book import QuotaBook
from tessellate.placement.quota.units import request_units
from tessellate.placement.state import ClusterState


@dataclass(frozen=True, slots=True)
class NodeKind:
    """GPU nodes of one model and one time-slicing replica count."""

    model: str
    replicas: int
    nodes: np.ndarray
    """Bool per node of the state."""


class NodeKinds:
    """The (model, replicas) kinds of a state's GPU nodes, with per-request units cached.

    Node specs never change in a `ClusterState`, so one of these serves it for good."""

    def __init__(self, state: ClusterState) -> None:
        self.size = len(state)
        gpu = state.model_id >= 0
        pairs = np.unique(np.stack([state.model_id, state.replicas], axis=1)[gpu], axis=0)
        self.kinds = tuple(
            NodeKind(state.gpu_models[int(m)], int(r), gpu & (state.model_id == m) & (state.replicas == r))
            for m, r in pairs
        )
        self._units: dict[Request, tuple[Fraction | None, ...]] = {}

    def units(self, request: Request) -> tuple[Fraction | None, ...]:
        """Units `request` takes on each kind (None: it cannot go there), in `kinds` order."""
        hit = self._units.get(request)
        if hit is None:
            hit = self._units[request] = tuple(
                request_units(request, k.model, k.replicas) for k in self.kinds
            )
        return hit

    def demand(self, request: Request) -> dict[str, Fraction]:
        """Per model `request` may use, the units it would take there (the least over kinds)."""
        out: dict[str, Fraction] = {}
        for kind, units in zip(self.kinds, self.units(request), strict=True):
            if units and (not request.gpu_models or kind.model in request.gpu_models):
                out[kind.model] = min(units, out.get(kind.model, units))
        return out


def gpu_capacity(state: ClusterState) -> dict[str, Fraction]:
    """GPUs per model in `state` (a time-sliced or MIG GPU is still one GPU)."""
    gpu = state.model_id >= 0
    counts = np.bincount(state.model_id[gpu], weights=state.gpu_count[gpu], minlength=len(state.gpu_models))
    return {m: Fraction(int(c)) for m, c in zip(state.gpu_models, counts, strict=True) if c}


def quota_mask(
    book: QuotaBook, kinds: NodeKinds, queue: str, request: Request, *, within_quota: bool = False
) -> np.ndarray | None:
    """Nodes where `request` keeps `queue` within every limit on its path (`within_quota`:
    also within the leaf's quota); None when nothing is excluded (callers keep fast paths).
    CPU-only requests are never limited."""
    if request.is_cpu_only:
        return None
    allowed: np.ndarray | None = None
    for kind, units in zip(kinds.kinds, kinds.units(request), strict=True):
        if units is None:
            continue  # the core refuses these nodes itself, with its own reason
        ok = book.limit_refusal(queue, kind.model, units) is None
        if ok and within_quota:
            ok = book.within_quota(queue, kind.model, units)
        if not ok:
            if allowed is None:
                allowed = np.ones(kinds.size, dtype=bool)
            allowed &= ~kind.nodes
    return allowed


def blocking_messages(book: QuotaBook, kinds: NodeKinds, queue: str, request: Request) -> list[str]:
    """The limit messages of every node kind `request` could use but its queue's limits forbid."""
    out = []
    for kind, units in zip(kinds.kinds, kinds.units(request), strict=True):
        if units is None:
            continue
        why = book.limit_refusal(queue, kind.model, units)
        if why is not None and why not in out:
            out.append(why)
    return out
