"""A synthetic inference + training mix on MIG-capable nodes (no downloaded data needed).

Inference pods ask for MIG instances of several profiles (one or two instances);
training pods ask for whole GPUs (1, 2, 4 or 8). Nodes are A100-80GB / H100-80GB
machines with MIG enabled: dynamic (instances made on demand, the default) or, for a
share of them, statically partitioned with the canonical layout mig-parted would make
for a balanced config. Arrivals are Poisson at the rate that, by Little's law, keeps
`load` of the GPU capacity busy; lifetimes are lognormal. Deterministic per config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tessellate.placement import MILLI_PER_GPU, NodeSpec, Request
from tessellate.placement.mig import MigLayout, geometry
from tessellate.placement.migplanner import plan_layout
from tessellate.placement.model import MigSpec, mig_profile_milli
from tessellate.simulator.trace import PodRecord, Trace

BALANCED = (("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1))
"""The per-GPU partition of statically partitioned nodes (like mig-parted's all-balanced)."""


@dataclass(frozen=True)
class MigMixConfig:
    seed: int = 0
    nodes: int = 16
    gpus_per_node: int = 8
    models: tuple[str, ...] = ("A100-80GB", "H100-80GB")
    pods: int = 3000
    training_share: float = 0.15
    """Share of pods that ask for whole GPUs; the rest ask for MIG instances."""
    profiles: tuple[tuple[str, float], ...] = (
        ("1g.10gb", 0.30),
        ("1g.20gb", 0.10),
        ("2g.20gb", 0.20),
        ("3g.40gb", 0.20),
        ("4g.40gb", 0.12),
        ("7g.80gb", 0.08),
    )
    two_instance_share: float = 0.1
    """Share of MIG pods asking for two instances of their profile."""
    training_gpus: tuple[tuple[int, float], ...] = ((1, 0.4), (2, 0.3), (4, 0.2), (8, 0.1))
    static_share: float = 0.0
    """Share of nodes that are statically partitioned (`BALANCED` on every GPU)."""
    load: float = 1.0
    median_lifetime_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.pods < 1:
            raise ValueError("nodes, gpus_per_node and pods must be at least 1")
        for name, share in (
            ("training_share", self.training_share),
            ("two_instance_share", self.two_instance_share),
            ("static_share", self.static_share),
        ):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {share}")
        if self.load <= 0 or self.median_lifetime_s <= 0:
            raise ValueError("load and median_lifetime_s must be positive")
        for model in self.models:
            g = geometry(model)  # raises for a model without MIG
            for profile, _ in self.profiles:
                g.profile(profile)


def _nodes(config: MigMixConfig, rng: np.random.Generator) -> tuple[NodeSpec, ...]:
    static = set(rng.permutation(config.nodes)[: round(config.static_share * config.nodes)].tolist())
    nodes = []
    for i in range(config.nodes):
        model = config.models[i % len(config.models)]
        if i in static:
            layout = plan_layout(model, dict(BALANCED))
            assert isinstance(layout, MigLayout)
            mig = MigSpec(layouts=(layout,) * config.gpus_per_node)
        else:
            mig = MigSpec(dynamic=True)
        nodes.append(NodeSpec(f"mig-node-{i:03d}", 128_000, 1_048_576, config.gpus_per_node, model, mig=mig))
    return tuple(nodes)


def _requests(config: MigMixConfig, rng: np.random.Generator) -> list[Request]:
    n = config.pods
    training = rng.random(n) < config.training_share
    names = [p for p, _ in config.profiles]
    weights = np.array([w for _, w in config.profiles], dtype=float)
    profiles = rng.choice(len(names), size=n, p=weights / weights.sum())
    two = rng.random(n) < config.two_instance_share
    sizes = [g for g, _ in config.training_gpus]
    size_w = np.array([w for _, w in config.training_gpus], dtype=float)
    gpus = rng.choice(len(sizes), size=n, p=size_w / size_w.sum())
    out = []
    for i in range(n):
        if training[i]:
            k = sizes[gpus[i]]
            out.append(
                Request(cpu_milli=8000 * k, memory_mib=65536 * k, gpu_count=k, gpu_milli=MILLI_PER_GPU)
            )
        else:
            k = 2 if two[i] else 1
            out.append(
                Request(cpu_milli=2000 * k, memory_mib=16384 * k, mig_profile=names[profiles[i]], mig_count=k)
            )
    return out


def generate_mig_mix(config: MigMixConfig | None = None) -> Trace:
    """The synthetic MIG trace for `config` (default: 16 nodes x 8 GPUs, 3000 pods)."""
    config = config or MigMixConfig()
    rng = np.random.default_rng(config.seed)
    nodes = _nodes(config, rng)
    requests = _requests(config, rng)
    lifetimes = rng.lognormal(np.log(config.median_lifetime_s), 1.0, len(requests))
    capacity = sum(n.gpu_count for n in nodes) * MILLI_PER_GPU
    mean_demand = float(np.mean([_demand(r) for r in requests]))
    rate = config.load * capacity / (lifetimes.mean() * mean_demand)
    created = np.round(np.cumsum(rng.exponential(1 / rate, len(requests))), 3)
    deleted = created + np.round(lifetimes, 3)
    pods = tuple(
        PodRecord(f"mig-pod-{i:05d}", r, float(created[i]), float(deleted[i])) for i, r in enumerate(requests)
    )
    return Trace(name=f"synthetic-mig-s{config.seed}", nodes=nodes, pods=pods)


def _demand(request: Request) -> int:
    if request.is_mig:
        return mig_profile_milli(request.mig_profile) * request.mig_count
    return request.total_gpu_milli
