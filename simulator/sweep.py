"""Sweep grids: clusters x traces x tune ratios x policies x seeds, one flat row per run.

`sim compare` keeps the paper's 131-column frames; a sweep keeps one row of a
few headline numbers per run so that a grid of hundreds of runs is one table
(and one CSV) a planner can filter. Cells are plain frozen dataclasses so the
same list runs in a local process pool or on Ray (`simulator.rayrun`) and comes
back in the same order with the same numbers: every run is deterministic in its
cell, only `seconds` differs between engines.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Literal

import numpy as np
from tessellate.simulator.experiment import RunSpec, TraceSource, run_one

Mode = Literal["inflation", "timed"]
TIMING_COLUMNS = ("seconds",)
"""Columns that measure the machine, not the run: left out when comparing engines."""


@dataclass(frozen=True)
class SweepCell:
    """One run of a sweep. `tune` is the inflation ratio (inflation only); `max_wait` the
    timed replay's give-up time (timed only)."""

    source: TraceSource
    policy: str
    seed: int
    mode: Mode = "inflation"
    tune: float | None = 1.3
    max_wait: float | None = None


def grid(
    sources: Sequence[TraceSource],
    policies: Sequence[str],
    seeds: Sequence[int],
    tunes: Sequence[float | None] = (1.3,),
    mode: Mode = "inflation",
    max_wait: float | None = None,
) -> list[SweepCell]:
    """Every combination, sources outermost and seeds innermost (the table's reading order)."""
    if mode == "timed":
        tunes = (None,)
    return [
        SweepCell(source, policy, seed, mode, tune, max_wait)
        for source, tune, policy, seed in itertools.product(sources, tunes, policies, seeds)
    ]


def cluster_label(source: TraceSource) -> str:
    """What the table calls a cluster: the node file's name, or the synthetic workload."""
    if source.is_synthetic and source.nodes:
        return f"synthetic-on-{os.path.basename(str(source.nodes))}"
    if source.is_synthetic:
        return f"synthetic-{source.synthetic_kind}x{source.synthetic_scale:g}"
    return os.path.basename(str(source.nodes))


def run_cell(cell: SweepCell) -> dict[str, object]:
    """Run one cell and flatten it into the sweep table's row."""
    start = time.perf_counter()
    base: dict[str, object] = {
        "cluster": cluster_label(cell.source),
        "mode": cell.mode,
        "policy": cell.policy,
        "tune": cell.tune if cell.mode == "inflation" else np.nan,
        "seed": cell.seed,
    }
    if cell.mode == "inflation":
        record = run_one(RunSpec(cell.source, cell.policy, cell.seed, cell.tune))
        row = {
            "workload": record.workload,
            **base,
            "total_gpus": record.total_gpus,
            "alloc_at_100": float(record.alloc[100]),
            "alloc_at_130": float(record.alloc[130]),
            "frag_ratio_at_100": float(record.frag_ratio[100]),
            "frag_ratio_at_130": float(record.frag_ratio[130]),
            "pods": record.pods,
            "failed_pods": record.failed_pods,
        }
    else:
        from tessellate.simulator.timed import run_timed

        trace = cell.source.load()
        result = run_timed(trace, cell.policy, cell.seed, max_wait=cell.max_wait)
        summary = result.summary()
        row = {
            "workload": trace.name,
            **base,
            "total_gpus": result.total_gpus,
            "pods": int(summary["pods"]),
            "placed_share": result.placed / max(1, len(result.outcome)),
            "never_placed": int(summary["never_placed"]),
            "delay_p50_s": summary["delay_p50_s"],
            "delay_p95_s": summary["delay_p95_s"],
            "alloc_ratio_mean": summary["alloc_ratio_mean"],
            "frag_ratio_mean": summary["frag_ratio_mean"],
            "pending_peak": int(summary["pending_peak"]),
        }
    row["seconds"] = time.perf_counter() - start
    return row


def run_local(
    cells: Sequence[SweepCell],
    workers: int | None = None,
    on_done: Callable[[dict[str, object]], None] | None = None,
) -> list[dict[str, object]]:
    """Every cell in a process pool (default: all cores); rows in cell order."""
    workers = max(1, min(len(cells) or 1, workers or os.cpu_count() or 1))
    if workers == 1:
        rows = []
        for cell in cells:
            rows.append(run_cell(cell))
            if on_done:
                on_done(rows[-1])
        return rows
    by_index: dict[int, dict[str, object]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_cell, cell): i for i, cell in enumerate(cells)}
        for future in as_completed(futures):
            by_index[futures[future]] = future.result()
            if on_done:
                on_done(by_index[futures[future]])
    return [by_index[i] for i in range(len(cells))]
