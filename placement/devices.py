"""Choosing GPU ids inside the chosen node (the artifact's `gpuSelMethod`)."""

from __future__ import annotations

import numpy as np
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.rng import IntSource
from tessellate.placement.state import ClusterState


def first_free(state: ClusterState, node: int, count: int) -> tuple[int, ...]:
    """The first `count` fully free GPUs in index order (whole-GPU pods, every policy)."""
    free = np.flatnonzero(state.gpu_left[node] == MILLI_PER_GPU)[:count]
    return tuple(int(i) for i in free)


def fraction_fits(state: ClusterState, node: int, request: Request) -> np.ndarray:
    """Per GPU of `node`: can it take the fraction (milli-GPU, and GPU memory and a sharer
    slot where those are bounded)?"""
    fits = state.gpu_left[node] >= request.gpu_milli
    room = state.fraction_room(request, node)
    return fits if room is None else fits & room


def tightest_fit(state: ClusterState, node: int, request: Request) -> int:
    """The GPU with the least free share that still holds the fraction; ties to the lowest index.

    When none does, the tightest by milli-GPU alone (or GPU 0), so that `allocate`'s refusal
    names the bound that is short."""
    left = state.gpu_left[node]
    fits = fraction_fits(state, node, request)
    if not fits.any():
        fits = left >= request.gpu_milli
    return int(np.argmin(np.where(fits, left, MILLI_PER_GPU + 1)))


def random_fit(state: ClusterState, node: int, request: Request, rng: IntSource) -> int:
    """Reservoir-sample a GPU that holds the fraction (one draw per candidate, like the artifact)."""
    chosen = -1
    for seen, gpu in enumerate(np.flatnonzero(fraction_fits(state, node, request)), start=1):
        if rng.intn(seen) == 0:
            chosen = int(gpu)
    return chosen
