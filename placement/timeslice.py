"""Time-sliced GPUs: nodes where NVIDIA's device plugin advertises each GPU N times.

With the plugin's time-slicing (or MPS) sharing, gpu-feature-discovery labels a node
`nvidia.com/gpu.replicas=N` and the node advertises N x GPUs of `nvidia.com/gpu` (or
`nvidia.com/gpu.shared`). A pod asking for one such "GPU" gets one replica: a 1/N slice
of a physical GPU. The core models the physical GPUs, each N equal slices of
`slice_milli(N)` milli-GPU, so that packing and fragmentation see real GPUs.

A request's meaning then depends on the node: one GPU is a whole GPU on an ordinary
node and one slice on a time-sliced one. `Placer` therefore tries ordinary nodes first
(a pod that can have a GPU of its own gets one) and then each replica count in turn,
with the request translated by `replica_request`. Only one-GPU requests take a slice:
the plugin refuses more than one replica when `failRequestsGreaterThanOne` is set and
gives no more compute otherwise. Tessellate's own fractions and MIG requests do not go
to time-sliced nodes (the plugin there serves neither).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tessellate.placement.model import MILLI_PER_GPU, Request

if TYPE_CHECKING:
    from tessellate.placement.state import ClusterState

IntOrArray = TypeVar("IntOrArray", int, np.ndarray)

REASON_SLICED_MULTI = "node(s) time-slice their GPUs (one replica per pod)"
REASON_SLICED_KIND = "node(s) time-slice their GPUs (whole-GPU replicas only)"


def slice_milli(replicas: IntOrArray) -> IntOrArray:
    """One replica's share of its GPU in milli-GPU; N of them never exceed a GPU (also per node)."""
    return MILLI_PER_GPU // replicas


def is_slice_size(milli: int) -> bool:
    """Whether some replica count (2 or more) slices a GPU into shares of exactly `milli`."""
    replicas = MILLI_PER_GPU // milli if milli > 0 else 0
    return replicas >= 2 and slice_milli(replicas) == milli


def takes_a_slice(gpu_count: IntOrArray, gpu_milli: IntOrArray) -> bool | np.ndarray:
    """Whether a request of this shape goes to time-sliced nodes: one whole GPU, which is
    one slice there. Several GPUs, fractions and MIG do not (also per task type)."""
    return (gpu_count == 1) & (gpu_milli == MILLI_PER_GPU)


def replica_request(request: Request, replicas: int) -> Request | None:
    """What `request` takes on a node with `replicas` slices per GPU (None: it cannot go there)."""
    if replicas <= 1:
        return request
    if not takes_a_slice(request.gpu_count, request.gpu_milli):
        return None
    return Request(
        cpu_milli=request.cpu_milli,
        memory_mib=request.memory_mib,
        gpu_count=1,
        gpu_milli=slice_milli(replicas),
        gpu_models=request.gpu_models,
    )


def refusal(request: Request) -> str:
    """Why a time-sliced node cannot take a request `replica_request` refused."""
    if request.gpu_count > 1 and request.gpu_milli == MILLI_PER_GPU:
        return REASON_SLICED_MULTI
    return REASON_SLICED_KIND


def routes(state: ClusterState, request: Request) -> list[tuple[np.ndarray, Request | None]]:
    """Where `request` may go and as what: per replica count present (ordinary nodes first),
    those nodes and the request as translated there (None: refused there; a CPU-only
    request goes everywhere as it is). `Placer` tries them in this order, and whatever
    asks whether a request fits asks these questions."""
    if request.is_cpu_only:
        return [(group, request) for _, group in state.replica_groups]
    return [(group, replica_request(request, replicas)) for replicas, group in state.replica_groups]
