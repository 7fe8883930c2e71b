"""How well multi-GPU pods are connected: the topology metrics of a placement.

For each pod holding k >= 2 whole GPUs on a node with known wiring, the ratio of
its bottleneck bandwidth (slowest GPU pair) to the best bottleneck any k GPUs of
that node shape could have. A pod "on its best interconnect" has ratio 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from tessellate.placement import ClusterState
from tessellate.placement.topology import NodeTopology, best_gpu_set


@dataclass(frozen=True)
class InterconnectQuality:
    multi_gpu_pods: int
    on_best: int
    """Pods whose GPUs are as well connected as that node shape allows."""
    mean_ratio: float
    """Mean bottleneck bandwidth / best possible on that node shape, weighted by GPU count (1.0 = perfect)."""
    mean_bandwidth: float
    """Mean bottleneck bandwidth in GB/s, weighted by GPU count (what the jobs actually get)."""

    @property
    def share_on_best(self) -> float:
        return self.on_best / self.multi_gpu_pods if self.multi_gpu_pods else 1.0


def bottleneck(topology: NodeTopology, gpus: tuple[int, ...]) -> float:
    """The slowest pair's bandwidth (GB/s) among `gpus`."""
    idx = np.array(gpus)
    sub = topology.bandwidth[np.ix_(idx, idx)]
    return float(sub[~np.eye(len(idx), dtype=bool)].min())


@lru_cache(maxsize=256)
def best_bottleneck(topology: NodeTopology, k: int) -> float:
    """The best bottleneck any k GPUs of an empty node of this shape have."""
    chosen = best_gpu_set(topology, (1 << topology.gpu_count) - 1, k)
    assert chosen is not None
    return bottleneck(topology, chosen)


def interconnect_quality(
    state: ClusterState, topologies: Mapping[str, NodeTopology] | None = None
) -> InterconnectQuality:
    """Score the pods in `state`; `topologies` (by node name) overrides the nodes' own, so a
    run that placed pods blind to topology can be judged by the real wiring."""
    pods = on_best = 0
    weighted = weight = gbps = 0.0
    for a in state.live.values():
        k = len(a.gpus)
        if k < 2 or a.request.is_fraction:
            continue
        topology = topologies.get(a.node_name) if topologies is not None else state.nodes[a.node].topology
        if topology is None:
            continue
        got = bottleneck(topology, a.gpus)
        ratio = got / best_bottleneck(topology, k)
        pods += 1
        on_best += ratio >= 1.0 - 1e-9
        weighted += k * ratio
        gbps += k * got
        weight += k
    if not weight:
        return InterconnectQuality(0, 0, 1.0, 0.0)
    return InterconnectQuality(pods, on_best, weighted / weight, gbps / weight)
