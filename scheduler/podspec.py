"""Reading what a pod asks for: Kubernetes quantities and GPU resources.

A pod's effective request is kube-scheduler's: the sum over its containers,
at least the largest init container, plus the pod overhead. GPU resources
follow Tessellate's contract (design.md): `nvidia.com/gpu` whole GPUs,
`tessellate.dev/gpu-milli` (+ `tessellate.dev/gpu-memory-mib`) fractions, and
`nvidia.com/mig-<profile>` MIG instances (one profile per pod), which the
placement core places on exact MIG slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from placement import MILLI_PER_GPU, InvalidRequestError, Request
from placement.mig import load_catalogue

GPU = "nvidia.com/gpu"
GPU_SHARED = "nvidia.com/gpu.shared"
"""Time-sliced GPU replicas when NVIDIA's device plugin renames them (`renameByDefault`)."""
GPU_MILLI = "tessellate.dev/gpu-milli"
GPU_MEMORY = "tessellate.dev/gpu-memory-mib"
MIG_PREFIX = "nvidia.com/mig-"
CORE_RESOURCES = frozenset({"cpu", "memory", "pods", GPU, GPU_SHARED, GPU_MILLI, GPU_MEMORY})

_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


class QuantityError(ValueError):
    """A resource quantity that is not valid Kubernetes syntax."""


def parse_quantity(value: Any) -> Decimal:
    """`500m` -> 0.5, `1Gi` -> 1073741824, `2` -> 2 (exact, as Kubernetes does)."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise QuantityError(f"not a Kubernetes quantity: {value!r}")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        raise QuantityError(f"not a Kubernetes quantity: {value!r}") from None


def cpu_milli(value: Any) -> int:
    """CPU in milli-cores, rounded up like the API server does."""
    return int((parse_quantity(value) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def memory_mib(value: Any) -> int:
    """Bytes rounded up to MiB (a request never shrinks)."""
    return int((parse_quantity(value) / (1 << 20)).to_integral_value(rounding="ROUND_CEILING"))


def count(value: Any) -> int:
    """An integer count (extended resources are whole numbers in Kubernetes)."""
    q = parse_quantity(value)
    if q != q.to_integral_value():
        raise QuantityError(f"must be a whole number, got {value!r}")
    return int(q)


@lru_cache(maxsize=1)
def known_mig_profiles() -> frozenset[str]:
    """Every MIG profile name of every GPU model in the catalogue."""
    return frozenset(p.name for g in load_catalogue().values() for p in g.profiles)


class PodRequestError(ValueError):
    """A pod whose resource request can never be scheduled as written (bad input)."""


@dataclass(frozen=True)
class PodRequest:
    """The placement core's Request plus what only the Kubernetes side checks."""

    request: Request
    extended: dict[str, int] = field(default_factory=dict)
    """Other countable resources (hugepages, ephemeral-storage in MiB...)."""
    shared_replicas: bool = False
    """The GPUs were asked as `nvidia.com/gpu.shared`: only renamed time-sliced nodes have them."""

    @property
    def gpu_memory_mib(self) -> int:
        """The fraction's GPU memory bound (0: none); the placement core enforces it."""
        return self.request.gpu_memory_mib


def _container_amounts(container: dict[str, Any]) -> dict[str, Any]:
    resources = container.get("resources") or {}
    # Kubernetes defaults requests to limits; extended resources must have equal ones.
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    return merged


def _amount(name: str, raw: Any) -> int:
    if name == "cpu":
        return cpu_milli(raw)
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        return memory_mib(raw)
    return count(raw)


def _pod_totals(spec: dict[str, Any]) -> dict[str, int]:
    """Per resource: sum over containers, max with each init container, plus overhead."""
    totals: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for name, raw in _container_amounts(container).items():
            totals[name] = totals.get(name, 0) + _checked_amount(name, raw)
    for container in spec.get("initContainers") or []:
        for name, raw in _container_amounts(container).items():
            totals[name] = max(totals.get(name, 0), _checked_amount(name, raw))
    for name, raw in (spec.get("overhead") or {}).items():
        totals[name] = totals.get(name, 0) + _checked_amount(name, raw)
    return totals


def _checked_amount(name: str, raw: Any) -> int:
    try:
        value = _amount(name, raw)
    except QuantityError as exc:
        raise PodRequestError(f"resource {name}: {exc}") from None
    if value < 0:
        raise PodRequestError(f"resource {name}: negative quantity {raw!r}")
    return value


def pod_request(pod: dict[str, Any]) -> PodRequest:
    """Translate a pod into a placement request; PodRequestError says what is wrong."""
    totals = _pod_totals(pod.get("spec") or {})
    gpus = totals.pop(GPU, 0)
    shared = totals.pop(GPU_SHARED, 0)
    if shared and gpus:
        raise PodRequestError(
            f"asks for both {GPU} ({gpus}) and time-sliced replicas ({GPU_SHARED}: {shared}); use one"
        )
    gpus = gpus or shared
    milli = totals.pop(GPU_MILLI, 0)
    gpu_mem = totals.pop(GPU_MEMORY, 0)
    cpu = totals.pop("cpu", 0)
    mem = totals.pop("memory", 0)
    totals.pop("pods", None)
    migs = {name: totals.pop(name) for name in list(totals) if name.startswith(MIG_PREFIX)}
    for name in migs:
        profile = name.removeprefix(MIG_PREFIX)
        if profile not in known_mig_profiles():
            known = ", ".join(sorted(known_mig_profiles()))
            raise PodRequestError(f"unknown MIG profile {profile!r} in {name}; known profiles: {known}")
    migs = {name: n for name, n in migs.items() if n > 0}
    if len(migs) > 1:
        raise PodRequestError(
            f"asks for several MIG profiles ({', '.join(sorted(migs))}); a pod may use one MIG profile "
            "(split it into pods, or ask for the larger profile)"
        )
    if migs and (gpus or milli):
        raise PodRequestError(
            f"asks for MIG instances ({next(iter(migs))}) and whole GPUs or a fraction; use one kind of GPU"
        )
    if gpus and milli:
        raise PodRequestError(
            f"asks for both whole GPUs ({GPU}: {gpus}) and a fraction ({GPU_MILLI}: {milli}); "
            "use one or the other"
        )
    if milli and not 0 < milli < MILLI_PER_GPU:
        raise PodRequestError(
            f"{GPU_MILLI} must be 1..{MILLI_PER_GPU - 1} (a share of one GPU), got {milli}; "
            f"for whole GPUs use {GPU}"
        )
    if gpu_mem and not milli:
        raise PodRequestError(f"{GPU_MEMORY} is only meaningful with {GPU_MILLI} (a GPU fraction)")
    try:
        if migs:
            ((name, n),) = migs.items()
            request = Request(
                cpu_milli=cpu, memory_mib=mem, mig_profile=name.removeprefix(MIG_PREFIX), mig_count=n
            )
        elif milli:
            request = Request(
                cpu_milli=cpu, memory_mib=mem, gpu_count=1, gpu_milli=milli, gpu_memory_mib=gpu_mem
            )
        elif gpus:
            request = Request(cpu_milli=cpu, memory_mib=mem, gpu_count=gpus, gpu_milli=MILLI_PER_GPU)
        else:
            request = Request(cpu_milli=cpu, memory_mib=mem)
    except InvalidRequestError as exc:
        raise PodRequestError(str(exc)) from None
    return PodRequest(request=request, extended=totals, shared_replicas=bool(shared))


def node_extended(allocatable: dict[str, Any]) -> dict[str, int]:
    """A node's allocatable countable resources other than the core ones."""
    out: dict[str, int] = {}
    for name, raw in allocatable.items():
        if name in CORE_RESOURCES or name.startswith(MIG_PREFIX):  # MIG: the placement core counts it
            continue
        try:
            out[name] = _amount(name, raw)
        except QuantityError:
            continue  # a node's odd resource cannot be requested meaningfully either
    return out
