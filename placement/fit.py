"""The filter every policy shares: which nodes can hold a request at all.

Mirrors kube-scheduler's NodeResourcesFit plus the GPU checks of the FGD
artifact's Open-GPU-Share filter. Vectorised over all nodes; the per-reason
counting runs only when nothing fits (that is when someone reads it).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from placement.mig import RESOURCE_PREFIX
from placement.migplace import mig_fit_mask
from placement.model import MILLI_PER_GPU, Request, Unschedulable
from placement.state import ClusterState

REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"
REASON_PODS = "Too many pods"
REASON_NO_GPU = "node(s) had no GPU"
REASON_MODEL = "node(s) didn't match the requested GPU model"
REASON_GPU = "Insufficient nvidia.com/gpu"
REASON_GPU_SHARE = "Insufficient GPU share (no GPU with enough free milli-GPU)"
REASON_GPU_SHARE_MEMORY = "Insufficient GPU memory for the fraction"
REASON_GPU_SHARERS = "GPU sharer limit reached"


def model_mask(state: ClusterState, models: tuple[str, ...]) -> np.ndarray:
    """Nodes whose GPU model is allowed (`models` empty: any node with a GPU)."""
    cache = state.__dict__.setdefault("_model_mask_cache", {})
    mask = cache.get(models)
    if mask is None:
        wanted = {m for m in models if m}
        allowed = np.array([not wanted or m in wanted for m in state.gpu_models] + [False], dtype=bool)
        mask = allowed[state.model_id]  # model_id -1 picks the trailing False
        mask.flags.writeable = False
        cache[models] = mask
    return mask


def gpu_fit_mask(state: ClusterState, request: Request) -> np.ndarray:
    """Nodes with enough GPUs that each have at least `gpu_milli` free."""
    g, n = request.gpu_milli, request.gpu_count
    if request.is_fraction:
        room = state.fraction_room(request)
        if room is not None:
            return ((state.gpu_left >= g) & room).any(axis=1)
    if n == 1:
        return state.gpu_max_left >= g
    if g == MILLI_PER_GPU:
        return state.gpu_free_count >= n
    return (state.gpu_left >= g).sum(axis=1) >= n


def _gpu_failures(state: ClusterState, request: Request) -> dict[str, np.ndarray]:
    """Per reason, the nodes whose GPUs cannot take the request; a fraction's node gives
    the first bound it fails: milli-GPU, then GPU memory, then a sharer slot."""
    if not request.is_fraction:
        return {REASON_GPU: ~gpu_fit_mask(state, request)}
    milli = state.gpu_left >= request.gpu_milli
    room = state.fraction_room(request)
    if room is None:
        return {REASON_GPU_SHARE: ~milli.any(axis=1)}
    memory = state.gpu_mem_left >= request.gpu_memory_mib
    short_milli = ~milli.any(axis=1)
    short_memory = ~short_milli & ~(milli & memory).any(axis=1)
    return {
        REASON_GPU_SHARE: short_milli,
        REASON_GPU_SHARE_MEMORY: short_memory,
        REASON_GPU_SHARERS: ~short_milli & ~short_memory & ~(milli & room).any(axis=1),
    }


def mig_reason(request: Request) -> str:
    """kube-scheduler's words for a node without the MIG resource."""
    return f"Insufficient {RESOURCE_PREFIX}{request.mig_profile}"


def feasible_mask(state: ClusterState, request: Request) -> np.ndarray:
    """Boolean mask over nodes: True where the request fits right now."""
    mask = state.cpu_left >= request.cpu_milli
    mask &= state.mem_left >= request.memory_mib
    mask &= state.pod_count < state.max_pods
    if request.gpu_count:
        mask &= model_mask(state, request.gpu_models)
        mask &= gpu_fit_mask(state, request)
    elif request.is_mig:
        mask &= model_mask(state, request.gpu_models)
        mask &= mig_fit_mask(state, request)
    return mask


def explain(state: ClusterState, request: Request, among: np.ndarray | None = None) -> Unschedulable:
    """Count, per reason, the nodes that reject `request` (a node may give several).

    With `among`, only those nodes are counted (the others were rejected earlier
    for reasons the caller adds); the total stays the cluster's node count.
    """
    reasons: Counter[str] = Counter()
    checks = [
        (REASON_CPU, state.cpu_left < request.cpu_milli),
        (REASON_MEMORY, state.mem_left < request.memory_mib),
        (REASON_PODS, state.pod_count >= state.max_pods),
    ]
    if request.gpu_count:
        has_gpu = state.gpu_count > 0
        model_ok = model_mask(state, request.gpu_models)
        checks += [(REASON_NO_GPU, ~has_gpu), (REASON_MODEL, has_gpu & ~model_ok)]
        checks += [
            (reason, has_gpu & model_ok & failed) for reason, failed in _gpu_failures(state, request).items()
        ]
    elif request.is_mig:
        has_gpu = state.gpu_count > 0
        model_ok = model_mask(state, request.gpu_models)
        checks += [
            (REASON_NO_GPU, ~has_gpu),
            (REASON_MODEL, has_gpu & ~model_ok),
            (mig_reason(request), has_gpu & model_ok & ~mig_fit_mask(state, request)),
        ]
    for reason, failed in checks:
        count = int((failed & among).sum()) if among is not None else int(failed.sum())
        if count:
            reasons[reason] = count
    return Unschedulable(node_count=len(state), reasons=reasons)
