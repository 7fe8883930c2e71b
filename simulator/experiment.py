"""Grids of simulated runs (traces x policies x seeds) in parallel processes.

Workers receive a `TraceSource` (paths or a synthetic config), not the trace
itself, and keep what they loaded, so a 780-run grid reads each trace once per
process. Results come back as the paper's per-run rows plus a few extras.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from tessellate.placement import POLICIES
from tessellate.simulator.interconnect import InterconnectQuality, interconnect_quality
from tessellate.simulator.kinds import SYNTHETIC_KINDS
from tessellate.simulator.metrics import ARRIVED_COLUMNS, discrete
from tessellate.simulator.migmetrics import MigFragmentationMeter, mig_demand
from tessellate.simulator.replay import FULL_PCT, NodeLoad, RunResult, run_inflation
from tessellate.simulator.scenarios import SCENARIOS, scenario_trace
from tessellate.simulator.trace import Trace


@dataclass(frozen=True)
class TraceSource:
    """Where a trace comes from: node and pod files, or the built-in synthetic workload."""

    nodes: str | None = None
    pods: str | None = None
    synthetic_seed: int = 0
    synthetic_scale: float = 1.0
    synthetic_kind: str = "openb"
    synthetic_mix: str = ""
    """`--synthetic-mix` (openb-like workload only): class weights and the model-constrained share."""
    """`openb` (the openb-like mix), `mig` (inference on MIG + whole-GPU training), or a
    topology scenario of simulator/scenarios.py (`mixed-topology`, `nvswitch-spot`)."""

    def __post_init__(self) -> None:
        if self.pods is not None and self.nodes is None:
            raise ValueError("a pod file needs its node file (--nodes)")
        if self.synthetic_mix:
            from tessellate.simulator.traces.synthetic import parse_mix

            if self.synthetic_kind != "openb":
                raise ValueError("--synthetic-mix shapes the openb-like workload; drop --synthetic-kind")
            parse_mix(self.synthetic_mix)  # refuse a bad mix before any run starts
        if self.synthetic_kind not in SYNTHETIC_KINDS:
            raise ValueError(
                f"unknown synthetic workload {self.synthetic_kind!r}; known: {', '.join(SYNTHETIC_KINDS)}"
            )

    @property
    def is_synthetic(self) -> bool:
        return self.pods is None

    def load(self) -> Trace:
        return _load(self)


@lru_cache(maxsize=8)
def _load(source: TraceSource) -> Trace:
    if source.is_synthetic and source.synthetic_kind == "mig":
        from tessellate.simulator.traces.migmix import MigMixConfig, generate_mig_mix

        scaled = max(1, round(MigMixConfig.nodes * source.synthetic_scale))
        pods = max(1, round(MigMixConfig.pods * source.synthetic_scale))
        return generate_mig_mix(MigMixConfig(seed=source.synthetic_seed, nodes=scaled, pods=pods))
    if source.is_synthetic and source.synthetic_kind == "multi-tenant":
        from tessellate.simulator.traces.tenants import TenantConfig, generate_tenants

        return generate_tenants(TenantConfig(seed=source.synthetic_seed, scale=source.synthetic_scale))
    if source.is_synthetic and source.synthetic_kind in SCENARIOS:
        return scenario_trace(source.synthetic_kind, seed=source.synthetic_seed)
    if source.is_synthetic:
        from tessellate.simulator.traces.synthetic import SyntheticConfig, generate, parse_mix

        classes, spec = parse_mix(source.synthetic_mix)
        mix = {"class_mix": classes, "gpu_spec_share": spec}
        if source.nodes is not None:  # the synthetic mix sized to the given nodes
            from tessellate.simulator.traces.generic import load_cluster

            cluster = load_cluster(Path(source.nodes))
            return generate(SyntheticConfig(seed=source.synthetic_seed, cluster=cluster, **mix))
        return generate(SyntheticConfig(seed=source.synthetic_seed, scale=source.synthetic_scale, **mix))
    from tessellate.simulator.traces.generic import load_any

    return load_any(Path(source.nodes), Path(source.pods))


@dataclass(frozen=True)
class RunSpec:
    source: TraceSource
    policy: str
    seed: int
    tune: float | None = 1.3
    mig_choice: str = "aware"
    """Where MIG instances go; reports label the `firstfit` baseline `<policy>+mig-firstfit`."""


@dataclass(frozen=True)
class RunRecord:
    """What a grid keeps of one run: the paper's three rows and a few counts."""

    workload: str
    policy: str
    sc_policy: str
    seed: int
    tune: float | None
    total_gpus: int
    alloc: np.ndarray
    frag: np.ndarray
    frag_ratio: np.ndarray
    pods: int
    failed_pods: int
    seconds: float
    interconnect: InterconnectQuality | None = None
    """Multi-GPU pods' wiring quality, on clusters whose topology is known."""
    mig: tuple[int, float] | None = None
    """(MIG pods placed, MIG slot fragmentation at the end), on clusters with MIG GPUs."""
    per_model: tuple[ModelShare, ...] = ()
    """Per GPU model at 100 % arrived and at the end of the run (130 % arrived), in that order
    (only the end when the run ends at or before 100 %); empty when the trace was not given."""


@dataclass(frozen=True)
class ModelShare:
    """One GPU model's part of a cluster at one point of a run: what is held and what is stranded."""

    gpu_model: str
    gpus: int
    allocated_milli: int
    frag_milli: float
    """Idle milli-GPU on this model's nodes that the target workload cannot use (the paper's F)."""
    arrived_pct: int = 130
    """Arrived GPU demand (% of capacity) when it was taken: 100, or the end of the run."""


def paper_label(policy: str) -> str:
    """The paper's directory name for a policy (`06-FGD`), or our own name."""
    cls = POLICIES.get(policy)
    return cls.paper_name if cls is not None and cls.paper_name else policy


def record_of(
    result: RunResult, seconds: float, mig_choice: str = "aware", trace: Trace | None = None
) -> RunRecord:
    rows = discrete(result.series, result.total_gpus)
    label = paper_label(result.policy) + ("" if mig_choice == "aware" else f"+mig-{mig_choice}")
    return RunRecord(
        workload=result.workload,
        policy=result.policy,
        sc_policy=label,
        seed=result.seed,
        tune=result.tune,
        total_gpus=result.total_gpus,
        alloc=rows.alloc,
        frag=rows.frag,
        frag_ratio=rows.frag_ratio,
        pods=len(result.series.placed),
        failed_pods=len(result.failures),
        seconds=seconds,
        interconnect=quality if (quality := interconnect_quality(result.state)).multi_gpu_pods else None,
        mig=_mig_outcome(result, trace),
        per_model=run_shares(result, trace) if trace is not None else (),
    )


def end_pct(result: RunResult) -> int:
    """The arrived demand (% of capacity) the end of a run is labelled with: the tune's goal
    (130 at the paper's 1.3, whatever the last pod overshoots by), else where the trace ended."""
    if result.tune is not None and result.tune > 0:
        return round(100 * result.tune)
    arrived = result.series.arrived_milli
    return round(arrived[-1] / result.total_gpus / 10) if len(arrived) and result.total_gpus else 0


def run_shares(result: RunResult, trace: Trace) -> tuple[ModelShare, ...]:
    """Per GPU model at 100 % arrived (when the run got there before its end) and at the end."""
    end = end_pct(result)
    points = [(FULL_PCT, result.at_full)] if result.at_full is not None and end > FULL_PCT else []
    points.append((end, NodeLoad.of(result.state)))
    return per_model_shares(result.state, trace, points)


def per_model_shares(
    state, trace: Trace, points: Sequence[tuple[int, NodeLoad]] = ()
) -> tuple[ModelShare, ...]:
    """Allocation and fragmentation per GPU model of `state`'s nodes as each (arrived %, load) of
    `points` left them (default: as they are now, labelled 130), under the paper's target
    workload (the one the run's fragmentation metrics use; built once for all points)."""
    from tessellate.placement import Fragmentation
    from tessellate.simulator.replay import paper_target_workload

    fragmentation = Fragmentation(paper_target_workload(trace), state)
    points = points or [(130, NodeLoad.of(state))]
    capacity = state.gpu_exists.sum(axis=1) * 1000
    shares = []
    for arrived_pct, load in points:
        frag, _ = fragmentation.amounts(load.cpu_left, load.gpu_left, state.model_id, state.replicas)
        held = capacity - load.gpu_left.sum(axis=1)
        for model_id, model in enumerate(state.gpu_models):
            on = state.model_id == model_id
            shares.append(
                ModelShare(
                    gpu_model=model,
                    gpus=int(state.gpu_count[on].sum()),
                    allocated_milli=int(held[on].sum()),
                    frag_milli=float(frag[on].sum()),
                    arrived_pct=arrived_pct,
                )
            )
    return tuple(shares)


def model_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run, arrived point (`arrived_pct`: 100 and the end, 130) and GPU model: GPUs,
    allocation (% of the model's GPUs) and fragmented GPUs."""
    rows = [
        {
            "workload": r.workload,
            "sc_policy": r.sc_policy,
            "seed": r.seed,
            "arrived_pct": m.arrived_pct,
            "gpu_model": m.gpu_model,
            "gpus": m.gpus,
            "alloc_pct": 100 * m.allocated_milli / (1000 * m.gpus) if m.gpus else float("nan"),
            "frag_gpus": m.frag_milli / 1000,
        }
        for r in records
        for m in r.per_model
    ]
    columns = ["workload", "sc_policy", "seed", "arrived_pct", "gpu_model", "gpus", "alloc_pct", "frag_gpus"]
    return pd.DataFrame(rows, columns=columns)


def _mig_outcome(result: RunResult, trace: Trace | None) -> tuple[int, float] | None:
    state = result.state
    if not state.mig.layouts:
        return None
    placed = sum(1 for a in state.live.values() if a.request.is_mig)
    meter = MigFragmentationMeter(state, mig_demand(trace) if trace is not None else None)
    return placed, meter.total


def run_one(spec: RunSpec) -> RunRecord:
    """Load (once per process), replay and summarise one run."""
    trace = spec.source.load()
    start = time.perf_counter()
    result = run_inflation(trace, spec.policy, spec.seed, spec.tune, mig_choice=spec.mig_choice)
    return record_of(result, time.perf_counter() - start, spec.mig_choice, trace)


def run_grid(
    specs: Sequence[RunSpec],
    workers: int | None = None,
    on_done: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run every spec, in `workers` processes (default: all cores); keeps the spec order."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(specs) == 1:
        records = []
        for spec in specs:
            records.append(run_one(spec))
            if on_done:
                on_done(records[-1])
        return records
    by_index: dict[int, RunRecord] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_one, spec): i for i, spec in enumerate(specs)}
        for future in as_completed(futures):
            record = future.result()
            by_index[futures[future]] = record
            if on_done:
                on_done(record)
    return [by_index[i] for i in range(len(specs))]


def frames(records: Iterable[RunRecord]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(alloc, frag, frag_ratio, extra) frames with exactly the paper's columns."""
    records = list(records)
    columns = [str(x) for x in ARRIVED_COLUMNS]

    def frame(metric: str, with_total: bool) -> pd.DataFrame:
        index = {
            "workload": [r.workload for r in records],
            "sc_policy": [r.sc_policy for r in records],
            "tune": [r.tune for r in records],
            "seed": [r.seed for r in records],
        }
        if with_total:
            index["total_gpus"] = [r.total_gpus for r in records]
        values = np.array([getattr(r, metric) for r in records]).reshape(len(records), len(columns))
        return pd.concat([pd.DataFrame(index), pd.DataFrame(values, columns=columns)], axis=1)

    extra = pd.DataFrame(
        {
            "workload": [r.workload for r in records],
            "sc_policy": [r.sc_policy for r in records],
            "seed": [r.seed for r in records],
            "failed_pods": [r.failed_pods for r in records],
            "seconds": [r.seconds for r in records],
        }
    )
    if any(r.interconnect is not None for r in records):  # clusters with known GPU wiring
        nan = float("nan")
        extra["multi_gpu_on_best_set_pct"] = [
            100 * r.interconnect.share_on_best if r.interconnect else nan for r in records
        ]
        extra["multi_gpu_bottleneck_gbps"] = [
            r.interconnect.mean_bandwidth if r.interconnect else nan for r in records
        ]
    if any(r.mig is not None for r in records):  # clusters with MIG GPUs
        nan = float("nan")
        extra["mig_pods_placed"] = [r.mig[0] if r.mig else nan for r in records]
        extra["mig_frag_slices"] = [r.mig[1] if r.mig else nan for r in records]
    return frame("alloc", True), frame("frag", False), frame("frag_ratio", False), extra
