#!/usr/bin/env python3
"""Topology-aware vs topology-blind placement on clusters whose GPU wiring is known.

For each scenario of simulator/scenarios.py (a mixed DGX-1 / PCIe-bridged /
PCIe-only / NVSwitch cluster, and the spot-gpu-2026 NVSwitch nodes), runs the
FGD inflation protocol (tune 1.3) over seeds with these variants:

  blind          FGD on the same nodes with their topology hidden: first free GPUs
  fgd            FGD; inside the chosen node the best-connected free GPU set
  topo-rel w     as fgd, and node scores blend in the topology score relative to
                 the node's own shape (policy fgd-topo-relative) with weight w
  fgd-topo w     as fgd, and node scores blend in the absolute topology score:
                 bottleneck GB/s over the cluster's best for k GPUs (policy fgd-topo)

and prints, as means over seeds: the GPU allocation ratio at the end (what
topology awareness costs in packing), the share of multi-GPU pods whose GPUs
are as well connected as their node allows, the mean ratio to that best, and
the mean bottleneck bandwidth the multi-GPU pods get (GB/s, weighted by GPUs),
the first and the last with their standard deviation over seeds; then, per
scenario, where the multi-GPU pods' GPUs are (% per node kind).

    .venv/bin/python benchmarks/topology_placement.py [--seeds 42-51] [--scenarios mixed-topology]
        [--weights 0.25,0.5,0.75] [--relative-weights 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections import Counter

from rich.console import Console
from rich.table import Table
from tessellate.placement.policies.base import POLICIES, Policy, PolicyContext, register
from tessellate.placement.state import ClusterState
from tessellate.simulator.interconnect import interconnect_quality
from tessellate.simulator.replay import run_inflation
from tessellate.simulator.scenarios import SCENARIOS, scenario_trace
from tessellate.simulator.trace import Trace

from tessellate.cli import parse_seeds


def parse_weights(text: str) -> list[float]:
    weights = [float(w) for w in text.split(",") if w.strip()] if text else []
    for w in weights:
        if not 0.0 <= w <= 1.0:
            raise argparse.ArgumentTypeError(f"weights must be in 0..1, got {w}")
    return weights


def weighted(policy: str, weight: float) -> str:
    """A registered copy of `policy` whose context carries `weight` as its topology weight
    (the replay builds the context itself, with the default weight)."""
    name = f"{policy}@{weight:g}"
    if name not in POLICIES:
        base = POLICIES[policy]

        def __init__(self: Policy, context: PolicyContext) -> None:
            base.__init__(self, dataclasses.replace(context, topology_weight=weight))

        register(type(base.__name__ + "Weighted", (base,), {"name": name, "__init__": __init__}))
    return name


def kind_shares(state: ClusterState, wiring: dict) -> Counter:
    """GPUs held by multi-GPU whole-GPU pods, per node kind (topology name)."""
    held: Counter = Counter()
    for a in state.live.values():
        if len(a.gpus) >= 2 and not a.request.is_fraction:
            held[wiring[a.node_name].kind] += len(a.gpus)
    return held


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("42-51"))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--scenario-seed", type=int, default=1, help="seed of the cluster and pod mix")
    parser.add_argument(
        "--weights", type=parse_weights, default=[0.5], help="fgd-topo topology weights, e.g. 0.25,0.5,0.75"
    )
    parser.add_argument(
        "--relative-weights",
        type=parse_weights,
        default=[0.5],
        help="fgd-topo-relative topology weights (empty: leave the variant out)",
    )
    args = parser.parse_args()
    variants = [("blind", "fgd", False), ("fgd", "fgd", True)]
    variants += [(f"topo-rel {w:g}", weighted("fgd-topo-relative", w), True) for w in args.relative_weights]
    variants += [(f"fgd-topo {w:g}", weighted("fgd-topo", w), True) for w in args.weights]
    console = Console(width=130)
    table = Table(
        title=f"topology-aware placement, FGD protocol tune 1.3, seeds {args.seeds[0]}..{args.seeds[-1]}"
    )
    columns = ["scenario", "variant", "alloc %", "multi-GPU pods", "on best set %", "ratio to best"]
    columns += ["bottleneck GB/s", "s/run"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("scenario", "variant") else "right")
    shares: list[tuple[str, str, Counter]] = []
    for name in args.scenarios.split(","):
        trace = scenario_trace(name, seed=args.scenario_seed)
        wiring = {n.name: n.topology for n in trace.nodes}
        hidden = Trace(
            trace.name, tuple(dataclasses.replace(n, topology=None) for n in trace.nodes), trace.pods
        )
        for label, policy, with_topology in variants:
            rows = []
            kinds: Counter = Counter()
            for seed in args.seeds:
                start = time.perf_counter()
                result = run_inflation(trace if with_topology else hidden, policy, seed, 1.3)
                quality = interconnect_quality(result.state, wiring)
                alloc = result.state.allocated_gpu_milli / result.state.total_gpu_milli
                kinds += kind_shares(result.state, wiring)
                rows.append((alloc, quality, time.perf_counter() - start))
            mean = statistics.fmean

            def spread(values) -> float:
                values = list(values)
                return statistics.stdev(values) if len(values) > 1 else 0.0

            shares.append((name, label, kinds))
            gbps = [r[1].mean_bandwidth for r in rows]
            table.add_row(
                name,
                label,
                f"{100 * mean(r[0] for r in rows):.2f} ± {100 * spread(r[0] for r in rows):.2f}",
                f"{mean(r[1].multi_gpu_pods for r in rows):.0f}",
                f"{100 * mean(r[1].share_on_best for r in rows):.1f}",
                f"{mean(r[1].mean_ratio for r in rows):.3f}",
                f"{mean(gbps):.0f} ± {spread(gbps):.0f}",
                f"{mean(r[2] for r in rows):.2f}",
            )
    console.print(table)
    for name in args.scenarios.split(","):
        rows = [(label, kinds) for scenario, label, kinds in shares if scenario == name]
        kinds_seen = sorted({k for _, kinds in rows for k in kinds})
        by_kind = Table(title=f"{name}: % of the multi-GPU pods' GPUs per node kind (all seeds)")
        for column in ("variant", *kinds_seen):
            by_kind.add_column(column, justify="left" if column == "variant" else "right")
        for label, kinds in rows:
            total = sum(kinds.values()) or 1
            by_kind.add_row(label, *(f"{100 * kinds[k] / total:.1f}" for k in kinds_seen))
        console.print(by_kind)


if __name__ == "__main__":
    main()
