"""Reading what a pod asks for: Kubernetes quantities and GPU resources.

A pod's effective request is kube-scheduler's: the sum over its containers
and sidecars (init containers with `restartPolicy: Always`), at least what
each init container needs (itself plus the sidecars started before it), plus
the pod overhead. GPU resources follow Tessellate's contract (design.md):
`nvidia.com/gpu` whole GPUs, `tessellate.dev/gpu-milli` (+
`tessellate.dev/gpu-memory-mib`) fractions, and `nvidia.com/mig-<profile>` MIG
instances (one profile per pod), which the placement core places on exact MIG
slots.

Whole GPUs and fractions are shapes, not amounts, so they are combined per
phase: each init container runs alone, the app containers run together, and
each phase needs either k whole GPUs or a fraction of one GPU. The pod asks
for whole GPUs if any phase does (the largest k; a fraction phase then runs on
one of them), else for the largest fraction. A phase that needs both at once
is refused; so are GPUs on sidecars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from tessellate.placement import MILLI_PER_GPU, InvalidRequestError, Request
from tessellate.placement.mig import RESOURCE_PREFIX, load_catalogue

GPU = "nvidia.com/gpu"
GPU_SHARED = "nvidia.com/gpu.shared"
"""Time-sliced GPU replicas when NVIDIA's device plugin renames them (`renameByDefault`)."""
GPU_MILLI = "tessellate.dev/gpu-milli"
GPU_MEMORY = "tessellate.dev/gpu-memory-mib"
MIG_PREFIX = RESOURCE_PREFIX
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
        number = Decimal(str(value))
        if not number.is_finite():
            raise QuantityError(f"not a quantity: {value!r}")
        return number
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


def is_sidecar(container: dict[str, Any]) -> bool:
    """An init container with `restartPolicy: Always` keeps running next to the app containers."""
    return container.get("restartPolicy") == "Always"


def _checked_amounts(container: dict[str, Any]) -> dict[str, int]:
    return {name: _checked_amount(name, raw) for name, raw in _container_amounts(container).items()}


def _add(into: dict[str, int], amounts: dict[str, int]) -> None:
    for name, value in amounts.items():
        into[name] = into.get(name, 0) + value


def _raise_to(into: dict[str, int], amounts: dict[str, int]) -> None:
    for name, value in amounts.items():
        into[name] = max(into.get(name, 0), value)


def _pod_totals(spec: dict[str, Any]) -> dict[str, int]:
    """Per resource, kube-scheduler's effective request (sidecars as since Kubernetes 1.29).

    The app containers and the sidecars (init containers with `restartPolicy: Always`)
    add up; each init container needs what it asks plus the sidecars started before it;
    the pod needs the larger of the two, plus the overhead.
    """
    totals: dict[str, int] = {}
    for container in spec.get("containers") or []:
        _add(totals, _checked_amounts(container))
    sidecars: dict[str, int] = {}
    peak: dict[str, int] = {}
    for container in spec.get("initContainers") or []:
        own = _checked_amounts(container)
        if is_sidecar(container):
            _add(totals, own)
            _add(sidecars, own)
            running = dict(sidecars)
        else:
            running = dict(own)
            _add(running, sidecars)
        _raise_to(peak, running)
    _raise_to(totals, peak)
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


def _is_gpu_resource(name: str) -> bool:
    return name in (GPU, GPU_SHARED, GPU_MILLI, GPU_MEMORY) or name.startswith(MIG_PREFIX)


@dataclass(frozen=True)
class _Phase:
    """Containers of a pod that run at the same time, with what each asks for."""

    label: str
    parts: tuple[tuple[str, dict[str, int]], ...]

    def total(self, resource: str) -> int:
        return sum(amounts.get(resource, 0) for _, amounts in self.parts)

    def listing(self, resource: str) -> str:
        """`c0: 600 + c1: 600`: who asks for how much of `resource`."""
        return " + ".join(f"{name}: {a[resource]}" for name, a in self.parts if a.get(resource))

    def askers(self, resource: str) -> int:
        return sum(1 for _, amounts in self.parts if amounts.get(resource))


def _gpu_phases(spec: dict[str, Any]) -> list[_Phase]:
    """Each init container alone, then the app containers together: who uses GPUs at once.

    Sidecars (init containers with `restartPolicy: Always`) would run next to both and
    split the pod's GPUs in ways the agent cannot serve, so they may not ask for GPUs.
    """
    phases = []
    for container in spec.get("initContainers") or []:
        amounts = _checked_amounts(container)
        name = container.get("name", "?")
        if is_sidecar(container):
            asked = sorted(r for r, v in amounts.items() if v and _is_gpu_resource(r))
            if asked:
                raise PodRequestError(
                    f"init container {name} is a sidecar (restartPolicy: Always) and asks for {asked[0]}; "
                    "sidecars run next to the app containers for the pod's whole life and Tessellate "
                    "does not place GPUs for them: move the GPU request to an app container"
                )
            continue
        phases.append(_Phase(f"init container {name}", ((name, amounts),)))
    apps = tuple((c.get("name", "?"), _checked_amounts(c)) for c in spec.get("containers") or [])
    label = f"container {apps[0][0]}" if len(apps) == 1 else "the app containers (which run together)"
    phases.append(_Phase(label, apps))
    return phases


def _check_phase(phase: _Phase) -> None:
    """Refuse what cannot run at once: whole GPUs next to a fraction, a fraction over one GPU."""
    whole = phase.total(GPU) + phase.total(GPU_SHARED)
    milli = phase.total(GPU_MILLI)
    if whole and milli:
        raise PodRequestError(
            f"{phase.label} ask(s) for both whole GPUs ({GPU}: {whole}) and a fraction "
            f"({GPU_MILLI}: {phase.listing(GPU_MILLI)}) at the same time; use one or the other "
            f"(a whole GPU covers any fraction: ask for {GPU} only)"
        )
    if milli and not 0 < milli < MILLI_PER_GPU:
        raise PodRequestError(_fraction_too_large(phase, milli))
    if phase.total(GPU_MEMORY) and not milli:
        raise PodRequestError(
            f"{GPU_MEMORY} is only meaningful with {GPU_MILLI} (a GPU fraction): {phase.label} asks "
            f"for {GPU_MEMORY} ({phase.listing(GPU_MEMORY)}) but for no {GPU_MILLI}"
        )


def _fraction_too_large(phase: _Phase, milli: int) -> str:
    if phase.askers(GPU_MILLI) == 1:
        return (
            f"{GPU_MILLI} must be 1..{MILLI_PER_GPU - 1} (a share of one GPU), got {milli} in "
            f"{phase.label}; for whole GPUs use {GPU}"
        )
    gpus = -(-milli // MILLI_PER_GPU)
    return (
        f"{GPU_MILLI} adds up over {phase.label}, which share one GPU: {phase.listing(GPU_MILLI)} = "
        f"{milli} milli, more than a share of one GPU (1..{MILLI_PER_GPU - 1}); one pod's fraction "
        f"lives on one GPU, so ask for {GPU}: {gpus} (whole GPUs) instead, or split the containers "
        "into separate pods"
    )


def _gpu_shape(spec: dict[str, Any]) -> tuple[int, int, int]:
    """(whole GPUs, milli, GPU memory MiB) the pod needs, the largest over its phases.

    Whole GPUs win: a phase with a fraction then runs on one of the pod's GPUs.
    """
    phases = _gpu_phases(spec)
    for phase in phases:
        _check_phase(phase)
    whole = max(p.total(GPU) + p.total(GPU_SHARED) for p in phases)
    if whole:
        return whole, 0, 0
    return 0, max(p.total(GPU_MILLI) for p in phases), max(p.total(GPU_MEMORY) for p in phases)


def pod_request(pod: dict[str, Any]) -> PodRequest:
    """Translate a pod into a placement request; PodRequestError says what is wrong."""
    spec = pod.get("spec") or {}
    totals = _pod_totals(spec)
    gpus = totals.pop(GPU, 0)
    shared = totals.pop(GPU_SHARED, 0)
    if shared and gpus:
        raise PodRequestError(
            f"asks for both {GPU} ({gpus}) and time-sliced replicas ({GPU_SHARED}: {shared}); use one"
        )
    milli = totals.pop(GPU_MILLI, 0)
    totals.pop(GPU_MEMORY, 0)
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
    if migs and (gpus or shared or milli):
        raise PodRequestError(
            f"asks for MIG instances ({next(iter(migs))}) and whole GPUs or a fraction; use one kind of GPU"
        )
    gpus, milli, gpu_mem = _gpu_shape(spec)
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
