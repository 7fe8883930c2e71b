#!/usr/bin/env python3
"""Simulator speed: one run of the openb default trace per policy (tune 1.3, seed 42).

Prints wall time per run and pods placed per second for each policy, and the
ratio of each policy's time to the cheapest deterministic one (BestFit) measured
in the same process. Target (issue 2): FGD at most 5 s on a 2-core machine.

    python benchmarks/sim_speed.py [--repeat 3] [--policies fgd,bestfit]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tessellate.placement import PAPER_POLICIES
from tessellate.simulator.replay import run_inflation
from tessellate.simulator.traces.openb import load_trace

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb-2023"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per policy; the median is reported")
    parser.add_argument("--policies", default=",".join(PAPER_POLICIES))
    args = parser.parse_args()
    start = time.perf_counter()
    trace = load_trace(TRACES / "openb_node_list_gpu_node.csv", TRACES / "openb_pod_list_default.csv")
    load_seconds = time.perf_counter() - start
    policies = args.policies.split(",")
    if "bestfit" not in policies:
        policies.append("bestfit")
    times: dict[str, float] = {}
    pods: dict[str, int] = {}
    placed: dict[str, int] = {}
    for policy in policies:
        samples = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = run_inflation(trace, policy, 42, 1.3)
            samples.append(time.perf_counter() - t0)
        times[policy] = statistics.median(samples)
        pods[policy] = len(result.series.placed)
        placed[policy] = int(result.series.placed.sum())
    table = Table(title=f"one run: openb default, tune 1.3, seed 42 (median of {args.repeat})")
    for col in ("policy", "seconds/run", "pods/s (all events)", "pods placed/s", "time vs bestfit"):
        table.add_column(col, justify="right")
    for policy in policies:
        t = times[policy]
        table.add_row(
            policy,
            f"{t:.2f}",
            f"{pods[policy] / t:,.0f}",
            f"{placed[policy] / t:,.0f}",
            f"{t / times['bestfit']:.2f}",
        )
    console = Console(width=120)
    console.print(table)
    console.print(f"trace load: {load_seconds:.2f} s; {pods['bestfit']} pod events per run")


if __name__ == "__main__":
    main()
