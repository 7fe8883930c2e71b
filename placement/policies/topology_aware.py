"""FGD that also weighs how fast a node can connect a multi-GPU pod's GPUs.

A k-GPU job runs at the speed of its slowest GPU pair, so for whole-GPU
requests of k >= 2 the node score blends FGD's fragmentation score with a
topology score in 0..1:

    score = (1 - w) * fgd + w * 100 * topology

with w = `PolicyContext.topology_weight` (0: plain FGD; 1: topology only).
Single GPUs and fractions are scored by FGD alone.

`fgd-topo`: the topology score is *absolute*. It is the bottleneck bandwidth of
the node's best free k-set (the set `best_gpu_set` would hand out) over the best
bottleneck any node shape of the cluster offers k GPUs when empty. On a cluster of
HGX A100 (NVSwitch), DGX-1 V100 and PCIe servers a 4-GPU job scores 1.0 on an
empty NVSwitch node, 0.08 on an empty DGX-1 and 0.04 on a PCIe-only server, so
multi-GPU jobs are steered to the fast fabric while it has room.

`fgd-topo-relative`: the score is relative to the node's own shape (its best
free k-set over the best an empty node of that shape offers): it prefers, among
nodes of one shape, those that still have an intact well-connected set, but it
cannot tell a PCIe server from an NVSwitch node.

Nodes without a known topology: `fgd-topo-relative` scores them 1.0 (as good as
the node could be). For `fgd-topo` 1.0 would mean "as good as the best node in
the cluster" and would pull multi-GPU jobs onto nodes nobody knows anything
about; 0 would push them off. Neutral is a typical node instead: the mean, over
the known nodes with at least k GPUs, of their score when empty
(`TopologyIndex.unknown`). With one known shape that is 1.0, as before; an unknown
node's topology term does not change as it fills, so among unknown nodes FGD
alone decides. A cluster with no known topology is scored by plain FGD.

The reference bandwidths are fixed when the policy is bound to a cluster, so a
node's score still depends only on its own state and the request's shape and
the per-node score cache holds. Both scores come from per-shape tables indexed by
(free-GPU mask, k) and are gathered for all feasible nodes at once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from tessellate.placement.devices import first_free
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.policies.base import register
from tessellate.placement.policies.fgd import FgdPolicy
from tessellate.placement.state import ClusterState
from tessellate.placement.topology import TopologyIndex, free_masks, scores_for_nodes


@register
class TopologyAwareFgd(FgdPolicy):
    name = "fgd-topo"
    paper_name = None
    description = "FGD blended with the bottleneck GB/s a node gives multi-GPU pods, across node shapes"
    relative_to: ClassVar[str] = "cluster"
    """`TopologyIndex` reference: "cluster" (absolute) or "shape" (relative to the node's shape)."""

    def bind(self, state: ClusterState) -> None:
        super().bind(state)
        self.weight = float(self.context.topology_weight)
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"topology weight must be in 0..1, got {self.weight}")
        topologies = [node.topology for node in state.nodes]
        self._index = (
            TopologyIndex(topologies, max_gpus=state.max_gpus, relative_to=self.relative_to)
            if any(t is not None for t in topologies)
            else None
        )

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        fgd = super().score(state, request, nodes)
        if self._index is None or self.weight == 0.0 or request.is_fraction or request.gpu_count < 2:
            return fgd
        masks = free_masks(state.gpu_left[nodes] == MILLI_PER_GPU)
        topo = scores_for_nodes(self._index, masks, request.gpu_count, nodes=nodes)
        return np.rint((1.0 - self.weight) * fgd + self.weight * 100.0 * topo).astype(np.int64)


@register
class ShapeRelativeTopologyFgd(TopologyAwareFgd):
    """`fgd-topo` with the topology score relative to each node's own shape."""

    name = "fgd-topo-relative"
    description = "FGD blended with how close a node's best free GPU set comes to the best of its shape"
    relative_to = "shape"


@register
class TopologyBlindFgd(FgdPolicy):
    """FGD that ignores GPU wiring entirely: the baseline topology awareness is measured against."""

    name = "fgd-blind"
    paper_name = None
    description = "FGD with first-free GPUs even where the node's wiring is known (a baseline)"

    def choose_gpus(self, state: ClusterState, node: int, request: Request) -> tuple[int, ...]:
        if request.gpu_count and not request.is_fraction and not request.is_mig:
            return first_free(state, node, request.gpu_count)
        return super().choose_gpus(state, node, request)
