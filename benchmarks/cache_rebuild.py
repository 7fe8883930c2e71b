#!/usr/bin/env python3
"""What the hardened inventory reading and the all-or-nothing rebuild cost.

A rebuild (`ClusterCache.ensure_built`) reads every node as the scheduler does and charges
every bound pod; it runs on start, on a leader change and whenever the node set changes.
With `--bad N`, that many nodes carry an inventory that must be quarantined (a GPU listed
twice in `tessellate.dev/gpu-devices`, 99999999999 GPUs, an unparsable quantity): the
figures say whether one bad node makes a rebuild cost more than a clean one. The
baseline, in the same process, is the rebuild of the same cluster with no bad node.

    python benchmarks/cache_rebuild.py [--nodes 1000,5000] [--bad 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from typing import Any

from cache_objects import gpu_node, gpu_pod
from rich.console import Console
from rich.table import Table
from tessellate.scheduler.cache import ClusterCache
from tessellate.scheduler.nodes import node_info

from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.devices import DEVICES


def bad_node(name: str, kind: int) -> dict[str, Any]:
    node = gpu_node(name)
    if kind == 0:
        twice = {"index": 0, "health": "Unhealthy"}
        node["metadata"]["annotations"] = {DEVICES: json.dumps({"gpus": [twice, twice]})}
    elif kind == 1:
        node["status"]["allocatable"]["nvidia.com/gpu"] = "99999999999"
    else:
        node["status"]["allocatable"]["cpu"] = "lots"
    return node


def filled_cache(nodes: int, bad: int, rng: random.Random) -> ClusterCache:
    """`nodes` 8-GPU nodes (`bad` of them quarantined), a third of the GPUs held by bound pods."""
    cache = ClusterCache("fgd", seed=1)
    for i in range(nodes):
        name = f"n{i:05d}"
        cache.upsert_node(bad_node(name, i % 3) if i < bad else gpu_node(name))
    for i in range(nodes * 8 // 3 // 2):
        pod = gpu_pod(f"busy-{i}", rng.choice([1, 2]))
        rec, _ = cache.upsert_pod(pod)
        assert rec is not None
        placed = cache.decide(rec)
        if hasattr(placed, "annotation"):
            pod["spec"]["nodeName"] = placed.node
            pod["metadata"]["annotations"] = {ASSIGNMENT: placed.annotation.encode()}
            cache.upsert_pod(pod)
    return cache


def rebuild_ms(cache: ClusterCache, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        cache.invalidate()
        started = time.perf_counter()
        assert cache.ensure_built()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def node_read_us(objects: list[dict[str, Any]], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        for obj in objects:
            node_info(obj)
    return (time.perf_counter() - started) / (repeat * len(objects)) * 1e6


def main() -> None:
    logging.disable(logging.WARNING)  # the bad nodes' warnings are the point, not the output
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1000,5000", help="cluster sizes, comma-separated")
    parser.add_argument("--bad", type=int, default=10, help="quarantined nodes in the second cluster")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    table = Table(title=f"cache rebuild, 8-GPU nodes, a third of the GPUs bound (median of {args.repeat})")
    for column in ("nodes", "bound pods", "rebuild ms", f"with {args.bad} bad ms", "ratio", "node read µs"):
        table.add_column(column, justify="right")
    for size in (int(n) for n in args.nodes.split(",")):
        clean = filled_cache(size, 0, random.Random(1))
        dirty = filled_cache(size, args.bad, random.Random(1))
        assert int(dirty.quarantined.sum()) == args.bad
        base, bad = rebuild_ms(clean, args.repeat), rebuild_ms(dirty, args.repeat)
        objects = [gpu_node(f"n{i}") for i in range(200)] + [bad_node(f"b{i}", i % 3) for i in range(20)]
        table.add_row(
            str(size),
            str(len(clean.pods)),
            f"{base:.1f}",
            f"{bad:.1f}",
            f"{bad / base:.2f}",
            f"{node_read_us(objects, args.repeat):.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
