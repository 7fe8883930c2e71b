"""FGD that also weighs how well a node can connect a multi-GPU pod's GPUs.

A k-GPU job runs at the speed of its slowest GPU pair, so for whole-GPU
requests of k >= 2 the node score blends FGD's fragmentation score with the
node's topology score (the bottleneck bandwidth of its best free k-set, relative
to the best that node shape offers when empty, 0..1; nodes without a known
topology count as 1, so the policy never penalises missing information):

    score = (1 - w) * fgd + w * 100 * topology

with w = `PolicyContext.topology_weight` (0: plain FGD; 1: topology only).
Single GPUs and fractions are scored by FGD alone. The score still depends only
on the node's state and the request's shape, so the per-node score cache holds.
"""

from __future__ import annotations

import numpy as np

from placement.devices import first_free
from placement.model import MILLI_PER_GPU, Request
from placement.policies.base import register
from placement.policies.fgd import FgdPolicy
from placement.state import ClusterState
from placement.topology import TopologyIndex, free_masks, scores_for_nodes


@register
class TopologyAwareFgd(FgdPolicy):
    name = "fgd-topo"
    paper_name = None
    description = "FGD blended with NVLink/PCIe/NUMA fitness for multi-GPU pods"

    def bind(self, state: ClusterState) -> None:
        super().bind(state)
        self.weight = float(self.context.topology_weight)
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"topology weight must be in 0..1, got {self.weight}")
        topologies = [node.topology for node in state.nodes]
        self._index = (
            TopologyIndex(topologies, max_gpus=state.max_gpus)
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
class TopologyBlindFgd(FgdPolicy):
    """FGD that ignores GPU wiring entirely: the baseline topology awareness is measured against."""

    name = "fgd-blind"
    paper_name = None
    description = "FGD with first-free GPUs even where the node's wiring is known (a baseline)"

    def choose_gpus(self, state: ClusterState, node: int, request: Request) -> tuple[int, ...]:
        if request.gpu_count and not request.is_fraction and not request.is_mig:
            return first_free(state, node, request.gpu_count)
        return super().choose_gpus(state, node, request)
