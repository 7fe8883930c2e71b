"""The policy interface and its registry.

A policy is filter + score + GPU choice, like a kube-scheduler score plugin:
the shared filter (`placement.fit`) decides feasibility, `score` ranks
feasible nodes (higher is better, ties go to the lowest node index), and
`choose_gpus` picks device ids inside the winner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tessellate.placement.devices import first_free, tightest_fit
from tessellate.placement.fragmentation import TargetWorkload
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.rng import IntSource
from tessellate.placement.state import ClusterState
from tessellate.placement.topology import best_gpu_set


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may need besides the cluster: the expected workload and randomness."""

    rng: IntSource
    target: TargetWorkload | None = None
    topology_weight: float = 0.5
    """How much topology-aware policies weigh NVLink/PCIe fitness against packing (0..1)."""
    expected: TargetWorkload | None = None
    """The product's expected workload (`placement.workload.expected_workload`: every shape),
    for policies that want it besides `target` (the paper's replay keeps the paper's 95 %
    cut in `target`); None: use `target`. FGD ignores it."""


class Policy(ABC):
    """Scores nodes for a request. Subclasses register themselves by `name`."""

    name: ClassVar[str]
    paper_name: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    pure: ClassVar[bool] = True
    """True when a node's score depends only on that node's state and the request's
    shape, so scores may be cached per node until the node changes."""

    def __init__(self, context: PolicyContext):
        self.context = context

    def bind(self, state: ClusterState) -> None:  # noqa: B027 - optional hook
        """Precompute whatever depends on the cluster's static shape."""

    @abstractmethod
    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        """Integer scores for `nodes` (indices); only feasible nodes are asked."""

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """kube-scheduler's NormalizeScore over this cycle's feasible nodes."""
        return scores

    def choose_gpus(self, state: ClusterState, node: int, request: Request) -> tuple[int, ...]:
        """Whole GPUs: the best-connected free set when the node's topology is known, else
        the first free ones (the FGD artifact's choice); a fraction: `choose_fraction_gpu`."""
        if request.is_cpu_only:
            return ()
        if request.is_fraction:
            return (self.choose_fraction_gpu(state, node, request),)
        topology = state.nodes[node].topology
        if topology is not None:
            free = state.gpu_left[node, : topology.gpu_count] == MILLI_PER_GPU
            chosen = best_gpu_set(topology, free, request.gpu_count)
            if chosen is not None:
                return chosen
        return first_free(state, node, request.gpu_count)

    def choose_fraction_gpu(self, state: ClusterState, node: int, request: Request) -> int:
        """The artifact's `best`: the tightest GPU that still holds the fraction."""
        return tightest_fit(state, node, request)


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def create_policy(name: str, context: PolicyContext) -> Policy:
    """Build a registered policy by its command-line name, with a helpful error."""
    try:
        cls = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown policy {name!r}; known policies: {known}") from None
    return cls(context)


PolicyFactory = Callable[[PolicyContext], Policy]
