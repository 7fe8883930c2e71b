"""Tiny, readable builders for placement tests.

    state = cluster(("n0", 8000, 65536, 4, "T4"), ("cpu", 4000, 8192))
    occupy(state, "n0", free=(500, 1000, 0, 1000))   # GPU0 half used, GPU2 full
    decision = place(state, "packing", frac(300))

Rows are `(name, cpu_milli, memory_mib[, gpu_count, gpu_model[, max_pods]])`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    Decision,
    IntSource,
    NodeSpec,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    TargetWorkload,
    create_policy,
)

_pod_numbers = itertools.count()


def cluster(*rows: tuple) -> ClusterState:
    """A cluster whose node order (= tie-break order) is the order of `rows`."""
    specs = []
    for row in rows:
        name, cpu, mem, *rest = row
        gpus = rest[0] if len(rest) > 0 else 0
        model = rest[1] if len(rest) > 1 else ""
        max_pods = rest[2] if len(rest) > 2 else 1001
        specs.append(NodeSpec(name, cpu, mem, gpus, model, max_pods))
    return ClusterState(specs)


def cpu_only(cpu: int = 1000, mem: int = 0) -> Request:
    return Request(cpu_milli=cpu, memory_mib=mem)


def frac(milli: int, cpu: int = 1000, mem: int = 0, models: Sequence[str] = ()) -> Request:
    """A GPU-sharing request: `milli` (1..999) of one GPU."""
    return Request(cpu_milli=cpu, memory_mib=mem, gpu_count=1, gpu_milli=milli, gpu_models=tuple(models))


def whole(count: int = 1, cpu: int = 1000, mem: int = 0, models: Sequence[str] = ()) -> Request:
    """`count` whole GPUs."""
    return Request(
        cpu_milli=cpu, memory_mib=mem, gpu_count=count, gpu_milli=MILLI_PER_GPU, gpu_models=tuple(models)
    )


def fresh_pod_name(prefix: str = "pre") -> str:
    return f"{prefix}-{next(_pod_numbers)}"


def put(
    state: ClusterState, node: str, request: Request, gpus: Iterable[int] = (), pod: str | None = None
) -> Assignment:
    """Allocate `request` on `node` (by name) and the given GPU ids, through `state.allocate`."""
    assignment = Assignment(
        pod=pod or fresh_pod_name(), node=state.index[node], node_name=node, request=request, gpus=tuple(gpus)
    )
    state.allocate(assignment)
    return assignment


def occupy(state: ClusterState, node: str, free: Sequence[int] = (), cpu: int = 0, mem: int = 0) -> None:
    """Bring `node` to the given free milli per GPU (and use `cpu`/`mem` on top).

    Each partly used GPU gets one 0-CPU sharing pod (affinity tag `share-gpu`),
    each fully used GPU one 0-CPU 1-GPU pod (tag `1-gpu`).
    """
    for gpu, left in enumerate(free):
        used = MILLI_PER_GPU - left
        if used == MILLI_PER_GPU:
            put(state, node, whole(1, cpu=0), gpus=(gpu,))
        elif used > 0:
            put(state, node, frac(used, cpu=0), gpus=(gpu,))
    if cpu or mem:
        put(state, node, cpu_only(cpu=cpu, mem=mem))


def one_type_target(request: Request) -> TargetWorkload:
    """A target workload made of a single task type."""
    return TargetWorkload(types=(request.shape,), weights=(1.0,))


DEFAULT_TARGET = one_type_target(whole(1))
"""Used when a test needs *a* target for fgd but does not care which."""


def placer(
    state: ClusterState,
    policy: str,
    *,
    target: TargetWorkload | None = None,
    rng: IntSource | None = None,
) -> Placer:
    context = PolicyContext(rng=rng if rng is not None else NumpyInts(0), target=target or DEFAULT_TARGET)
    return Placer(state, create_policy(policy, context))


def place(
    state: ClusterState,
    policy: str,
    request: Request,
    *,
    target: TargetWorkload | None = None,
    rng: IntSource | None = None,
    pod: str = "pod",
) -> Decision:
    """One scheduling cycle (nothing is allocated)."""
    return placer(state, policy, target=target, rng=rng).place(pod, request)


def scores(
    state: ClusterState, policy: str, request: Request, *, target: TargetWorkload | None = None
) -> list[int]:
    """The policy's raw score of every node (as if all were feasible)."""
    p = placer(state, policy, target=target).policy
    return [int(s) for s in p.score(state, request, np.arange(len(state)))]


def where(decision: Decision) -> tuple[str, tuple[int, ...]]:
    """(node name, GPU ids) of an Assignment; fails the test on Unschedulable."""
    assert isinstance(decision, Assignment), f"expected a placement, got {decision}"
    return decision.node_name, decision.gpus


class CountingInts:
    """An IntSource that records every draw (to check when randomness is consumed)."""

    def __init__(self, seed: int = 0):
        self._inner = NumpyInts(seed)
        self.calls: list[int] = []

    def intn(self, n: int) -> int:
        self.calls.append(n)
        return self._inner.intn(n)
