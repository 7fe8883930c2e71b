"""Drives the placement core through a trace, one pod at a time.

`run_inflation` is the FGD paper's protocol (no departures, failed pods are
dropped); the timed replay with departures lives in `simulator.timed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tessellate.placement import (
    Assignment,
    ClusterState,
    Fragmentation,
    Placer,
    PolicyContext,
    TargetWorkload,
    Unschedulable,
    create_policy,
)
from tessellate.placement.migplace import MigChoice, MigChooser
from tessellate.placement.workload import expected_workload
from tessellate.simulator.metrics import EventSeries, FragmentationRecorder
from tessellate.simulator.migmetrics import mig_demand
from tessellate.simulator.protocol import plan_inflation
from tessellate.simulator.trace import PodRecord, Trace

FULL_PCT = 100
"""The arrived demand (% of GPU capacity) of the per-model snapshot a planner reads: the paper's
`alloc` column 100, with `metrics.discrete`'s rounding."""


@dataclass(frozen=True)
class NodeLoad:
    """What is left on every node at one moment of a run (copies, not views of the state)."""

    cpu_left: np.ndarray
    gpu_left: np.ndarray

    @classmethod
    def of(cls, state: ClusterState) -> NodeLoad:
        return cls(cpu_left=state.cpu_left.copy(), gpu_left=state.gpu_left.copy())


@dataclass
class RunResult:
    """Everything one simulated run produced."""

    workload: str
    policy: str
    seed: int
    tune: float | None
    total_gpus: int
    series: EventSeries
    state: ClusterState
    failures: list[tuple[PodRecord, Unschedulable]] = field(default_factory=list)
    tuned_copies: int = 0
    at_full: NodeLoad | None = None
    """The nodes after the first event whose arrived demand rounds to `FULL_PCT` % of capacity
    (None if the run never got there)."""


def trace_models(trace: Trace) -> frozenset[str]:
    """The GPU models the trace's cluster has (what a live scheduler would see on its nodes)."""
    return frozenset(n.gpu_model for n in trace.nodes if n.gpu_count)


def target_workload(trace: Trace) -> TargetWorkload:
    """FGD's expected workload for the trace's pods, as the live scheduler builds it for the
    same pods (`placement.workload`): what `simulator.timed` replays and the scheduler binds."""
    pods = sorted(trace.pods, key=lambda p: p.name)
    return expected_workload([p.request for p in pods], trace_models(trace))


def paper_target_workload(trace: Trace) -> TargetWorkload:
    """The FGD artifact's typical pods (fgd-protocol.md Sec. 3.7): the original trace before
    tuning, 95 % coverage, model lists as written; the paper's replays are bit-identical on it.

    MIG requests are left out (they never use milli-GPU capacity; as GPU-less shapes they
    would make every idle GPU look like a fragment) unless nothing else is left."""
    pods = sorted(trace.pods, key=lambda p: p.name)
    milli = [p.request for p in pods if not p.request.is_mig]
    return TargetWorkload.from_requests(milli or [p.request for p in pods])


def reached_full(arrived_milli: int, total_gpus: int) -> bool:
    """Whether `arrived_milli` rounds to at least `FULL_PCT` % of capacity, as `discrete` rounds
    (half to even), so the snapshot is taken where the paper's column 100 starts."""
    return total_gpus > 0 and round(arrived_milli / total_gpus / 10) >= FULL_PCT


def run_inflation(
    trace: Trace,
    policy: str,
    seed: int,
    tune: float | None = 1.3,
    progress: Callable[[int], None] | None = None,
    mig_choice: MigChoice = "aware",
    target: TargetWorkload | None = None,
) -> RunResult:
    """One run of the paper's protocol: shuffled, tuned arrivals, no departures.

    MIG requests (when the trace has any) are placed by `mig_choice`. FGD expects `target`
    (default: the paper's, `paper_target_workload`), which the fragmentation metrics use too."""
    plan = plan_inflation(trace, seed, tune)
    state = ClusterState(plan.nodes)
    target = target if target is not None else paper_target_workload(trace)
    # `expected` is the product's definition of the same trace's workload, for policies that
    # ask for it (tessellate); FGD and the metrics keep `target`.
    context = PolicyContext(rng=plan.rng, target=target, expected=target_workload(trace))
    policy_object = create_policy(policy, context)
    placer = Placer(state, policy_object, mig=MigChooser(mig_choice, mig_demand(trace)))
    series = EventSeries.empty(len(plan.arrivals))
    recorder = FragmentationRecorder(Fragmentation(target, state), state)
    result = RunResult(
        workload=trace.name,
        policy=policy,
        seed=seed,
        tune=tune,
        total_gpus=trace.total_gpus,
        series=series,
        state=state,
        tuned_copies=plan.tuned_copies,
    )
    arrived = used = 0
    for i, pod in enumerate(plan.arrivals):
        arrived += pod.request.total_gpu_milli
        decision = placer.place(pod.name, pod.request)
        if isinstance(decision, Assignment):
            state.allocate(decision)
            recorder.record(i, decision.node)
            used += decision.request.total_gpu_milli  # what it holds: one slice on a time-sliced GPU
            series.placed[i] = True
        else:
            result.failures.append((pod, decision))
        series.arrived_milli[i] = arrived
        series.used_milli[i] = used
        if result.at_full is None and reached_full(arrived, trace.total_gpus):
            result.at_full = NodeLoad.of(state)
        if progress is not None and i % 1000 == 999:
            progress(1000)
    if progress is not None:
        progress(len(plan.arrivals) % 1000)
    series.frag_milli, series.idle_milli = recorder.totals(len(plan.arrivals))
    return result
