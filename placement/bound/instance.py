"""The aggregated instance a bound is computed on: node types, pod shapes, and how each shape
sits on each type.

Identical nodes (same capacity, GPUs, model, pod limit, time slicing, GPU memory, sharer limit
and MIG setup) are one *node type*; identical pod requests are one *shape*. Wiring (topology)
never decides whether a pod fits, so it is not part of a type. CPU-only pods hold no GPU and so
add nothing to the objective: an optimal packing may always leave them out, and they are
dropped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tessellate.placement.mig import MigError, geometry
from tessellate.placement.model import MILLI_PER_GPU, NodeSpec, Request
from tessellate.placement.timeslice import slice_milli, takes_a_slice

FitKind = Literal["whole", "fraction", "mig"]

RELAXED_MIG = (
    "MIG: instances are counted by compute share against the node's GPU capacity; slot "
    "positions, static layouts and which GPU holds which instance are relaxed"
)


@dataclass(frozen=True, slots=True)
class NodeType:
    """Nodes that are interchangeable for every resource check."""

    spec: NodeSpec
    nodes: tuple[int, ...]
    """Indices into the node list the instance was built from."""

    @property
    def count(self) -> int:
        return len(self.nodes)


@dataclass(frozen=True, slots=True)
class Shape:
    """Pods with the same request (the request of any of them)."""

    request: Request
    pods: tuple[int, ...]
    """Indices into the pod list the instance was built from."""

    @property
    def demand(self) -> int:
        return len(self.pods)


@dataclass(frozen=True, slots=True)
class Fit:
    """How one pod of a shape sits on one node of a type.

    `whole`: `gpus` free GPUs; `fraction`: `milli` (and `gpu_memory_mib`) of one GPU, which is
    also how a one-GPU pod takes a slice of a time-sliced GPU; `mig`: `weight` milli-GPU of
    the node's MIG capacity (relaxed). `weight` is the milli-GPU the pod holds there, what the
    simulator's allocation counts.
    """

    kind: FitKind
    weight: int
    gpus: int = 0
    milli: int = 0
    gpu_memory_mib: int = 0


def node_key(node: NodeSpec) -> tuple:
    return (
        node.cpu_milli,
        node.memory_mib,
        node.gpu_count,
        node.gpu_model if node.gpu_count else "",
        node.max_pods,
        node.gpu_replicas,
        node.gpu_memory_mib,
        node.max_sharers,
        node.mig,
    )


def shape_key(request: Request) -> tuple:
    return (
        request.cpu_milli,
        request.memory_mib,
        request.gpu_count,
        request.gpu_milli,
        frozenset(m for m in request.gpu_models if m),
        request.mig_profile,
        request.mig_count,
        request.gpu_memory_mib,
    )


def fit_of(node: NodeSpec, request: Request) -> Fit | None:
    """Whether a pod of `request` can ever run on an empty `node`, and as what (None: never)."""
    if request.is_cpu_only or not node.gpu_count or node.max_pods < 1:
        return None
    if request.cpu_milli > node.cpu_milli or request.memory_mib > node.memory_mib:
        return None
    models = {m for m in request.gpu_models if m}
    if models and node.gpu_model not in models:
        return None
    if request.is_mig:
        if node.mig is None or not _offers(node.gpu_model, request.mig_profile):
            return None
        return Fit("mig", weight=request.total_gpu_milli)
    if node.gpu_replicas > 1:  # one replica per pod: a one-GPU pod takes one slice, nothing else fits
        if not takes_a_slice(request.gpu_count, request.gpu_milli):
            return None
        share = slice_milli(node.gpu_replicas)
        return Fit("fraction", weight=share, milli=share)
    if request.is_fraction:
        memory = request.gpu_memory_mib if node.gpu_memory_mib else 0
        if memory > node.gpu_memory_mib > 0:
            return None
        return Fit("fraction", weight=request.gpu_milli, milli=request.gpu_milli, gpu_memory_mib=memory)
    if request.gpu_count > node.gpu_count:
        return None
    return Fit("whole", weight=request.total_gpu_milli, gpus=request.gpu_count)


def _offers(model: str, profile: str) -> bool:
    try:
        return profile in geometry(model).profile_names
    except MigError:
        return False


@dataclass(frozen=True)
class Instance:
    """Node types, GPU-holding pod shapes and the fit of every (type, shape) pair that can meet."""

    nodes: tuple[NodeSpec, ...]
    requests: tuple[Request, ...]
    types: tuple[NodeType, ...]
    shapes: tuple[Shape, ...]
    fits: dict[tuple[int, int], Fit]
    """(type, shape) -> fit, only for pairs where a pod of the shape can run on the type."""
    relaxed: tuple[str, ...]

    @property
    def capacity_milli(self) -> int:
        """Every GPU's milli-GPU: no packing holds more."""
        return sum(n.gpu_count for n in self.nodes) * MILLI_PER_GPU

    @property
    def demand_milli(self) -> int:
        """The most any shape's pods could hold, each on its best node type."""
        total = 0
        for s, shape in enumerate(self.shapes):
            weights = [f.weight for (t, s2), f in self.fits.items() if s2 == s]
            total += shape.demand * max(weights, default=0)
        return total

    def shapes_on(self, t: int) -> list[int]:
        return [s for s in range(len(self.shapes)) if (t, s) in self.fits]


def build_instance(nodes: Sequence[NodeSpec], requests: Sequence[Request]) -> Instance:
    """Aggregate `nodes` into types and `requests` into shapes (pods that fit nowhere are kept
    as shapes without fits: they can never count)."""
    if not nodes:
        raise ValueError("a bound needs at least one node")
    by_node: dict[tuple, list[int]] = {}
    for i, node in enumerate(nodes):
        by_node.setdefault(node_key(node), []).append(i)
    types = tuple(NodeType(nodes[idx[0]], tuple(idx)) for idx in by_node.values())
    by_shape: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        if not request.is_cpu_only:
            by_shape.setdefault(shape_key(request), []).append(i)
    shapes = tuple(Shape(requests[idx[0]], tuple(idx)) for idx in by_shape.values())
    fits: dict[tuple[int, int], Fit] = {}
    for t, node_type in enumerate(types):
        for s, shape in enumerate(shapes):
            fit = fit_of(node_type.spec, shape.request)
            if fit is not None:
                fits[(t, s)] = fit
    relaxed = (RELAXED_MIG,) if any(f.kind == "mig" for f in fits.values()) else ()
    return Instance(tuple(nodes), tuple(requests), types, shapes, fits, relaxed)
