"""Choosing GPU ids inside the chosen node (the artifact's `gpuSelMethod`)."""

from __future__ import annotations

import numpy as np

from placement.model import MILLI_PER_GPU
from placement.rng import IntSource
from placement.state import ClusterState


def first_free(state: ClusterState, node: int, count: int) -> tuple[int, ...]:
    """The first `count` fully free GPUs in index order (whole-GPU pods, every policy)."""
    free = np.flatnonzero(state.gpu_left[node] == MILLI_PER_GPU)[:count]
    return tuple(int(i) for i in free)


def tightest_fit(state: ClusterState, node: int, milli: int) -> int:
    """The GPU with the least free share that still holds `milli`; ties to the lowest index."""
    left = state.gpu_left[node]
    candidates = np.where(left >= milli, left, MILLI_PER_GPU + 1)
    return int(np.argmin(candidates))


def random_fit(state: ClusterState, node: int, milli: int, rng: IntSource) -> int:
    """Reservoir-sample a GPU that holds `milli` (one draw per candidate, like the artifact)."""
    chosen = -1
    for seen, gpu in enumerate(np.flatnonzero(state.gpu_left[node] >= milli), start=1):
        if rng.intn(seen) == 0:
            chosen = int(gpu)
    return chosen
