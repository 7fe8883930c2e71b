"""Values that cross module borders: node specs, requests, assignments, decisions.

All are frozen dataclasses so that a decision handed to the simulator or the
scheduler cannot be changed behind the cluster state's back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from tessellate.placement.mig import RESOURCE_PREFIX as MIG_RESOURCE_PREFIX
from tessellate.placement.mig import MigError, MigInstance, MigLayout, geometry, load_catalogue

if TYPE_CHECKING:
    from tessellate.placement.topology import NodeTopology

MILLI_PER_GPU = 1000
MAX_GPUS_PER_NODE = 64
"""Most GPUs one node may declare: the state arrays are as wide as the widest node, so a
node claiming more would make every node cost memory out of proportion (it is quarantined)."""
MAX_MIG_INSTANCES_PER_NODE = MAX_GPUS_PER_NODE * 7
MAX_QUANTITY = 2**53
"""Largest CPU milli, MiB or count the core accepts: sums of many stay inside int64."""
"""A whole GPU is 1000 milli-GPU; fractions are 1..999."""


class InvalidRequestError(ValueError):
    """A request that no cluster could ever satisfy because it is malformed."""


@cache
def mig_profile_milli(profile: str) -> int:
    """A MIG profile's share of its GPU in milli-GPU (compute slices, rounded down).

    What allocation ratios count for a MIG instance; rounded down so that a full
    GPU of instances never counts as more than 1000. Raises InvalidRequestError for
    a name no catalogue model offers.
    """
    shares = {
        MILLI_PER_GPU * p.compute_slices // g.compute_slices
        for g in load_catalogue().values()
        for p in g.profiles
        if p.name == profile
    }
    if not shares:
        known = ", ".join(sorted({p.name for g in load_catalogue().values() for p in g.profiles}))
        raise InvalidRequestError(f"unknown MIG profile {profile!r}; known profiles: {known}")
    return min(shares)


@dataclass(frozen=True, slots=True)
class MigSpec:
    """A node's MIG setup: per GPU the instances that exist, and whether new ones may be made.

    `layouts[g]` is GPU g's partition (None or empty: the GPU is not in MIG mode).
    A *static* node only hands out existing free instances (mig-parted made them); a
    *dynamic* node may also create instances in free slots of a GPU that is in MIG mode
    or idle (the core then emits a `MigPlan`), and destroys what it created on release.
    """

    layouts: tuple[MigLayout | None, ...] = ()
    dynamic: bool = False

    def layout(self, gpu: int) -> MigLayout | None:
        return self.layouts[gpu] if gpu < len(self.layouts) else None


@dataclass(frozen=True, slots=True)
class MigSlot:
    """One MIG instance a pod holds: a GPU of its node, a profile and a start memory slice."""

    gpu: int
    profile: str
    start: int

    @property
    def instance(self) -> MigInstance:
        return MigInstance(self.profile, self.start)


@dataclass(frozen=True, slots=True)
class MigPlan:
    """A MIG reconfiguration of one GPU that a caller must publish (or a simulator apply).

    `layout_after` keeps every instance of `layout_before` (instances in use are never
    touched) and adds the new ones.
    """

    node: str
    gpu: int
    layout_before: MigLayout
    layout_after: MigLayout

    @property
    def added(self) -> tuple[MigInstance, ...]:
        return tuple(i for i in self.layout_after if i not in self.layout_before.instances)


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
    mig: MigSpec | None = None
    """MIG partitions and mode; None: the node's GPUs take no MIG requests."""
    gpu_memory_mib: int = 0
    """Memory of each GPU in MiB; 0: unknown, so memory never limits fractions here."""
    max_sharers: int = 0
    """Most fractions one GPU may hold at once; 0: unlimited."""
    gpu_replicas: int = 1
    """Time-slicing replicas per GPU (NVIDIA device plugin's `replicas`): above 1, each GPU
    is that many equal slices and a one-GPU request takes one slice (`placement.timeslice`)."""

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"node {self.name}: negative capacity")
        if not 1 <= self.gpu_replicas <= MILLI_PER_GPU:
            raise ValueError(
                f"node {self.name}: GPU replicas must be 1..{MILLI_PER_GPU}, got {self.gpu_replicas}"
            )
        if self.gpu_replicas > 1 and self.mig is not None:
            raise ValueError(
                f"node {self.name}: time-sliced GPUs ({self.gpu_replicas} replicas) with a MIG setup"
            )
        if self.gpu_memory_mib < 0 or self.max_sharers < 0:
            raise ValueError(
                f"node {self.name}: negative GPU memory ({self.gpu_memory_mib}MiB) "
                f"or sharer limit ({self.max_sharers})"
            )
        if not 0 <= self.gpu_count <= MAX_GPUS_PER_NODE:
            raise ValueError(f"node {self.name}: GPU count {self.gpu_count} is not 0..{MAX_GPUS_PER_NODE}")
        if max(self.cpu_milli, self.memory_mib, self.gpu_memory_mib, self.max_pods) > MAX_QUANTITY:
            raise ValueError(f"node {self.name}: capacity beyond {MAX_QUANTITY}")
        if self.gpu_count > 0 and not self.gpu_model:
            raise ValueError(f"node {self.name}: has {self.gpu_count} GPUs but no GPU model")
        if self.topology is not None and self.topology.gpu_count != self.gpu_count:
            raise ValueError(
                f"node {self.name}: topology has {self.topology.gpu_count} GPUs, the node {self.gpu_count}"
            )
        if self.mig is not None:
            self._check_mig(self.mig)

    def _check_mig(self, mig: MigSpec) -> None:
        if not self.gpu_count:
            raise ValueError(f"node {self.name}: MIG setup on a node without GPUs")
        try:
            g = geometry(self.gpu_model)
        except MigError:
            raise ValueError(f"node {self.name}: GPU model {self.gpu_model} does not support MIG") from None
        if len(mig.layouts) > self.gpu_count:
            raise ValueError(f"node {self.name}: {len(mig.layouts)} MIG layouts for {self.gpu_count} GPUs")
        for i, layout in enumerate(mig.layouts):
            if layout is not None and layout.geometry != g:
                raise ValueError(
                    f"node {self.name}: GPU {i} layout is for {layout.geometry.model}, not {g.model}"
                )


@dataclass(frozen=True, slots=True)
class Request:
    """What one pod asks for.

    ``gpu_milli`` is per GPU: a whole-GPU request has ``gpu_milli == 1000`` and
    ``gpu_count >= 1``; a fraction has ``gpu_count == 1`` and ``gpu_milli`` in
    1..999. A MIG request has ``mig_count >= 1`` instances of ``mig_profile`` (e.g.
    ``3g.40gb``) and no whole or fractional GPU. ``gpu_models`` lists the allowed GPU
    models (empty: any model); duplicates are allowed and harmless. A fraction may
    also bound its GPU memory (``gpu_memory_mib``, 0: not bounded).
    """

    cpu_milli: int
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()
    mig_profile: str = ""
    mig_count: int = 0
    gpu_memory_mib: int = 0

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InvalidRequestError(
                f"negative CPU or memory request (cpu={self.cpu_milli}m, memory={self.memory_mib}Mi)"
            )
        if max(self.cpu_milli, self.memory_mib, self.gpu_memory_mib) > MAX_QUANTITY:
            raise InvalidRequestError(
                f"request too large (cpu={self.cpu_milli}m, memory={self.memory_mib}Mi, "
                f"GPU memory={self.gpu_memory_mib}Mi); no node has {MAX_QUANTITY} of anything"
            )
        if self.gpu_count > MAX_GPUS_PER_NODE or self.mig_count > MAX_MIG_INSTANCES_PER_NODE:
            raise InvalidRequestError(
                f"asks for {self.gpu_count or self.mig_count} GPUs or MIG instances; one pod runs on "
                f"one node, which has at most {MAX_GPUS_PER_NODE} GPUs "
                f"({MAX_MIG_INSTANCES_PER_NODE} MIG instances)"
            )
        if self.gpu_memory_mib:
            self._check_gpu_memory()
        if self.mig_profile or self.mig_count:
            self._check_mig()
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

    def _check_gpu_memory(self) -> None:
        if self.gpu_memory_mib < 0:
            raise InvalidRequestError(f"negative GPU memory request ({self.gpu_memory_mib}MiB)")
        if not (self.gpu_count == 1 and 0 < self.gpu_milli < MILLI_PER_GPU):
            raise InvalidRequestError(
                f"gpu_memory_mib={self.gpu_memory_mib} only bounds a GPU fraction (gpu_count=1, "
                f"gpu_milli 1..{MILLI_PER_GPU - 1}); got {self.gpu_count} x {self.gpu_milli}m"
            )

    def _check_mig(self) -> None:
        if not self.mig_profile:
            raise InvalidRequestError(f"mig_count={self.mig_count} without a MIG profile")
        if self.mig_count < 1:
            raise InvalidRequestError(f"{self.mig_profile}: mig_count must be >= 1, got {self.mig_count}")
        if self.gpu_count or self.gpu_milli:
            raise InvalidRequestError(
                f"a MIG request ({self.mig_count} x {self.mig_profile}) cannot also ask for whole GPUs "
                "or a GPU fraction"
            )
        name = self.mig_profile.strip().lower().removeprefix(MIG_RESOURCE_PREFIX)
        mig_profile_milli(name)  # raises for an unknown name
        object.__setattr__(self, "mig_profile", name)

    @property
    def is_cpu_only(self) -> bool:
        return self.gpu_count == 0 and self.mig_count == 0

    @property
    def is_mig(self) -> bool:
        return self.mig_count > 0

    @property
    def is_fraction(self) -> bool:
        return self.gpu_count == 1 and self.gpu_milli < MILLI_PER_GPU

    @property
    def total_gpu_milli(self) -> int:
        """The GPU demand in milli-GPU: what the paper's 'arrived workload' counts.

        A MIG instance counts its compute share (`mig_profile_milli`)."""
        if self.mig_count:
            return mig_profile_milli(self.mig_profile) * self.mig_count
        return self.gpu_milli * self.gpu_count

    @property
    def shape(self) -> tuple[int, int, int, tuple[str, ...]]:
        """What scoring depends on: every policy ignores memory (the filter checks it)."""
        return (self.cpu_milli, self.gpu_milli, self.gpu_count, self.gpu_models)

    @property
    def score_key(self) -> tuple:
        """What a node's score and GPU choice depend on: the shape, plus GPU memory when bounded
        (it changes which GPUs a fraction may use); equal to `shape` when unbounded."""
        if self.gpu_memory_mib:
            return (*self.shape, self.gpu_memory_mib)
        return self.shape

    def describe(self) -> str:
        gpu = "no GPU"
        if self.mig_count:
            gpu = f"{self.mig_count} x MIG {self.mig_profile}"
            if self.gpu_models:
                gpu += f" ({'|'.join(self.gpu_models)})"
        if self.gpu_count:
            gpu = f"{self.gpu_count} x {self.gpu_milli}m GPU"
            if self.gpu_memory_mib:
                gpu += f" with {self.gpu_memory_mib}MiB"
            if self.gpu_models:
                gpu += f" ({'|'.join(self.gpu_models)})"
        return f"cpu {self.cpu_milli}m, memory {self.memory_mib}Mi, {gpu}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a pod runs: the node and, per chosen GPU, the milli-GPU it holds.

    A MIG request holds `mig` instances instead of `gpus`; `mig_plans` are the
    reconfigurations its new instances need on a dynamic-MIG node (empty when it
    only uses instances that exist).
    """

    pod: str
    node: int
    node_name: str
    request: Request
    gpus: tuple[int, ...] = ()
    mig: tuple[MigSlot, ...] = ()
    mig_plans: tuple[MigPlan, ...] = ()

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
