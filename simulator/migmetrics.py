"""MIG metrics of a replay: the expected MIG demand of a trace and MIG slot fragmentation.

The MIG fragmentation of a cluster is `placement.migfrag.mig_fragmentation` summed over
the GPUs in MIG mode: the expected number of free memory slices that the trace's
MIG demand could not use. GPUs outside MIG mode count 0 (they are whole GPUs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from tessellate.placement import ClusterState
from tessellate.placement.mig import MigGeometry, MigLayout
from tessellate.placement.migfrag import mig_fragmentation
from tessellate.simulator.trace import Trace


def mig_demand(trace: Trace) -> dict[str, float] | None:
    """Profile -> share of the MIG instances the trace asks for; None when it asks for none."""
    counts: Counter[str] = Counter()
    for pod in trace.pods:
        if pod.request.is_mig:
            counts[pod.request.mig_profile] += pod.request.mig_count
    total = sum(counts.values())
    return {p: n / total for p, n in sorted(counts.items())} if total else None


@lru_cache(maxsize=65536)
def _frag(layout: MigLayout, demand: tuple[tuple[str, float], ...] | None) -> float:
    return mig_fragmentation(layout, None if demand is None else dict(demand)) if len(layout) else 0.0


def _for_model(g: MigGeometry, demand: tuple[tuple[str, float], ...] | None) -> tuple | None:
    if demand is None:
        return None
    kept = tuple((p, w) for p, w in demand if p in g.profile_names and w > 0)
    return kept or None


class MigFragmentationMeter:
    """The cluster's MIG fragmentation, updated per changed node (memoised per layout)."""

    def __init__(self, state: ClusterState, demand: Mapping[str, float] | None = None):
        self.state = state
        items = None if demand is None else tuple(sorted(demand.items()))
        self._demand = {node: _for_model(g, items) for node, g in state.mig.geometry.items()}
        self.per_node = np.zeros(len(state))
        self.update(np.flatnonzero(state.mig.capable))

    def node_value(self, node: int) -> float:
        demand = self._demand[node]
        return sum(_frag(layout, demand) for layout in self.state.mig.layouts[node])

    def update(self, nodes: np.ndarray) -> None:
        for node in nodes.tolist():
            if node in self._demand:
                self.per_node[node] = self.node_value(node)

    @property
    def total(self) -> float:
        return float(self.per_node.sum())
