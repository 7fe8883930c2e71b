#!/usr/bin/env python3
"""Timed replay speed (`tessellate sim timed`): wall time per run, median of `--repeat`.

Workloads: the built-in synthetic openb-like one (what `sim timed` runs by default) and
the real openb default trace, where nothing waits (the cost of arrivals); "busy", the
synthetic generator with 12000 pods at load 4, where thousands of pods wait (the cost
of the retry passes); and "busy-bounded", the same on a cluster where a quarter of the
nodes time-slice their GPUs (4 replicas), every GPU knows its memory (16 GiB) and half
the fractions bound theirs (the queue's time-slice and GPU-memory paths). Compare two
trees by running this file with PYTHONPATH pointing at each.

    python benchmarks/timed_speed.py [--repeat 3] [--policies fgd,bestfit]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tessellate.placement import MILLI_PER_GPU, Request
from tessellate.simulator.timed import run_timed
from tessellate.simulator.trace import PodRecord, Trace
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb-2023"
GPU_MEMORY_MIB = 16384


def bounded(trace: Trace) -> Trace:
    """`trace` with time-sliced nodes, known GPU memory and memory-bounded fractions."""
    nodes = tuple(
        replace(n, gpu_memory_mib=GPU_MEMORY_MIB, gpu_replicas=4 if i % 4 == 0 else 1) if n.gpu_count else n
        for i, n in enumerate(trace.nodes)
    )
    pods = []
    for i, p in enumerate(trace.pods):
        r = p.request
        if r.is_fraction and i % 2:
            mib = GPU_MEMORY_MIB * r.gpu_milli // MILLI_PER_GPU + 512 * (i % 3)
            r = Request(r.cpu_milli, r.memory_mib, 1, r.gpu_milli, r.gpu_models, gpu_memory_mib=mib)
        pods.append(PodRecord(p.name, r, p.creation_time, p.deletion_time))
    return Trace(f"{trace.name}-bounded", nodes, tuple(pods))


def workloads(traces: Path) -> dict[str, Trace]:
    from tessellate.simulator.traces.openb import load_trace

    busy = generate(SyntheticConfig(load=4.0, pods=12000))
    return {
        "synthetic": generate(SyntheticConfig()),
        "openb-default": load_trace(
            traces / "openb_node_list_gpu_node.csv", traces / "openb_pod_list_default.csv"
        ),
        "busy": busy,
        "busy-bounded": bounded(busy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported")
    parser.add_argument("--policies", default="fgd,bestfit")
    parser.add_argument("--traces", type=Path, default=TRACES, help="the openb-2023 folder")
    parser.add_argument("--workloads", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    wanted = set(filter(None, args.workloads.split(",")))
    table = Table(title=f"run_timed, seed 0 (median of {args.repeat})")
    for col in ("workload", "policy", "seconds/run", "placed", "after wait", "retry attempts"):
        table.add_column(col, justify="right")
    for name, trace in workloads(args.traces).items():
        if wanted and name not in wanted:
            continue
        for policy in args.policies.split(","):
            samples = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = run_timed(trace, policy, 0)
                samples.append(time.perf_counter() - t0)
            table.add_row(
                name,
                policy,
                f"{statistics.median(samples):.2f}",
                f"{result.placed}",
                f"{result.placed_after_wait}",
                f"{result.retry_attempts}",
            )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
