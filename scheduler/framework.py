"""The scheduling framework's vocabulary, in kube-scheduler's words, kept vectorised.

A Filter plugin answers for every node at once: a boolean mask of the nodes it lets
through, and why the others fail (one reason for all, or one per node). The runner
chains the profile's filters in order and counts a node's reason only at the first
filter that rejects it, as kube-scheduler's FitError does, so messages read
`0/50 nodes are available: 3 Insufficient cpu, 47 ...` whatever the plugin order.

Adding a filter is one module under `scheduler/plugins/` and its name in the profile
(`FILTERS` below, or the config's `filters`). Capacity (CPU, memory, GPUs, MIG slots)
is not a plugin here: it is the placement core's, shared with the simulator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache
    from tessellate.scheduler.podrecord import PodRecord


@dataclass(frozen=True)
class Verdict:
    """One filter's answer: `passes[i]` for node i (None: every node passes, the common
    case, at no cost); the reason for every failing node, or `per_node[i]` (None where it
    passes) when reasons differ by node."""

    passes: np.ndarray | None
    reason: str = ""
    per_node: Sequence[str | None] | None = None
    counts: Counter[str] | None = None
    """`per_node` already counted over all nodes (a cached filter): used when no earlier
    filter rejected anything, so the common first filter costs no per-node loop."""


@dataclass
class FilterContext:
    """What filters read besides the pod: the cache (nodes, pods, arrays) and the
    extended-resource usage to test against (preemption asks with victims removed)."""

    cache: ClusterCache
    ext_used: Mapping[str, np.ndarray] = field(default_factory=dict)


PASS = None
"""`Verdict(PASS)`: the filter lets every node through."""


class Filter(Protocol):
    name: str
    reads_pods: bool
    """True when other pods' presence decides the answer (preemption may change it)."""

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict: ...


def run_filters(
    filters: Sequence[Filter], ctx: FilterContext, rec: PodRecord, mask: np.ndarray | None = None
) -> tuple[np.ndarray, Counter[str]]:
    """Nodes every filter lets through (within `mask`), and the counted reasons for the rest."""
    nodes = len(ctx.cache.state) if ctx.cache.state is not None else 0
    current = np.ones(nodes, dtype=bool) if mask is None else mask.copy()
    reasons: Counter[str] = Counter()
    for plugin in filters:
        verdict = plugin.filter(ctx, rec)
        if verdict.passes is None:
            continue
        failing = current & ~verdict.passes
        if failing.any():
            if verdict.counts is not None and current.all():
                reasons.update(verdict.counts)
            elif verdict.per_node is not None:
                reasons.update(verdict.per_node[i] or plugin.name for i in np.flatnonzero(failing))
            else:
                reasons[verdict.reason] += int(failing.sum())
        current &= verdict.passes
    return current, reasons


def build_filters(names: Sequence[str]) -> list[Filter]:
    """The profile's filters, by name, in order; unknown names say which exist."""
    from tessellate.scheduler.plugins import FILTER_PLUGINS

    unknown = [n for n in names if n not in FILTER_PLUGINS]
    if unknown:
        raise ValueError(f"unknown filter plugin(s) {unknown}; known: {', '.join(FILTER_PLUGINS)}")
    return [FILTER_PLUGINS[n]() for n in names]
