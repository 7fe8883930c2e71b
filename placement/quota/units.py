"""GPU units: how much of a queue's quota a pod uses, from the objects the core places.

A whole GPU is 1, a fraction its milli / 1000, a time-slice 1/N of a GPU with N
replicas, a MIG instance its profile's share of the GPU's memory slices (a 3g.40gb on
an A100-80GB holds 4 of 8 slices: 1/2). Units are exact `Fraction`s so that a queue's
usage is exactly the sum of its pods' units whatever the order of charges and releases.
They are computed from the `Assignment` (as placed) or from a `Request` and the node
kind it would go to, never from labels or resource strings again.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from tessellate.placement.mig import MigError, geometry
from tessellate.placement.model import MILLI_PER_GPU, Assignment, Request
from tessellate.placement.timeslice import replica_request

if TYPE_CHECKING:
    from tessellate.placement.state import ClusterState

ZERO = Fraction(0)


def placed_units(state: ClusterState, assignment: Assignment) -> tuple[str, Fraction]:
    """(GPU model, units) `assignment` holds on `state`; ("", 0) for a pod without GPUs."""
    request = assignment.request
    if request.is_cpu_only:
        return "", ZERO
    node = state.nodes[assignment.node]
    if request.is_mig:
        g = geometry(node.gpu_model)
        slices = sum(g.profile(slot.profile).size for slot in assignment.mig)
        return node.gpu_model, Fraction(slices, g.memory_slices)
    if node.gpu_replicas > 1:  # the request is the translated one: one slice per pod
        return node.gpu_model, Fraction(request.gpu_count, node.gpu_replicas)
    return node.gpu_model, Fraction(request.gpu_milli * request.gpu_count, MILLI_PER_GPU)


def request_units(request: Request, model: str, replicas: int = 1) -> Fraction | None:
    """Units `request` would hold on a node of `model` with `replicas` time-slices per GPU.

    None when it cannot go there at all (a MIG profile the model lacks, a fraction or a
    multi-GPU request on a time-sliced node); 0 for a CPU-only request."""
    if request.is_cpu_only:
        return ZERO
    if request.is_mig:
        try:
            g = geometry(model)
            size = g.profile(request.mig_profile).size
        except MigError:
            return None
        return Fraction(size * request.mig_count, g.memory_slices)
    if replicas > 1:
        return None if replica_request(request, replicas) is None else Fraction(1, replicas)
    return Fraction(request.gpu_milli * request.gpu_count, MILLI_PER_GPU)


def format_units(x: Fraction | int | None) -> str:
    """`24`, `2.5`, `0.333`: whole numbers plainly, others to three decimals; None is `none`."""
    if x is None:
        return "none"
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.3f}".rstrip("0").rstrip(".")
