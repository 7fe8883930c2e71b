#!/usr/bin/env python3
"""Where the idle GPUs are at the end of the paper's protocol, and how much of it a policy can reach.

For each trace and policy (one seed, tune 1.3), the cluster at the end of the run (130 % of
GPU capacity arrived) is split into:

- whole idle GPUs (no pod on them), and on how many nodes CPU or memory is what ran out;
- *dead holes*: the free share of a partly used GPU that at most `--rare` (default 2 %) of
  the trace's GPU pods could use (they ask that little GPU), with the shape of the pod that
  left most of them (e.g. `810 milli alone`: a 0.81-GPU pod on its own GPU);
- *CPU-starved holes*: holes more pods would fit, on nodes whose CPU left none of them fits;
- the other holes (room some arriving pod could still use).

A dead hole can only be filled by one of the few small pods, so the last column bounds
what better *pairing* could recover in this run: the GPU share of every arrival small
enough to fit the largest dead hole (counted whole, as if each filled one). Where that
is far below the dead holes, no placement of the same pods recovers them; only placing
fewer of the pods that leave them would (admission, which the protocol does not allow:
a pod that fits is placed).

    python benchmarks/idle_anatomy.py [--traces default,gpushare60] [--policies fgd,tessellate] [--seed 42]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from tessellate.placement.model import MILLI_PER_GPU
from tessellate.simulator.experiment import TraceSource
from tessellate.simulator.replay import run_inflation
from tessellate_policy import PAPER, TRACES  # the 13 paper traces, as that benchmark defines them


@dataclass(frozen=True)
class Anatomy:
    trace: str
    policy: str
    allocated: float
    """% of GPU capacity held at the end."""
    idle: float
    """idle GPUs (sum of free shares)."""
    whole_idle: int
    whole_idle_starved_nodes: int
    """nodes with a whole idle GPU whose CPU or memory cannot take the smallest GPU pod."""
    dead: float
    dead_maker: str
    dead_maker_share: float
    starved_holes: float
    """holes some pods would fit (more than `rare`) on nodes whose CPU none of them fits."""
    other_holes: float
    small_arrivals: float
    """GPU share of every arrival that fits the largest dead hole (an upper limit of pairing)."""


def anatomy(trace_name: str, policy: str, seed: int, rare: float) -> Anatomy:
    trace = TraceSource(
        nodes=str(TRACES / "openb_node_list_gpu_node.csv"),
        pods=str(TRACES / f"openb_pod_list_{trace_name}.csv"),
    ).load()
    result = run_inflation(trace, policy, seed, 1.3)
    state = result.state
    gpu_pods = [p.request for p in trace.pods if p.request.gpu_count]
    per_gpu = np.sort(np.array([r.gpu_milli for r in gpu_pods]))
    smallest_cpu = min(r.cpu_milli for r in gpu_pods)
    smallest_mem = min(r.memory_mib for r in gpu_pods)

    def share_fitting(hole: int) -> float:
        return float(np.searchsorted(per_gpu, hole, side="right")) / len(per_gpu)

    left = np.where(state.gpu_exists, state.gpu_left, 0)
    whole = left == MILLI_PER_GPU
    nodes_with_whole = whole.any(axis=1)
    starved = nodes_with_whole & ((state.cpu_left < smallest_cpu) | (state.mem_left < smallest_mem))
    holders: dict[tuple[int, int], list[int]] = {}
    for a in state.live.values():
        if a.request.is_fraction:
            for g in a.gpus:
                holders.setdefault((a.node, g), []).append(a.request.gpu_milli)
    by_milli = sorted((r.gpu_milli, r.cpu_milli) for r in gpu_pods if r.gpu_count == 1)
    milli_sorted = np.array([m for m, _ in by_milli])
    min_cpu_upto = np.minimum.accumulate(np.array([c for _, c in by_milli]))

    def cpu_starved(node: int, hole: int) -> bool:
        """No one-GPU pod small enough for the hole fits the node's CPU left."""
        k = int(np.searchsorted(milli_sorted, hole, side="right"))
        return k == 0 or state.cpu_left[node] < min_cpu_upto[k - 1]

    dead = other = starved_holes = 0
    dead_largest = 0
    makers: Counter[str] = Counter()
    for node, g in zip(*np.nonzero((left > 0) & (left < MILLI_PER_GPU)), strict=True):
        hole = int(left[node, g])
        if share_fitting(hole) <= rare:
            dead += hole
            dead_largest = max(dead_largest, hole)
            pods = sorted(holders.get((int(node), int(g)), []), reverse=True)
            makers[f"{pods[0]} milli alone" if len(pods) == 1 else "+".join(map(str, pods))] += hole
        elif cpu_starved(int(node), hole):
            starved_holes += hole
        else:
            other += hole
    tuned = len(result.series.placed) / max(1, len(trace.pods))  # arrivals per trace pod (tune copies)
    small = sum(r.gpu_milli for r in gpu_pods if r.gpu_count == 1 and r.gpu_milli <= dead_largest) * tuned
    maker, maker_milli = makers.most_common(1)[0] if makers else ("-", 0)
    total = state.gpu_exists.sum() * MILLI_PER_GPU
    return Anatomy(
        trace=trace_name,
        policy=policy,
        allocated=100 * (total - left.sum()) / total,
        idle=left.sum() / MILLI_PER_GPU,
        whole_idle=int(whole.sum()),
        whole_idle_starved_nodes=int(starved.sum()),
        dead=dead / MILLI_PER_GPU,
        dead_maker=maker,
        dead_maker_share=maker_milli / dead if dead else 0.0,
        starved_holes=starved_holes / MILLI_PER_GPU,
        other_holes=other / MILLI_PER_GPU,
        small_arrivals=small / MILLI_PER_GPU,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default="paper", help="comma-separated suffixes, or paper (the 13)")
    parser.add_argument("--policies", default="fgd,tessellate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rare", type=float, default=0.02, help="a hole is dead if at most this share of GPU pods fit it"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    traces = list(PAPER) if args.traces == "paper" else args.traces.split(",")
    jobs = [(t, p, args.seed, args.rare) for t in traces for p in args.policies.split(",")]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(anatomy, *zip(*jobs, strict=True)))
    table = Table(title=f"Idle GPUs at the end of the run (seed {args.seed}, tune 1.3)")
    for column in (
        "trace", "policy", "alloc %", "idle GPUs", "whole idle (starved nodes)", "dead holes",
        "made mostly by", "CPU-starved holes", "other holes", "small arrivals",
    ):  # fmt: skip
        table.add_column(
            column, justify="left" if column in ("trace", "policy", "made mostly by") else "right"
        )
    for r in rows:
        table.add_row(
            r.trace,
            r.policy,
            f"{r.allocated:.2f}",
            f"{r.idle:.1f}",
            f"{r.whole_idle} ({r.whole_idle_starved_nodes})",
            f"{r.dead:.1f} ({100 * r.dead / r.idle:.0f} %)" if r.idle else "0",
            f"{r.dead_maker} ({100 * r.dead_maker_share:.0f} %)",
            f"{r.starved_holes:.1f}",
            f"{r.other_holes:.1f}",
            f"{r.small_arrivals:.1f}",
        )
    console = Console(width=200)
    console.print(table)
    frame = pd.DataFrame([r.__dict__ for r in rows])
    parts = ["idle", "dead", "starved_holes", "other_holes", "whole_idle", "small_arrivals"]
    mean = frame.groupby("policy")[parts].mean()
    console.print(mean.round(1).to_string())
    console.print(f"{len(rows)} runs in {time.perf_counter() - start:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
