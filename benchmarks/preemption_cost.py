#!/usr/bin/env python3
"""What choosing preemption victims costs, on a full cluster, against an ordinary decision.

The cluster is the scheduler's own cache of `--nodes` 8-GPU nodes, every GPU held by
low-priority pods of 1, 2 or 4 GPUs (mixed priorities 0..9). A high-priority pod asking for
`--gpus` GPUs fits nowhere, so each search runs the what-if on every node it examines
(up to `MAX_CANDIDATES` that work), with the reprieve step, and restores the state. The
baseline, in the same process, is one ordinary decision for a pod that fits (after one
node is emptied for it, then refilled).

    python benchmarks/preemption_cost.py [--nodes 1000] [--gpus 4] [--searches 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from cache_objects import gpu_node, gpu_pod
from rich.console import Console
from rich.table import Table
from tessellate.placement import Unschedulable
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.preemption import MAX_CANDIDATES, find_preemption

from tessellate.wire.assignment import ASSIGNMENT


def run(cache: ClusterCache, p: dict) -> PodRecord | None:
    """Decide and bind `p` (as the API server would report it); None if it did not fit."""
    rec, _ = cache.upsert_pod(p)
    assert rec is not None
    placed = cache.decide(rec)
    if not isinstance(placed, Placed):
        cache.delete_pod(rec.uid)
        return None
    p["spec"]["nodeName"] = placed.node
    p["metadata"]["annotations"] = {ASSIGNMENT: placed.annotation.encode()}
    bound, _ = cache.upsert_pod(p)
    return bound


def full_cache(nodes: int, rng: random.Random) -> ClusterCache:
    cache = ClusterCache("bestfit", seed=1)
    for i in range(nodes):
        cache.upsert_node(gpu_node(f"n{i:05d}"))
    k = misses = 0
    while misses < 50:  # mixed sizes until the cluster is nearly full
        if run(cache, gpu_pod(f"low-{k}", rng.choice([1, 2, 4]), rng.randrange(10))) is None:
            misses += 1
        k += 1
    while run(cache, gpu_pod(f"low-{k}", 1, rng.randrange(10))) is not None:  # then every last GPU
        k += 1
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000, help="8-GPU nodes, all full (default 1000)")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs the urgent pod asks for (default 4)")
    parser.add_argument("--searches", type=int, default=50, help="searches timed (default 50)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    cache = full_cache(args.nodes, rng)
    took = time.perf_counter() - started
    print(f"filled {args.nodes} nodes with {len(cache.pods)} low-priority pods in {took:.1f} s")
    urgent, _ = cache.upsert_pod(gpu_pod("urgent", args.gpus, 100))
    assert urgent is not None and isinstance(cache.decide(urgent), Unschedulable)

    searches, victims = [], []
    for _ in range(args.searches):
        t0 = time.perf_counter()
        found = find_preemption(cache, urgent)
        searches.append(time.perf_counter() - t0)
        assert found is not None
        victims.append(len(found.victims))

    # Baseline: an ordinary decision for a pod that fits, on the same cache.
    emptied = [rec for rec in list(cache.pods.values()) if rec.node_name == "n00000"]
    for rec in emptied:
        cache.delete_pod(rec.uid)
    decisions = []
    for i in range(args.searches):
        rec, _ = cache.upsert_pod(gpu_pod(f"fits-{i}", args.gpus, 100))
        assert rec is not None
        t0 = time.perf_counter()
        placed = cache.decide(rec)
        decisions.append(time.perf_counter() - t0)
        assert isinstance(placed, Placed)
        cache.delete_pod(rec.uid)

    def ms(values: list[float], q: float) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3:.2f}"

    table = Table(title=f"victim search at {args.nodes} full 8-GPU nodes, urgent pod of {args.gpus} GPUs")
    for column in ("", "p50 ms", "p99 ms", "vs ordinary decision (p50)"):
        table.add_column(column, justify="right")
    table.add_row("ordinary decision", ms(decisions, 0.5), ms(decisions, 0.99), "1.0")
    ratio = statistics.median(searches) / statistics.median(decisions)
    table.add_row(
        f"victim search (<= {MAX_CANDIDATES} nodes)", ms(searches, 0.5), ms(searches, 0.99), f"{ratio:.1f}"
    )
    Console().print(table)
    print(f"victims chosen: {statistics.median(victims):.0f} (median)")


if __name__ == "__main__":
    main()
