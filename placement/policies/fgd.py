"""Fragmentation Gradient Descent (FGD, ATC'23): place where fragmentation grows least.

The score is the artifact's quantised form `trunc(100 * sigmoid(-dF / 1000))`,
where dF is the growth of the node's expected fragmentation (milli-GPU) under
the target workload. For fractions every fitting GPU is tried and the best one
is also the GPU that is chosen.
"""

from __future__ import annotations

import numpy as np
from tessellate.placement.fragmentation import Fragmentation
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.policies.base import Policy, register
from tessellate.placement.state import ClusterState


def quantised_gain(frag_before: np.ndarray, frag_after: np.ndarray) -> np.ndarray:
    """The artifact's integer score: 50 when fragmentation is unchanged, higher if it drops."""
    x = (frag_before - frag_after) / 1000.0
    # sigmoid first, then * 100, as the artifact does (`int64(sigmoid(x) * 100)`): the
    # shorter 100 / (1 + e) can round across an integer and change the score by one.
    return np.trunc((1.0 / (1.0 + np.exp(-x))) * 100.0).astype(np.int64)


def gpus_after_whole(state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
    """[k, G] free milli per GPU of `nodes` after taking the request's whole GPUs (first free)."""
    gpu = state.gpu_left[nodes]
    if not request.gpu_count:
        return gpu
    free = gpu == MILLI_PER_GPU
    taken = free & (np.cumsum(free, axis=1) <= request.gpu_count)
    return gpu - MILLI_PER_GPU * taken


def fraction_variants(
    state: ClusterState, request: Request, nodes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row in `nodes`, GPU, that node's free milli per GPU after the fraction) for every GPU
    worth scoring: it fits (milli, and GPU memory and sharers where they bound it), and no
    earlier GPU of the node has the same free share (same outcome, so it would only tie)."""
    left = state.gpu_left[nodes]
    fits = left >= request.gpu_milli
    twins = left[:, :, None] == left[:, None, :]
    room = state.fraction_room(request, nodes)
    if room is not None:
        fits &= room
        twins &= fits[:, :, None]
    earlier_twin = np.triu(twins, k=1).any(axis=1)
    node_of, gpu = np.nonzero(fits & ~earlier_twin)
    variants = left[node_of]
    variants[np.arange(len(gpu)), gpu] -= request.gpu_milli
    return node_of, gpu, variants


class GpuChoiceMemo:
    """Each scored node's best GPU for a fraction shape, valid while the node is unchanged, so
    choosing the GPU after scoring repeats no scoring work."""

    def __init__(self) -> None:
        self._best: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def remember(self, state: ClusterState, request: Request, nodes: np.ndarray, best: np.ndarray) -> None:
        entry = self._best.get(request.score_key)
        if entry is None:
            n = len(state)
            entry = (np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            self._best[request.score_key] = entry
        entry[0][nodes] = best
        entry[1][nodes] = state.version[nodes]

    def recall(self, state: ClusterState, request: Request, node: int) -> int | None:
        entry = self._best.get(request.score_key)
        if entry is not None and entry[1][node] == state.version[node]:
            return int(entry[0][node])
        return None


@register
class FgdPolicy(Policy):
    """Minimises the expected fragmentation increase (needs a target workload)."""

    name = "fgd"
    paper_name = "06-FGD"
    description = "fragmentation gradient descent (the paper's policy)"

    def bind(self, state: ClusterState) -> None:
        if self.context.target is None:
            raise ValueError("the fgd policy needs a target workload (typical pods)")
        self.fragmentation = Fragmentation(self.context.target, state)
        self._gpu_choice = GpuChoiceMemo()

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        if request.is_fraction:
            per_gpu = self._per_gpu_scores(state, request, nodes)
            self._gpu_choice.remember(state, request, nodes, per_gpu.argmax(axis=1))
            return per_gpu.max(axis=1)
        cpu_after = state.cpu_left[nodes] - request.cpu_milli
        gpu_after = gpus_after_whole(state, request, nodes)
        k = len(nodes)
        models, replicas = state.model_id[nodes], state.replicas[nodes]
        frag, _ = self.fragmentation.amounts(
            np.concatenate([state.cpu_left[nodes], cpu_after]),
            np.concatenate([state.gpu_left[nodes], gpu_after]),
            np.concatenate([models, models]),
            np.concatenate([replicas, replicas]),
        )
        return quantised_gain(frag[:k], frag[k:])

    def choose_fraction_gpu(self, state: ClusterState, node: int, request: Request) -> int:
        remembered = self._gpu_choice.recall(state, request, node)
        if remembered is not None:
            return remembered
        scores = self._per_gpu_scores(state, request, np.array([node]))[0]
        return int(np.argmax(scores))

    def _per_gpu_scores(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        """[k, G] scores of putting the fraction on each GPU; -1 where it does not fit.

        GPUs of a node with equal free share give the same outcome, so only the
        first of each is evaluated; the others get -1, which changes neither the
        maximum nor the first GPU reaching it. Where GPU memory or sharers bound the
        fraction, only GPUs with room count (and only they can be an earlier twin).
        """
        k, g = len(nodes), state.max_gpus
        left = state.gpu_left[nodes]  # [k, G]
        cpu = state.cpu_left[nodes]
        models, replicas = state.model_id[nodes], state.replicas[nodes]
        node_of, gpu, variants = fraction_variants(state, request, nodes)
        frag, _ = self.fragmentation.amounts(
            np.concatenate([cpu, cpu[node_of] - request.cpu_milli]),
            np.concatenate([left, variants]),
            np.concatenate([models, models[node_of]]),
            np.concatenate([replicas, replicas[node_of]]),
        )
        scores = np.full((k, g), -1, dtype=np.int64)
        scores[node_of, gpu] = quantised_gain(frag[node_of], frag[k:])
        return scores
