#!/usr/bin/env python3
"""What a pod group's all-or-nothing pass costs the scheduling loop, against deciding alone.

A group pass (`scheduler.gang.decide_group`) decides every pending member under the
cache lock and keeps them only if enough fit, so its cost is k decisions plus the
group bookkeeping, and a pass that fails also takes its decisions back. The baseline,
measured in the same process on the same cache, decides the same k pods one by one as
ungrouped pods. The cluster is the scheduler's own cache of `--nodes` 8-GPU nodes, a
third of their GPUs already busy; members ask for 8, 4 or 1 GPUs.

    python benchmarks/gang_pass.py [--nodes 1000] [--sizes 4,16,64] [--repeat 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from cache_objects import gpu_node, gpu_pod
from rich.console import Console
from rich.table import Table
from tessellate.scheduler.cache import ClusterCache
from tessellate.scheduler.gang import decide_group
from tessellate.scheduler.podrecord import PodRecord


def busy_cache(nodes: int, rng: random.Random) -> ClusterCache:
    cache = ClusterCache("fgd", seed=1)
    for i in range(nodes):
        cache.upsert_node(gpu_node(f"n{i:05d}"))
    for i in range(nodes * 8 // 3 // 2):  # a third of the GPUs, in 1- and 2-GPU pods
        rec, _ = cache.upsert_pod(gpu_pod(f"busy-{i}", rng.choice([1, 2])))
        assert rec is not None
        cache.decide(rec)
    return cache


def member_sizes(k: int, rng: random.Random) -> list[int]:
    return [rng.choice([8, 4, 4, 1]) for _ in range(k)]


def timed(run: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def unbound(rec: PodRecord) -> bool:
    return not rec.node_name


def group_pass(cache: ClusterCache, head: PodRecord, placed: int) -> None:
    """One pass over head's group; `placed` members are expected to be kept (then given back)."""
    assert head.group is not None
    decision = decide_group(cache, head.group, unbound)
    assert len(decision.placed) == placed, decision.failed
    for p in decision.placed:
        cache.forget(p.uid)


def lone_decisions(cache: ClusterCache, recs: list[PodRecord]) -> None:
    for rec in recs:
        cache.decide(rec)
    for rec in recs:
        cache.forget(rec.uid)


def add(cache: ClusterCache, prefix: str, sizes: list[int], group: tuple[str, int] | None) -> list[PodRecord]:
    recs = [cache.upsert_pod(gpu_pod(f"{prefix}-{i}", size, group=group))[0] for i, size in enumerate(sizes)]
    return [rec for rec in recs if rec is not None]


def measure(cache: ClusterCache, k: int, repeat: int, rng: random.Random) -> tuple[float, float, float]:
    """Median seconds for a placed group pass, a failing one, and k lone decisions."""
    placed, failing, alone = [], [], []
    for r in range(repeat):
        sizes = member_sizes(k, rng)
        group = add(cache, f"g{k}-{r}", sizes, (f"g{k}-{r}", k))
        lone = add(cache, f"l{k}-{r}", sizes, None)
        # The same members plus one that fits nowhere (16 GPUs): all k are decided, then taken back.
        doomed = add(cache, f"d{k}-{r}", [*sizes, 16], (f"d{k}-{r}", k + 1))
        placed.append(timed(group_pass, cache, group[0], k))
        alone.append(timed(lone_decisions, cache, lone))
        failing.append(timed(group_pass, cache, doomed[0], 0))
        for rec in [*group, *lone, *doomed]:
            cache.delete_pod(rec.uid)
    return statistics.median(placed), statistics.median(failing), statistics.median(alone)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000, help="8-GPU nodes in the cache (default 1000)")
    parser.add_argument("--sizes", default="4,16,64", help="group sizes to measure (default 4,16,64)")
    parser.add_argument("--repeat", type=int, default=20, help="passes per size, medians shown (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cache = busy_cache(args.nodes, rng)
    title = f"pod-group pass vs lone decisions, {args.nodes} x 8-GPU nodes (median of {args.repeat})"
    table = Table(title=title)
    for column in ("members", "group pass ms", "lone decisions ms", "pass / lone", "failing pass ms"):
        table.add_column(column, justify="right")
    for k in (int(x) for x in args.sizes.split(",")):
        placed, failing, alone = measure(cache, k, args.repeat, rng)
        ms = [f"{x * 1e3:.2f}" for x in (placed, alone)]
        table.add_row(str(k), *ms, f"{placed / alone:.2f}", f"{failing * 1e3:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
