"""The resource checks: the one definition of each thing a node must have for a request.

Every question about fit is answered from `CHECKS`: the filter's mask and its
explanation (`placement.fit`), `ClusterState.allocate`'s refusal of an over-commit,
and the timed simulator's queue (which checks many pending requests at once and
skips a request when one that needs no more has failed). Each check keeps all of its
answers in one class, so they cannot drift apart.

A check's `mask` is written once with numpy broadcasting over a *need*: either a
`Request` (its fields are scalars: a mask over `nodes`) or `placement.requests.Rows`
(the same fields as [R, 1] columns: a mask per request and node). Per-GPU terms add
a trailing axis with `per_gpu`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from tessellate.placement.mig import RESOURCE_PREFIX
from tessellate.placement.migplace import mig_room
from tessellate.placement.model import Assignment, Request
from tessellate.placement.timeslice import is_slice_size, refusal, slice_milli

if TYPE_CHECKING:
    from tessellate.placement.state import ClusterState

REASON_CPU = "Insufficient cpu"
REASON_MEMORY = "Insufficient memory"
REASON_PODS = "Too many pods"
REASON_NO_GPU = "node(s) had no GPU"
REASON_MODEL = "node(s) didn't match the requested GPU model"
REASON_GPU = "Insufficient nvidia.com/gpu"
REASON_GPU_SHARE = "Insufficient GPU share (no GPU with enough free milli-GPU)"
REASON_GPU_SHARE_MEMORY = "Insufficient GPU memory for the fraction"
REASON_GPU_SHARERS = "GPU sharer limit reached"

Nodes = np.ndarray | slice | int | tuple[int, int]
"""Which nodes a mask is about: all (`ALL`), an index array, or one node; per-GPU terms
also take (node, GPU)."""
ALL: slice = slice(None)


class Need(Protocol):
    """What the checks read from a request; `Request` has it as scalars, `Rows` as columns."""

    cpu_milli: object
    memory_mib: object
    gpu_count: object
    gpu_milli: object
    gpu_memory_mib: object
    mig_count: object
    is_cpu_only: object
    is_fraction: object
    is_mig: object


def at(array: np.ndarray, nodes: Nodes) -> np.ndarray:
    """`array[nodes]`; the array itself for all nodes (a view costs more than the compare)."""
    return array if nodes is ALL else array[nodes]


def per_gpu(value: object) -> object:
    """A request-side quantity ready to compare with [nodes, GPUs] arrays: columns get a
    trailing GPU axis; a scalar broadcasts as it is."""
    return value[..., None] if isinstance(value, np.ndarray) else value


def either(
    cond: object, if_true: Callable[..., np.ndarray], if_false: Callable[..., np.ndarray], *args: object
) -> np.ndarray:
    """`np.where(cond, if_true(*args), if_false(*args))`, computing only a branch some request
    takes (one request: exactly one branch, as an `if` would)."""
    if not isinstance(cond, np.ndarray):
        return if_true(*args) if cond else if_false(*args)
    if cond.all():
        return if_true(*args)
    if not cond.any():
        return if_false(*args)
    return np.where(cond, if_true(*args), if_false(*args))


def model_mask(state: ClusterState, models: tuple[str, ...]) -> np.ndarray:
    """Nodes whose GPU model is allowed (`models` empty or blank: any node with a GPU)."""
    cache = state.__dict__.setdefault("_model_mask_cache", {})
    mask = cache.get(models)
    if mask is None:
        wanted = {m for m in models if m}
        allowed = np.array([not wanted or m in wanted for m in state.gpu_models] + [False], dtype=bool)
        mask = allowed[state.model_id]  # model_id -1 picks the trailing False
        mask.flags.writeable = False
        cache[models] = mask
    return mask


def _wanted(request: Request) -> frozenset[str]:
    """The models a request names; blank names constrain nothing."""
    return frozenset(m for m in request.gpu_models if m)


def mig_reason(request: Request) -> str:
    """kube-scheduler's words for a node without the MIG resource."""
    return f"Insufficient {RESOURCE_PREFIX}{request.mig_profile}"


class Check:
    """One resource check. Subclasses define `mask` and whatever of the rest differs.

    `gates`: the checks a node must pass before this one is blamed in an explanation
    (a node without GPUs is "no GPU", not also "wrong model"). `reason_only`: the mask
    is implied by another check's and is evaluated only to explain. `routed`: the
    request as `Placer` translates it for a kind of node always passes there.
    """

    name: ClassVar[str]
    reason: ClassVar[str] = ""
    gates: tuple[Check, ...] = ()
    reason_only: ClassVar[bool] = False
    routed: ClassVar[bool] = False

    def active(self, state: ClusterState) -> bool:
        """False where this cluster cannot fail the check (it is then skipped)."""
        return True

    def applies(self, need: Need) -> object:
        """Whether the check concerns this request (a bool, or one per row)."""
        return True

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        """True where the node passes; only meaningful where `applies`."""
        raise NotImplementedError

    def reasons(
        self, state: ClusterState, request: Request, passed: np.ndarray
    ) -> list[tuple[str, np.ndarray]]:
        """The failed nodes per reason (a node under one reason at most)."""
        return [(self.reason, ~passed)]

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        """Why `a`'s node (and devices) cannot hold its request now; None if they can."""
        if self.applies(a.request) and not self.mask(state, a.request, a.node):
            return self.reason
        return None

    def covers(self, big: Request, small: Request) -> bool:
        """Whether every node that passes for `big` passes for `small`, in any state
        (both requests are ones the check `applies` to)."""
        raise NotImplementedError


class Cpu(Check):
    name = "cpu"
    reason = REASON_CPU

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        return at(state.cpu_left, nodes) >= need.cpu_milli

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        if self.mask(state, a.request, a.node):
            return None
        return f"cpu {a.request.cpu_milli}m > {state.cpu_left[a.node]}m free"

    def covers(self, big: Request, small: Request) -> bool:
        return big.cpu_milli >= small.cpu_milli


class Memory(Check):
    name = "memory"
    reason = REASON_MEMORY

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        return at(state.mem_left, nodes) >= need.memory_mib

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        if self.mask(state, a.request, a.node):
            return None
        return f"memory {a.request.memory_mib}Mi > {state.mem_left[a.node]}Mi free"

    def covers(self, big: Request, small: Request) -> bool:
        return big.memory_mib >= small.memory_mib


class Pods(Check):
    name = "pods"
    reason = REASON_PODS

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        return at(state.pod_count, nodes) < at(state.max_pods, nodes)

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        if self.mask(state, a.request, a.node):
            return None
        return f"node already runs {state.pod_count[a.node]} pods"

    def covers(self, big: Request, small: Request) -> bool:
        return True


def _uses_gpu(need: Need) -> object:
    cpu_only = need.is_cpu_only
    return ~cpu_only if isinstance(cpu_only, np.ndarray) else not cpu_only


class HasGpu(Check):
    """A node without GPUs: implied by `Model` (such a node has no model), so only explains.
    A device list on such a node is refused by `Gpu` (GPU ids) or the MIG book."""

    name = "has-gpu"
    reason = REASON_NO_GPU
    reason_only = True

    def applies(self, need: Need) -> object:
        return _uses_gpu(need)

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        return at(state.gpu_count, nodes) > 0

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        return None

    def covers(self, big: Request, small: Request) -> bool:
        return True


class Model(Check):
    name = "model"
    reason = REASON_MODEL

    def __init__(self, has_gpu: HasGpu):
        self.gates = (has_gpu,)

    def applies(self, need: Need) -> object:
        return _uses_gpu(need)

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        if isinstance(need, Request):
            return at(model_mask(state, need.gpu_models), nodes)
        return need.allowed(nodes)  # type: ignore[attr-defined]

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        # Without a named model a GPU-less node is the device checks' to refuse, as in the filter.
        if (
            not any(a.request.gpu_models)
            or not self.applies(a.request)
            or self.mask(state, a.request, a.node)
        ):
            return None
        return f"GPU model {state.nodes[a.node].gpu_model} not in {a.request.gpu_models}"

    def covers(self, big: Request, small: Request) -> bool:
        allowed, wanted = _wanted(small), _wanted(big)
        return not allowed or (bool(wanted) and wanted <= allowed)


class TimeSlice(Check):
    """A time-sliced node (`placement.timeslice`) takes one slice per pod: a fraction of
    exactly one slice. `Placer` translates a one-GPU request to that before asking."""

    name = "time-slice"
    routed = True  # `placement.timeslice.routes` asks for a slice only of sliced nodes

    def __init__(self, has_gpu: HasGpu, model: Model):
        self.gates = (has_gpu, model)

    def active(self, state: ClusterState) -> bool:
        return state.time_sliced

    def applies(self, need: Need) -> object:
        return need.gpu_count > 0  # type: ignore[operator]

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        replicas = at(state.replicas, nodes)
        return (replicas == 1) | (need.is_fraction & (need.gpu_milli == slice_milli(replicas)))  # type: ignore[operator]

    def reasons(
        self, state: ClusterState, request: Request, passed: np.ndarray
    ) -> list[tuple[str, np.ndarray]]:
        return [(refusal(request), ~passed)]

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        if not self.applies(a.request) or self.mask(state, a.request, a.node):
            return None
        replicas = int(state.replicas[a.node])
        return (
            f"GPUs here are time-sliced into {replicas} replicas; "
            f"a pod takes one {slice_milli(replicas)}m slice, not {a.request.describe()}"
        )

    def covers(self, big: Request, small: Request) -> bool:
        # Unsliced nodes pass everything; a sliced one passes only a fraction of one slice.
        if not (big.is_fraction and is_slice_size(big.gpu_milli)):
            return True
        return small.is_fraction and small.gpu_milli == big.gpu_milli


class Gpu(Check):
    """Whole GPUs (that many free GPUs) or a fraction (one GPU with the milli-GPU free, and,
    where bounded, its GPU memory and a sharer slot: `ClusterState.fraction_room`)."""

    name = "gpu"
    reason = REASON_GPU

    def __init__(self, *gates: Check):
        self.gates = gates

    def applies(self, need: Need) -> object:
        return need.gpu_count > 0  # type: ignore[operator]

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        return either(need.is_fraction, self._fraction, self._whole, state, need, nodes)

    @staticmethod
    def _whole(state: ClusterState, need: Need, nodes: Nodes) -> np.ndarray:
        return at(state.gpu_free_count, nodes) >= need.gpu_count  # a free GPU has all its milli

    @staticmethod
    def milli_free(state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        """Per GPU of `nodes`: True where the request's milli-GPU is free."""
        return at(state.gpu_left, nodes) >= per_gpu(need.gpu_milli)

    def _fraction(self, state: ClusterState, need: Need, nodes: Nodes) -> np.ndarray:
        room = state.fraction_room(need, nodes)
        if room is None:  # the largest free share says it (the milli-only fast path)
            return at(state.gpu_max_left, nodes) >= need.gpu_milli
        return (self.milli_free(state, need, nodes) & room).any(axis=-1)

    def reasons(
        self, state: ClusterState, request: Request, passed: np.ndarray
    ) -> list[tuple[str, np.ndarray]]:
        """A fraction's node gives the first bound it fails: milli-GPU, GPU memory, sharer slot."""
        if not request.is_fraction:
            return [(REASON_GPU, ~passed)]
        memory, sharers = state.gpu_memory_room(request), state.sharer_room()
        if memory is None and sharers is None:
            return [(REASON_GPU_SHARE, ~passed)]
        milli = self.milli_free(state, request)
        short_milli = ~milli.any(axis=1)
        with_memory = milli if memory is None else milli & memory
        short_memory = ~short_milli & ~with_memory.any(axis=1)
        return [
            (REASON_GPU_SHARE, short_milli),
            (REASON_GPU_SHARE_MEMORY, short_memory),
            (REASON_GPU_SHARERS, ~passed & ~short_milli & ~short_memory),
        ]

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        """The chosen GPUs: as many as asked, distinct, existing, each with room for the request."""
        req, node = a.request, a.node
        if len(a.gpus) != req.gpu_count:
            return f"{len(a.gpus)} GPU ids for a {req.gpu_count}-GPU request"
        if len(set(a.gpus)) != len(a.gpus):
            return f"the same GPU listed twice {a.gpus}"
        for gpu in a.gpus:
            if not 0 <= gpu < state.gpu_count[node]:
                return f"GPU {gpu} does not exist"
            where = (node, gpu)  # one GPU: the per-GPU terms give a scalar
            if not self.milli_free(state, req, where):
                return f"GPU {gpu} has {state.gpu_left[where]}m free, needs {req.gpu_milli}m"
            if not req.is_fraction:
                continue
            sharers = state.sharer_room(where)
            if sharers is not None and not sharers:
                return (
                    f"GPU {gpu} already has {state.gpu_sharers[where]} sharers "
                    f"(limit {state.sharer_cap[where]})"
                )
            memory = state.gpu_memory_room(req, where)
            if memory is not None and not memory:
                return (
                    f"GPU {gpu} has {state.gpu_mem_left[where]}MiB GPU memory free, "
                    f"needs {req.gpu_memory_mib}MiB"
                )
        return None

    def covers(self, big: Request, small: Request) -> bool:
        if not small.is_fraction:
            return not big.is_fraction and big.gpu_count >= small.gpu_count
        if big.is_fraction:
            return big.gpu_milli >= small.gpu_milli and big.gpu_memory_mib >= small.gpu_memory_mib
        # Whole GPUs pass only where a GPU is free: it has every milli and no sharer, but its
        # memory may be less than the fraction bounds.
        return small.gpu_memory_mib == 0


class Mig(Check):
    """Room for `mig_count` instances of the profile (`placement.migplace.mig_room`); the
    instances an assignment names are refused by the state's MIG book, which also works
    out what they change."""

    name = "mig"

    def __init__(self, *gates: Check):
        self.gates = gates

    def applies(self, need: Need) -> object:
        return need.is_mig

    def mask(self, state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
        if isinstance(need, Request):
            room = at(mig_room(state, need.mig_profile), nodes)
        else:
            room = need.mig_room(state, nodes)  # type: ignore[attr-defined]
        return room >= need.mig_count

    def reasons(
        self, state: ClusterState, request: Request, passed: np.ndarray
    ) -> list[tuple[str, np.ndarray]]:
        return [(mig_reason(request), ~passed)]

    def refuse(self, state: ClusterState, a: Assignment) -> str | None:
        return None

    def covers(self, big: Request, small: Request) -> bool:
        return big.mig_profile == small.mig_profile and big.mig_count >= small.mig_count


def _checks() -> tuple[Check, ...]:
    has_gpu = HasGpu()
    model = Model(has_gpu)
    sliced = TimeSlice(has_gpu, model)
    gpu = Gpu(has_gpu, model, sliced)
    return (Cpu(), Memory(), Pods(), has_gpu, gpu, sliced, model, Mig(has_gpu, model))


CHECKS: tuple[Check, ...] = _checks()
"""Every resource check, in the order `ClusterState.allocate` reports the first refusal."""


def _active_checks(state: ClusterState) -> tuple[Check, ...]:
    """The checks this cluster can fail, in `CHECKS` order (cached on the state)."""
    found = state.__dict__.get("_active_checks")
    if found is None:
        found = state.__dict__["_active_checks"] = tuple(c for c in CHECKS if c.active(state))
    return found


def _mask_checks(state: ClusterState) -> tuple[Check, ...]:
    """The active checks whose masks are not implied by others' (cached on the state)."""
    found = state.__dict__.get("_mask_checks")
    if found is None:
        found = state.__dict__["_mask_checks"] = tuple(c for c in _active_checks(state) if not c.reason_only)
    return found


def passes(state: ClusterState, need: Need, nodes: Nodes = ALL) -> np.ndarray:
    """Where `need` fits: every check that applies, ANDed (per node; per row and node for `Rows`)."""
    out = None
    for check in _mask_checks(state):
        applies = check.applies(need)
        if not isinstance(applies, np.ndarray):
            if not applies:
                continue
            mask = check.mask(state, need, nodes)
        elif applies.any():
            mask = check.mask(state, need, nodes) | ~applies
        else:
            continue
        if out is None:
            out = mask  # the CPU check's: a fresh array of the full shape
        else:
            out &= mask
    assert out is not None, "the CPU check applies to every request"
    return out


def refusal_of(state: ClusterState, a: Assignment) -> str | None:
    """The first check that refuses `a` on its node, in words; None when every check passes."""
    for check in _active_checks(state):
        reason = check.refuse(state, a)
        if reason is not None:
            return reason
    return None


def needs_at_least(big: Request, small: Request, checks: Sequence[Check] = CHECKS) -> bool:
    """True when `big` can fit only where `small` fits, in any state (so `small` failing
    dooms `big`): every check of `small` concerns `big` too and is no easier for it."""
    return all(check.applies(big) and check.covers(big, small) for check in checks if check.applies(small))


UNROUTED: tuple[Check, ...] = tuple(c for c in CHECKS if not c.routed)
"""The checks that can fail a request on nodes of the kind it was translated for."""
