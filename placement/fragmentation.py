"""GPU fragmentation as defined by the FGD paper (ATC'23, Sec. 3), vectorised.

A node's idle milli-GPU is a *fragment* for a task type when that type could
not use it: the task does not fit the node at all, or the GPU is too small
for it. `F(node)` is the expectation over the target workload's task types.
The formulas follow docs/fgd-protocol.md Sec. 3.6-3.7, including the order of
floating-point accumulation, so that quantised FGD scores match the artifact.

On a time-sliced node (`placement.timeslice`) a task type is judged as it would be
placed there: a one-GPU type takes one slice, so a GPU with a free slice serves it,
and the types such a node refuses (fractions, several GPUs) see all its idle milli
as fragment. The paper's clusters have no such nodes, and their numbers do not change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from tessellate.placement.model import Request
from tessellate.placement.state import ClusterState
from tessellate.placement.timeslice import slice_milli, takes_a_slice

TaskType = tuple[int, int, int, tuple[str, ...]]
"""(cpu milli, per-GPU milli, GPU count, allowed models): a request's `shape`."""


@dataclass(frozen=True)
class TargetWorkload:
    """The task types a cluster expects, with their probabilities (FGD's 'typical pods')."""

    types: tuple[TaskType, ...]
    weights: tuple[float, ...]

    @classmethod
    def from_requests(
        cls, requests: Iterable[Request], coverage: float = 0.95, max_types: int | None = None
    ) -> TargetWorkload:
        """Keep the most popular shapes until they cover `coverage` of all pods, or until
        `max_types` are kept (scoring cost grows with the number of types).

        Ties in popularity are broken by descending cpu, GPU milli, GPU count and
        model string, as the artifact does; the kept weights are renormalised.
        """
        return cls.from_counts(Counter(r.shape for r in requests), coverage, max_types)

    @classmethod
    def from_counts(
        cls, counts: Mapping[TaskType, int], coverage: float = 0.95, max_types: int | None = None
    ) -> TargetWorkload:
        """`from_requests` for requests already counted by shape."""
        if max_types is not None and max_types < 1:
            raise ValueError(f"max_types must be at least 1 (or None for no cap), got {max_types}")
        if not counts:
            raise ValueError("cannot build a target workload from zero requests")
        total = sum(counts.values())

        def order(item: tuple[TaskType, int]) -> tuple:
            (cpu, g, n, models), count = item
            return (count, cpu, g, n, "|".join(models))

        ranked = sorted(counts.items(), key=order, reverse=True)
        kept: list[tuple[TaskType, int]] = []
        cumulative = 0
        for shape, count in ranked:
            kept.append((shape, count))
            cumulative += count
            if cumulative >= coverage * total or len(kept) == max_types:
                break
        share = cumulative / total
        return cls(
            types=tuple(shape for shape, _ in kept),
            weights=tuple((count / total) / share for _, count in kept),
        )


# Category columns, in the artifact's accumulation order; q3 (satisfied) is not fragment.
_Q1, _Q2, _Q4, _XL, _XR, _NA = range(6)
_CATEGORIES = 6


class Fragmentation:
    """Computes F for arbitrary (hypothetical) node states of one cluster.

    Bound to a cluster only for its GPU-model list (which types may use which
    model); the node states themselves are passed in, so FGD can evaluate
    "what if the pod went here" for many nodes and GPUs in one call.
    """

    def __init__(self, target: TargetWorkload, state: ClusterState):
        self.target = target
        types = target.types
        self.cpu = np.array([t[0] for t in types], dtype=np.int64)
        self.gpu_milli = np.array([t[1] for t in types], dtype=np.int64)
        self.gpu_count = np.array([t[2] for t in types], dtype=np.int64)
        self.weight = np.array(target.weights, dtype=np.float64)
        self.cpu_type = self.gpu_count == 0
        # Task types share few distinct per-GPU sizes; per-GPU work is done once per size.
        # Time-sliced nodes judge one-GPU types by their slice size, so those sizes are
        # evaluated too; `size_of_type` indexes this extended list.
        slices = slice_milli(np.unique(state.replicas[state.replicas > 1]))
        self.sizes = np.unique(np.concatenate([self.gpu_milli, slices]))
        self.size_of_type = np.searchsorted(self.sizes, self.gpu_milli)
        self.takes_a_slice = takes_a_slice(self.gpu_count, self.gpu_milli)
        self.sliced_refuses = ~self.cpu_type & ~self.takes_a_slice
        # access[m, model_id]; the extra last column is "no GPU model" (CPU-only nodes).
        access = np.zeros((len(types), len(state.gpu_models) + 1), dtype=bool)
        for m, (_, _, _, models) in enumerate(types):
            wanted = {x for x in models if x}
            for j, model in enumerate(state.gpu_models):
                access[m, j] = not wanted or model in wanted
        self.access_by_model = np.ascontiguousarray(access.T)  # [model, M]
        self._categories = np.arange(_CATEGORIES)[:, None, None]

    def amounts(
        self, cpu_left: np.ndarray, gpu_left: np.ndarray, model_id: np.ndarray, replicas: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (F, idle) for X node states; F is the expected fragment in milli-GPU.

        cpu_left: [X] milli-CPU; gpu_left: [X, G] free milli per GPU (0 for absent
        GPUs); model_id: [X] index into the cluster's GPU models, -1 for none;
        replicas: [X] time-slicing replicas per GPU (1 where GPUs are not sliced).
        """
        total = gpu_left.sum(axis=1)  # [X]
        fits = gpu_left[:, None, :] >= self.sizes[None, :, None]  # [X, S, G]
        fitting_by_size = fits.sum(axis=2)  # [X, S]
        usable_by_size = (fits * gpu_left[:, None, :]).sum(axis=2)  # [X, S]
        sliced = replicas > 1
        if sliced.any():
            slice_size = np.searchsorted(self.sizes, slice_milli(replicas))  # [X]
            size = np.where(
                sliced[:, None] & self.takes_a_slice[None, :], slice_size[:, None], self.size_of_type[None, :]
            )
            fitting_count = np.take_along_axis(fitting_by_size, size, axis=1)  # [X, M]
            usable = np.take_along_axis(usable_by_size, size, axis=1)
            refused = sliced[:, None] & self.sliced_refuses[None, :]
            gpu_ok = (fitting_count >= self.gpu_count[None, :]) & ~refused
        else:
            fitting_count = fitting_by_size[:, self.size_of_type]  # [X, M]
            usable = usable_by_size[:, self.size_of_type]
            gpu_ok = fitting_count >= self.gpu_count[None, :]
        cpu_ok = cpu_left[:, None] >= self.cpu[None, :]
        access = self.access_by_model[model_id]  # [X, M]
        # Category of each (state, type), in the artifact's accumulator order.
        category = np.where(
            self.cpu_type[None, :],
            np.where(cpu_ok, _XL, _XR),
            np.where(
                access,
                np.where(cpu_ok, _Q2, np.where(gpu_ok, _Q4, _Q1)),
                _NA,
            ),
        )
        satisfied = access & gpu_ok & cpu_ok & ~self.cpu_type[None, :]
        # A type that fits counts only its too-small GPUs as fragment; others count all idle.
        fragment = np.where(satisfied, total[:, None] - usable, total[:, None]) * self.weight
        parts = (category[None] == self._categories) * fragment[None]  # [6, X, M]
        # Sequential accumulation over task types (cumsum) keeps the artifact's float order.
        acc = np.cumsum(parts, axis=2)[:, :, -1]  # [6, X]
        frag = acc[_Q1] + acc[_Q2] + acc[_Q4] + acc[_XL] + acc[_XR] + acc[_NA]
        idle = frag + np.cumsum(np.where(satisfied, usable, 0) * self.weight, axis=1)[:, -1]
        return frag, idle

    def of_nodes(self, state: ClusterState, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F, idle) of the given nodes as they are now."""
        return self.amounts(
            state.cpu_left[nodes], state.gpu_left[nodes], state.model_id[nodes], state.replicas[nodes]
        )


class FragmentationTracker:
    """Per-node F and idle for the whole cluster, refreshed only where nodes changed."""

    def __init__(self, fragmentation: Fragmentation, state: ClusterState):
        self.fragmentation = fragmentation
        self.state = state
        self.seen_version = np.full(len(state), -1, dtype=np.int64)
        self.frag = np.zeros(len(state))
        self.idle = np.zeros(len(state))

    def refresh(self) -> None:
        stale = np.flatnonzero(self.seen_version != self.state.version)
        if stale.size:
            self.frag[stale], self.idle[stale] = self.fragmentation.of_nodes(self.state, stale)
            self.seen_version[stale] = self.state.version[stale]

    def totals(self) -> tuple[float, float]:
        """(fragment milli-GPU, idle milli-GPU) summed over the cluster."""
        self.refresh()
        return float(self.frag.sum()), float(self.idle.sum())
