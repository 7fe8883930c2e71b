"""Values that cross module borders: node specs, requests, assignments, decisions.

All are frozen dataclasses so that a decision handed to the simulator or the
scheduler cannot be changed behind the cluster state's back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from placement.topology import NodeTopology

MILLI_PER_GPU = 1000
"""A whole GPU is 1000 milli-GPU; fractions are 1..999."""


class InvalidRequestError(ValueError):
    """A request that no cluster could ever satisfy because it is malformed."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One machine as the scheduler sees it: allocatable capacity and its GPUs."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_model: str = ""
    max_pods: int = 1001
    topology: NodeTopology | None = None
    """How the GPUs are wired (NVLink/NVSwitch/PCIe/NUMA); None when unknown."""

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"node {self.name}: negative capacity")
        if self.gpu_count < 0:
            raise ValueError(f"node {self.name}: negative GPU count {self.gpu_count}")
        if self.gpu_count > 0 and not self.gpu_model:
            raise ValueError(f"node {self.name}: has {self.gpu_count} GPUs but no GPU model")
        if self.topology is not None and self.topology.gpu_count != self.gpu_count:
            raise ValueError(
                f"node {self.name}: topology has {self.topology.gpu_count} GPUs, the node {self.gpu_count}"
            )


@dataclass(frozen=True, slots=True)
class Request:
    """What one pod asks for.

    ``gpu_milli`` is per GPU: a whole-GPU request has ``gpu_milli == 1000`` and
    ``gpu_count >= 1``; a fraction has ``gpu_count == 1`` and ``gpu_milli`` in
    1..999. ``gpu_models`` lists the allowed GPU models (empty: any model);
    duplicates are allowed and harmless.
    """

    cpu_milli: int
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InvalidRequestError(
                f"negative CPU or memory request (cpu={self.cpu_milli}m, memory={self.memory_mib}Mi)"
            )
        if self.gpu_count < 0:
            raise InvalidRequestError(f"negative GPU count {self.gpu_count}")
        if self.gpu_count == 0:
            if self.gpu_milli != 0:
                raise InvalidRequestError(f"gpu_milli={self.gpu_milli} without any GPU (gpu_count=0)")
            return
        if not 0 < self.gpu_milli <= MILLI_PER_GPU:
            raise InvalidRequestError(
                f"gpu_milli must be in 1..{MILLI_PER_GPU} per GPU, got {self.gpu_milli}"
            )
        if self.gpu_milli < MILLI_PER_GPU and self.gpu_count != 1:
            raise InvalidRequestError(
                f"a GPU fraction ({self.gpu_milli}m) must ask for exactly one GPU, got {self.gpu_count}"
            )

    @property
    def is_cpu_only(self) -> bool:
        return self.gpu_count == 0

    @property
    def is_fraction(self) -> bool:
        return self.gpu_count == 1 and self.gpu_milli < MILLI_PER_GPU

    @property
    def total_gpu_milli(self) -> int:
        """The GPU demand in milli-GPU: what the paper's 'arrived workload' counts."""
        return self.gpu_milli * self.gpu_count

    @property
    def shape(self) -> tuple[int, int, int, tuple[str, ...]]:
        """What scoring depends on: every policy ignores memory (the filter checks it)."""
        return (self.cpu_milli, self.gpu_milli, self.gpu_count, self.gpu_models)

    def describe(self) -> str:
        gpu = "no GPU"
        if self.gpu_count:
            gpu = f"{self.gpu_count} x {self.gpu_milli}m GPU"
            if self.gpu_models:
                gpu += f" ({'|'.join(self.gpu_models)})"
        return f"cpu {self.cpu_milli}m, memory {self.memory_mib}Mi, {gpu}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a pod runs: the node and, per chosen GPU, the milli-GPU it holds."""

    pod: str
    node: int
    node_name: str
    request: Request
    gpus: tuple[int, ...] = ()

    @property
    def gpu_milli(self) -> int:
        return self.request.gpu_milli


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """Why no node fits, counted per reason like kube-scheduler's FitError."""

    node_count: int
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def message(self) -> str:
        """`0/N nodes are available: 3 Insufficient cpu, 7 ....` (k8s sorts the strings)."""
        parts = sorted(f"{count} {reason}" for reason, count in self.reasons.items())
        text = f"0/{self.node_count} nodes are available"
        return f"{text}: {', '.join(parts)}." if parts else f"{text}."


Decision = Assignment | Unschedulable
