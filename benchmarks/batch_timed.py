#!/usr/bin/env python3
"""Batch placement in the timed replay: `sim timed` one pod at a time vs `--batch` (CP-SAT).

Per workload and policy (fgd, and `tessellate` when registered), greedy vs batch: placed
GPU-hours (allocated GPU integrated over the replay), queueing delay p50/p95, pods never
placed, how many batches reached the solver (the rest were complete under greedy), how many
of those improved on greedy or fell back to it, solve time p50/p95/max, and wall time.

Workloads: "default", what `sim timed` runs without a trace (the synthetic openb-like
workload at load 0.9, where almost nothing waits), and "busy", the same generator with
12000 pods at load 4 (benchmarks/timed_speed.py's), where thousands of pods wait.

    python benchmarks/batch_timed.py [--policies fgd,tessellate] [--workloads default,busy]
        [--batch-size 16] [--batch-time-limit 0.2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from tessellate.placement import POLICIES
from tessellate.placement.batch import BatchOptions
from tessellate.simulator.timed import TimedResult, run_timed
from tessellate.simulator.trace import Trace
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate


def workloads() -> dict[str, Trace]:
    return {
        "default": generate(SyntheticConfig()),
        "busy": generate(SyntheticConfig(load=4.0, pods=12000)),
    }


def default_policies() -> str:
    return ",".join(p for p in ("fgd", "tessellate") if p in POLICIES)


def row(name: str, policy: str, mode: str, result: TimedResult, seconds: float) -> list[str]:
    solved = [s for s in result.batch_solves if s.solved]
    times = np.array([s.solve_s for s in solved])
    solve = "-"
    if solved:
        p50, p95 = np.percentile(times, [50, 95]) * 1e3
        solve = f"{p50:.1f} / {p95:.1f} / {times.max() * 1e3:.1f}"
    batch = result.batch is not None
    return [
        name,
        policy,
        mode,
        f"{result.gpu_hours:,.1f}",
        f"{result.delay_percentile(50):,.1f}",
        f"{result.delay_percentile(95):,.1f}",
        f"{result.never_placed:,}",
        f"{len(result.batch_solves):,}" if batch else "-",
        f"{len(solved):,}" if batch else "-",
        f"{sum(not s.fallback for s in solved):,}" if batch else "-",
        f"{sum(s.fallback for s in solved):,}" if batch else "-",
        solve,
        f"{seconds:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--policies", default=default_policies(), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--workloads", default="default,busy", help="default, busy (default: both)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-time-limit", type=float, default=0.2, metavar="SECONDS")
    args = parser.parse_args()
    options = BatchOptions(max_pods=args.batch_size, time_limit_s=args.batch_time_limit)
    wanted = [w for w in args.workloads.split(",") if w]
    policies = [p for p in args.policies.split(",") if p]
    table = Table(
        title=f"sim timed: greedy vs --batch (size {options.max_pods}, {options.time_limit_s:g} s per solve)"
    )
    columns = ("workload", "policy", "mode", "GPU-hours", "delay p50 s", "delay p95 s", "never placed")
    columns += ("batches", "solved", "improved", "fallbacks", "solve ms p50/p95/max", "wall s")
    for col in columns:
        table.add_column(col, justify="right")
    traces = workloads()
    console = Console(width=200)
    for name in wanted:
        trace = traces[name]
        for policy in policies:
            for mode, batch in (("greedy", None), ("batch", options)):
                t0 = time.perf_counter()
                result = run_timed(trace, policy, 0, batch=batch)
                seconds = time.perf_counter() - t0
                table.add_row(*row(name, policy, mode, result, seconds))
                console.print(f"{name} {policy} {mode}: {seconds:.1f} s", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
