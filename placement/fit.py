"""The filter every policy shares: which nodes can hold a request at all, and why not.

Mirrors kube-scheduler's NodeResourcesFit plus the GPU checks of the FGD
artifact's Open-GPU-Share filter. Both answers come from `placement.checks.CHECKS`,
so the mask and its explanation cannot disagree. Vectorised over all nodes; the
per-reason counting runs only when nothing fits (that is when someone reads it).

The request is taken as asked: on time-sliced nodes `Placer` translates it first
(`Placer.fits` answers for the request as `place` would put it).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from tessellate.placement.checks import (
    ALL,
    CHECKS,
    REASON_CPU,
    REASON_GPU,
    REASON_GPU_SHARE,
    REASON_GPU_SHARE_MEMORY,
    REASON_GPU_SHARERS,
    REASON_MEMORY,
    REASON_MODEL,
    REASON_NO_GPU,
    REASON_PODS,
    Check,
    Nodes,
    mig_reason,
    model_mask,
    passes,
)
from tessellate.placement.model import Request, Unschedulable
from tessellate.placement.state import ClusterState

__all__ = [
    "REASON_CPU",
    "REASON_GPU",
    "REASON_GPU_SHARE",
    "REASON_GPU_SHARERS",
    "REASON_GPU_SHARE_MEMORY",
    "REASON_MEMORY",
    "REASON_MODEL",
    "REASON_NO_GPU",
    "REASON_PODS",
    "explain",
    "feasible_mask",
    "gpu_fit_mask",
    "mig_reason",
    "model_mask",
]

_GPU: Check = next(c for c in CHECKS if c.name == "gpu")


def feasible_mask(state: ClusterState, request: Request, nodes: Nodes = ALL) -> np.ndarray:
    """Boolean mask over nodes (or `nodes`): True where the request fits right now."""
    return passes(state, request, nodes)


def gpu_fit_mask(state: ClusterState, request: Request) -> np.ndarray:
    """Nodes whose GPUs can take the request (whole GPUs free, or one GPU with room for the fraction)."""
    return _GPU.mask(state, request)


def explain(state: ClusterState, request: Request, among: np.ndarray | None = None) -> Unschedulable:
    """Count, per reason, the nodes that reject `request` (a node may give several).

    A check is blamed only on nodes that pass its gates (a GPU-less node is "no GPU",
    not also "wrong model"). With `among`, only those nodes are counted (the others
    were rejected earlier for reasons the caller adds); the total stays the cluster's
    node count.
    """
    passed: dict[Check, np.ndarray] = {}
    reasons: Counter[str] = Counter()
    for check in CHECKS:
        if check.active(state) and check.applies(request):
            passed[check] = check.mask(state, request)
    for check, mask in passed.items():
        gate = None
        for g in check.gates:
            if g in passed:
                gate = passed[g] if gate is None else gate & passed[g]
        for reason, failed in check.reasons(state, request, mask):
            if gate is not None:
                failed = failed & gate
            if among is not None:
                failed = failed & among
            count = int(failed.sum())
            if count:
                reasons[reason] += count
    return Unschedulable(node_count=len(state), reasons=reasons)
