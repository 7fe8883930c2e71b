"""A seeded synthetic workload that mimics the Alibaba openb 2023 mix.

The project ships no trace data. These parameters are summary figures measured
from the openb default trace and GPU node list (`scripts/measure_openb_mix.py`
prints them): node shapes and counts, the share of CPU-only / fractional /
whole-GPU pods, GPU counts, fraction sizes, and the most common CPU and memory
requests per class. Times are synthetic: Poisson arrivals and log-normal
lifetimes chosen so that a timed replay keeps the cluster busy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement import NodeSpec, Request
from simulator.trace import PodRecord, Trace

NODE_SHAPES = (  # (model, GPUs, milli-CPU, MiB, count) of the openb GPU node list
    ("A10", 1, 128000, 1048576, 2),
    ("G2", 8, 96000, 393216, 549),
    ("G3", 8, 128000, 786432, 39),
    ("P100", 1, 8000, 61440, 3),
    ("P100", 2, 8000, 61440, 2),
    ("P100", 2, 16000, 122880, 107),
    ("P100", 2, 64000, 262144, 22),
    ("T4", 2, 104000, 524288, 387),
    ("T4", 4, 96000, 393216, 17),
    ("V100M16", 1, 8000, 32768, 19),
    ("V100M16", 4, 32000, 131072, 28),
    ("V100M16", 8, 64000, 262144, 7),
    ("V100M16", 8, 82000, 344064, 1),
    ("V100M32", 4, 48000, 376832, 9),
    ("V100M32", 8, 96000, 786432, 21),
)
CLASS_COUNTS = {"cpu_only": 1088, "fraction": 3078, "whole": 3986}
WHOLE_GPU_COUNTS = {1: 3911, 2: 16, 4: 15, 8: 44}
FRACTION_MILLI = {
    50: 7, 110: 24, 140: 1, 160: 74, 220: 62, 230: 140, 270: 4, 290: 1, 320: 328, 330: 7,
    350: 6, 370: 47, 440: 2, 460: 128, 470: 750, 480: 19, 550: 72, 590: 75, 650: 253, 810: 1078,
}  # fmt: skip
CPU_MEMORY = {  # the most common (milli-CPU, MiB) requests per class, with their counts
    "cpu_only": ((12500, 57344, 364), (32000, 49152, 284), (8000, 30517, 163), (15400, 51200, 120),
                 (16500, 51200, 95), (8000, 15625, 11)),
    "fraction": ((3152, 5600, 1122), (11908, 47104, 625), (8000, 30517, 486), (4000, 22888, 189),
                 (4000, 15258, 182), (4152, 10600, 152), (4000, 30517, 136), (6000, 6144, 51)),
    1: ((11300, 49152, 857), (11400, 48128, 534), (3152, 5600, 470), (18708, 64512, 255),
        (9810, 41560, 195), (12000, 24576, 158), (15700, 58368, 158), (11908, 47104, 153),
        (16000, 32768, 108), (4000, 24576, 104), (8000, 16384, 104), (12000, 16384, 99)),
    2: ((16200, 66560, 7), (6000, 65536, 3), (30200, 160768, 3), (17400, 43008, 2)),
    4: ((32200, 132096, 9), (32000, 131072, 3), (60200, 320512, 3)),
    8: ((64200, 263168, 18), (88000, 327680, 18), (64000, 262144, 3)),
}  # fmt: skip
OPENB_PODS = 8152


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of a synthetic workload; `scale` shrinks nodes and pods together."""

    seed: int = 0
    scale: float = 1.0
    pods: int | None = None
    """Pod count (default: the openb default trace's 8152, times `scale`)."""
    load: float = 0.9
    """Mean GPU demand of running pods as a share of capacity, for the timed replay."""
    median_lifetime_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 100:
            raise ValueError(f"scale must be in (0, 100], got {self.scale}")
        if self.pods is not None and self.pods < 1:
            raise ValueError("pods must be at least 1")
        if self.load <= 0:
            raise ValueError("load must be positive")


def _weighted(rng: np.random.Generator, table: dict, size: int) -> np.ndarray:
    keys = list(table)
    weights = np.array([table[k] for k in keys], dtype=float)
    return np.array(keys)[rng.choice(len(keys), size=size, p=weights / weights.sum())]


def _nodes(scale: float) -> tuple[NodeSpec, ...]:
    nodes = []
    for model, gpus, cpu, mem, count in NODE_SHAPES:
        for _ in range(max(1, round(count * scale))):
            nodes.append(NodeSpec(f"syn-node-{len(nodes):04d}", cpu, mem, gpus, model))
    return tuple(nodes)


def generate(config: SyntheticConfig = SyntheticConfig()) -> Trace:
    """A trace named `synthetic-openb` (plus the seed and scale when not the defaults)."""
    rng = np.random.default_rng(config.seed)
    nodes = _nodes(config.scale)
    count = config.pods or max(1, round(OPENB_PODS * config.scale))
    classes = _weighted(rng, CLASS_COUNTS, count)
    whole_counts = _weighted(rng, WHOLE_GPU_COUNTS, count)
    fractions = _weighted(rng, FRACTION_MILLI, count)
    requests = []
    for i, kind in enumerate(classes):
        key = int(whole_counts[i]) if kind == "whole" else str(kind)
        choices = CPU_MEMORY[key]
        cpu, mem, _ = choices[rng.choice(len(choices), p=_shares(choices))]
        if kind == "cpu_only":
            requests.append(Request(cpu, mem))
        elif kind == "fraction":
            requests.append(Request(cpu, mem, gpu_count=1, gpu_milli=int(fractions[i])))
        else:
            requests.append(Request(cpu, mem, gpu_count=key, gpu_milli=1000))
    lifetimes = rng.lognormal(np.log(config.median_lifetime_s), 1.0, count)
    capacity = sum(n.gpu_count for n in nodes) * 1000
    mean_demand = np.mean([r.total_gpu_milli for r in requests])
    # Little's law: running demand = arrival rate x lifetime x demand per pod.
    rate = config.load * capacity / (lifetimes.mean() * max(mean_demand, 1.0))
    arrivals = np.cumsum(rng.exponential(1 / rate, count))
    pods = tuple(
        PodRecord(f"syn-pod-{i:05d}", r, round(float(t), 3), round(float(t + life), 3))
        for i, (r, t, life) in enumerate(zip(requests, arrivals, lifetimes, strict=True))
    )
    name = "synthetic-openb"
    if (config.seed, config.scale) != (0, 1.0):
        name += f"-s{config.seed}-x{config.scale:g}"
    return Trace(name=name, nodes=nodes, pods=pods)


def _shares(choices: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    counts = np.array([c[2] for c in choices], dtype=float)
    return counts / counts.sum()
