"""The FGD paper's baseline policies, transcribed from the artifact (fgd-protocol.md 3.5).

Each is a closed-form expression over the node arrays, vectorised over nodes.
Integer arithmetic follows Go (truncating division on non-negative values).
"""

from __future__ import annotations

import numpy as np
from tessellate.placement.devices import random_fit
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.policies.base import Policy, register
from tessellate.placement.state import SHARE_TAG, ClusterState

MAX_CPU_MILLI = 128_000
"""The artifact's normalisation constants: the largest node has 128 cores, 8 GPUs."""
MAX_GPU_MILLI = 8 * MILLI_PER_GPU


@register
class RandomPolicy(Policy):
    """A uniformly random feasible node; a random fitting GPU for fractions."""

    name = "random"
    paper_name = "01-Random"
    description = "uniform random feasible node (the paper's lower baseline)"
    pure = False

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(nodes), dtype=np.int64)
        scores[self.context.rng.intn(len(nodes))] = 100
        return scores

    def choose_fraction_gpu(self, state: ClusterState, node: int, request: Request) -> int:
        return random_fit(state, node, request, self.context.rng)


@register
class DotProductPolicy(Policy):
    """Prefers the node whose free (CPU, GPU) vector has the smallest dot product with
    the demand, i.e. the node with least spare capacity in the demanded dimensions."""

    name = "dotprod"
    paper_name = "02-DotProd"
    description = "smallest normalised <free, demand> dot product (Tetris-like)"

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        cpu_left = state.cpu_left[nodes]
        dot = (
            (cpu_left / MAX_CPU_MILLI) * (request.cpu_milli / MAX_CPU_MILLI)
            + (state.gpu_total_left[nodes] / MAX_GPU_MILLI) * (request.total_gpu_milli / MAX_GPU_MILLI)
        ) / 2
        scores = np.trunc(100 * (1 - dot)).astype(np.int64)
        scores[cpu_left < request.cpu_milli] = 0
        return scores


@register
class GpuClusteringPolicy(Policy):
    """Puts pods of the same GPU shape together (sharing pods with sharing pods, ...)."""

    name = "clustering"
    paper_name = "03-GpuClustering"
    description = "co-locate pods with the same GPU shape"

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        if request.is_cpu_only:
            return np.zeros(len(nodes), dtype=np.int64)
        tag = SHARE_TAG if request.is_fraction else request.gpu_count
        base = 25 * (MAX_GPU_MILLI - state.gpu_total_left[nodes]) // MAX_GPU_MILLI
        affinity = state.affinity[nodes]
        has_tag = affinity[:, tag] > 0 if tag < affinity.shape[1] else np.zeros(len(nodes), bool)
        distinct = (affinity > 0).sum(axis=1)
        bonus = np.select([has_tag & (distinct == 1), has_tag, distinct == 0], [75, 50, 25], default=0)
        return base + bonus


@register
class GpuPackingPolicy(Policy):
    """Fills partly used GPUs first, then partly used nodes, then empty nodes."""

    name = "packing"
    paper_name = "04-GpuPacking"
    description = "pack onto used GPUs, then used nodes, then idle nodes"

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        if request.is_cpu_only:
            return np.zeros(len(nodes), dtype=np.int64)
        g, n = request.gpu_milli, request.gpu_count
        free = state.gpu_free_count[nodes]
        idle_node = free == state.gpu_count[nodes]
        left = np.sort(state.gpu_left[nodes], axis=1, kind="stable")
        fits = left >= g
        taken = fits & (np.cumsum(fits, axis=1) <= n)
        newly_used = (taken & (left == MILLI_PER_GPU)).sum(axis=1)
        used_share = (np.where(taken, left * 100 // MILLI_PER_GPU, 0)).sum(axis=1)
        case1 = np.maximum(100 - used_share // 10, 50)
        case2 = np.maximum(50 - newly_used, 33)
        case3 = np.maximum(33 - free, free)
        return np.where(idle_node, case3, np.where(newly_used > 0, case2, case1))


@register
class BestFitPolicy(Policy):
    """The node with the least CPU and GPU left after placing the pod."""

    name = "bestfit"
    paper_name = "05-BestFit"
    description = "least CPU+GPU left over after placement"

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        spare = ((state.cpu_left[nodes] - request.cpu_milli) / MAX_CPU_MILLI) * 0.5 + (
            (state.gpu_total_left[nodes] - request.total_gpu_milli) / MAX_GPU_MILLI
        ) * 0.5
        return np.trunc((1 - spare) * 100).astype(np.int64)

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = scores.min(), scores.max()
        if hi == lo:
            return np.zeros_like(scores)
        return (scores - lo) * 100 // (hi - lo)
