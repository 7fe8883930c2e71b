#!/usr/bin/env python3
"""Topology-aware vs topology-blind placement on clusters whose GPU wiring is known.

For each scenario of simulator/scenarios.py (a mixed DGX-1 / PCIe-bridged /
PCIe-only / NVSwitch cluster, and the spot-gpu-2026 NVSwitch nodes), runs the
FGD inflation protocol (tune 1.3) over seeds with three variants:

  blind     FGD on the same nodes with their topology hidden: first free GPUs
  fgd       FGD; inside the chosen node the best-connected free GPU set
  fgd-topo  as fgd, and node scores blend in topology fitness (weight 0.5)

and prints, as means over seeds: the GPU allocation ratio at the end (what
topology awareness costs in packing), the share of multi-GPU pods whose GPUs
are as well connected as their node allows, the mean ratio to that best, and
the mean bottleneck bandwidth the multi-GPU pods get (GB/s, weighted by GPUs).

    .venv/bin/python benchmarks/topology_placement.py [--seeds 42-51] [--scenarios mixed-topology]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from rich.console import Console
from rich.table import Table

from simulator.interconnect import interconnect_quality
from simulator.replay import run_inflation
from simulator.scenarios import SCENARIOS, scenario_trace
from simulator.trace import Trace
from tessellate.cli import parse_seeds

VARIANTS = (("blind", "fgd", False), ("fgd", "fgd", True), ("fgd-topo", "fgd-topo", True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("42-51"))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--scenario-seed", type=int, default=1, help="seed of the cluster and pod mix")
    args = parser.parse_args()
    console = Console(width=130)
    table = Table(
        title=f"topology-aware placement, FGD protocol tune 1.3, seeds {args.seeds[0]}..{args.seeds[-1]}"
    )
    for column in (
        "scenario",
        "variant",
        "alloc %",
        "multi-GPU pods",
        "on best set %",
        "ratio to best",
        "bottleneck GB/s",
        "s/run",
    ):
        table.add_column(column, justify="right" if column not in ("scenario", "variant") else "left")
    for name in args.scenarios.split(","):
        trace = scenario_trace(name, seed=args.scenario_seed)
        wiring = {n.name: n.topology for n in trace.nodes}
        hidden = Trace(
            trace.name, tuple(dataclasses.replace(n, topology=None) for n in trace.nodes), trace.pods
        )
        for label, policy, with_topology in VARIANTS:
            rows = []
            for seed in args.seeds:
                start = time.perf_counter()
                result = run_inflation(trace if with_topology else hidden, policy, seed, 1.3)
                quality = interconnect_quality(result.state, wiring)
                alloc = result.state.allocated_gpu_milli / result.state.total_gpu_milli
                rows.append((alloc, quality, time.perf_counter() - start))
            mean = statistics.fmean
            table.add_row(
                name,
                label,
                f"{100 * mean(r[0] for r in rows):.2f}",
                f"{mean(r[1].multi_gpu_pods for r in rows):.0f}",
                f"{100 * mean(r[1].share_on_best for r in rows):.1f}",
                f"{mean(r[1].mean_ratio for r in rows):.3f}",
                f"{mean(r[1].mean_bandwidth for r in rows):.0f}",
                f"{mean(r[2] for r in rows):.2f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
