#!/usr/bin/env python3
"""Overhead of Ray against the local process pool on one sweep grid (same rows, checked).

Runs the same cells twice, `simulator.sweep.run_local` (process pool) and
`simulator.rayrun.run_on_ray` (a Ray instance started here, `--ray local`, or a
cluster address), with the same number of workers, checks that the tables agree
and prints both wall times and the ratio Ray / pool. Ray's start-up is inside
its wall time (that is what a user waits for), and also printed on its own.

    python benchmarks/sweep_ray.py                       # small synthetic grid, 24 runs
    python benchmarks/sweep_ray.py --repro --seeds 42    # the reproduction grid's traces, 1 seed
    python benchmarks/sweep_ray.py --repro               # the 780-run reproduction grid
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from tessellate.placement import PAPER_POLICIES
from tessellate.simulator.experiment import TraceSource
from tessellate.simulator.sweep import grid, run_local

from tessellate.cli import parse_seeds

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EXPECTED = SHARED / "reference" / "fgd-expected"
TRACES = SHARED / "traces" / "openb-2023"


def repro_sources() -> list[TraceSource]:
    """The traces of benchmarks/fgd_reproduction.py (13 openb pod lists on the openb cluster)."""
    workloads = sorted(pd.read_csv(EXPECTED / "summary.csv").workload.unique())
    nodes = str(TRACES / "openb_node_list_gpu_node.csv")
    return [TraceSource(nodes=nodes, pods=str(TRACES / f"{w}.csv")) for w in workloads]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repro", action="store_true", help="the reproduction grid's traces (needs shared/)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, help="default 42-51 (--repro) or 42-45")
    parser.add_argument("--scale", type=float, default=0.05, help="synthetic scale (default 0.05)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ray", default="local", help="local (default) or a cluster address")
    parser.add_argument(
        "--ray-first", action="store_true", help="run Ray before the pool (to see order effects)"
    )
    args = parser.parse_args()

    from tessellate.simulator.rayrun import run_on_ray

    if args.repro:
        sources, seeds = repro_sources(), args.seeds or list(range(42, 52))
    else:
        sources, seeds = [TraceSource(synthetic_scale=args.scale)], args.seeds or [42, 43, 44, 45]
    cells = grid(sources, list(PAPER_POLICIES), seeds, [1.3])
    print(f"{len(cells)} runs, {args.workers} workers")

    def pool() -> tuple[pd.DataFrame, float]:
        start = time.perf_counter()
        return pd.DataFrame(run_local(cells, args.workers)), time.perf_counter() - start

    if not args.ray_first:
        local, pool_s = pool()

    import ray

    start = time.perf_counter()
    if args.ray == "local":
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.ray, log_to_driver=False)
    startup_s = time.perf_counter() - start
    on_ray = pd.DataFrame(run_on_ray(cells, args.ray, args.workers))
    ray_s = time.perf_counter() - start
    ray.shutdown()
    if args.ray_first:
        local, pool_s = pool()

    same = local.drop(columns="seconds").equals(on_ray.drop(columns="seconds"))
    busy = local["seconds"].sum()
    print(f"simulation time summed over runs: {busy:.1f} s")
    print(f"process pool: {pool_s:.1f} s wall")
    print(f"ray ({args.ray}): {ray_s:.1f} s wall, of which {startup_s:.1f} s start-up")
    print(f"ratio ray / pool: {ray_s / pool_s:.2f} (without start-up {(ray_s - startup_s) / pool_s:.2f})")
    print(f"tables identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
