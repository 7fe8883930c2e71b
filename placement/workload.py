"""FGD's expected workload: one definition for the live scheduler and the simulator.

FGD scores a placement by how much it fragments the cluster for the pods the cluster
expects (fgd-protocol.md Sec. 3.7). If the scheduler and the simulator built that
expectation differently, the simulator would predict placements the scheduler never
makes; so both hand `expected_workload` the requests they know, each with the GPU
models it may use, and get the same `TargetWorkload` back.

The FGD paper's own definition (95 % coverage, model lists as the trace spells them)
stays with the paper-reproduction path (`simulator.replay.paper_target_workload`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

from tessellate.placement.fragmentation import TargetWorkload, TaskType
from tessellate.placement.model import MILLI_PER_GPU, Request

COVERAGE = 1.0
"""Every shape seen, not the paper's 95 %: the rare shapes (8-GPU jobs, odd fractions, pods
naming their models) are the ones FGD must keep room for. Fed once in file order, the openb
traces with model constraints or many fractions end 1-11 points of GPU allocation higher,
the others within 0.4 points (benchmarks/target_definition.py)."""
MAX_TYPES = 512
"""A bound on scoring cost (linear in the types) for clusters with endless distinct shapes;
above every shared trace (at most 303 types). Cutting a trace's tail costs allocation: at 64
types the openb traces lose up to 1 point."""

DEFAULT_WORKLOAD = (
    Request(cpu_milli=4000, memory_mib=16384, gpu_count=1, gpu_milli=MILLI_PER_GPU),
    Request(cpu_milli=8000, memory_mib=32768, gpu_count=2, gpu_milli=MILLI_PER_GPU),
    Request(cpu_milli=16000, memory_mib=65536, gpu_count=4, gpu_milli=MILLI_PER_GPU),
    Request(cpu_milli=32000, memory_mib=131072, gpu_count=8, gpu_milli=MILLI_PER_GPU),
    Request(cpu_milli=2000, memory_mib=8192, gpu_count=1, gpu_milli=500),
    Request(cpu_milli=1000, memory_mib=4096),
)
"""What FGD expects before any pod is known: whole GPUs, a half, CPU only."""


def allowed_models(request: Request, cluster_models: Collection[str] | None = None) -> tuple[str, ...] | None:
    """The GPU models a request may use, sorted and distinct; () any; None: none of the cluster's.

    Sorted and distinct so that `T4|P100`, `P100|T4` and `P100|T4|T4` (a trace's spellings)
    and the models a node affinity lets through are one task type. A CPU-only request uses
    no GPU, so its models are (). With `cluster_models`, models the cluster lacks are dropped
    (a scheduler cannot see them): the simulator's and the scheduler's lists then agree.
    """
    return _models(request.gpu_count, request.gpu_models, cluster_models)


def _models(
    gpu_count: int, models: tuple[str, ...], cluster_models: Collection[str] | None
) -> tuple[str, ...] | None:
    if not gpu_count:
        return ()
    wanted = {m for m in models if m}
    if not wanted:
        return ()
    if cluster_models is not None:
        wanted.intersection_update(cluster_models)
        if not wanted:
            return None
    return tuple(sorted(wanted))


def expected_workload(
    requests: Iterable[Request],
    cluster_models: Collection[str] | None = None,
    *,
    coverage: float = COVERAGE,
    max_types: int | None = MAX_TYPES,
) -> TargetWorkload:
    """FGD's task types and weights for a cluster whose pods ask for `requests`.

    MIG requests are left out (they never use milli-GPU capacity; as GPU-less shapes they
    would make every idle GPU look like a fragment), and so are requests no model of the
    cluster serves (they never run). With nothing left, `DEFAULT_WORKLOAD` is expected.
    """
    seen = Counter(r.shape for r in requests if not r.is_mig)
    counts: Counter[TaskType] = Counter()
    for (cpu, milli, gpus, models), count in seen.items():
        allowed = _models(gpus, models, cluster_models)
        if allowed is not None:
            counts[cpu, milli, gpus, allowed] += count
    if not counts:
        counts = Counter(r.shape for r in DEFAULT_WORKLOAD)
    return TargetWorkload.from_counts(counts, coverage, max_types)
