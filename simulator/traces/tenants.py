"""A synthetic multi-tenant workload: three teams sharing an H100 pool and an A100 pool.

- `inference`: steady GPU fractions (1/4 and 1/2 of an A100), long-lived, Poisson
  arrivals; high priority.
- `training`: bursty multi-GPU jobs (2, 4 or 8 H100s) arriving in bursts every few hours,
  each burst more than the team's quota, lasting one to a few hours.
- `batch`: gangs of 4 to 8 one-GPU pods (a pod group that starts only whole, any model),
  arriving all day; lowest priority.

Two quota splits come with it (`SPLITS`, the `Queue` specs as YAML would hold them), so
that `sim compare --queues` has something to compare out of the box. Deterministic for a
given seed and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tessellate.placement import MILLI_PER_GPU, NodeSpec, Request
from tessellate.simulator.trace import PodRecord, Trace

H100, A100 = "H100-80GB", "A100-80GB"
HOUR = 3600.0
INFERENCE_LOAD = 0.5
"""Mean share of the A100 pool inference fractions hold."""
TRAINING_BURST = 1.0
"""GPUs one training burst asks for, as a share of the H100 pool."""
BATCH_LOAD = 0.45
"""Mean share of all GPUs batch gangs hold."""


@dataclass(frozen=True)
class TenantConfig:
    """Size and length of the workload; `scale` 1.0 = 8 H100 + 8 A100 nodes of 8 GPUs, 24 h."""

    seed: int = 0
    scale: float = 1.0
    hours: float = 24.0

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 50:
            raise ValueError(f"scale must be in (0, 50], got {self.scale}")
        if not 0 < self.hours <= 24 * 31:
            raise ValueError(f"hours must be in (0, 744], got {self.hours}")


def _nodes(per_model: int) -> tuple[NodeSpec, ...]:
    return tuple(
        NodeSpec(f"{tag}-{i:03d}", 128_000, 1 << 20, 8, model, gpu_memory_mib=80 * 1024)
        for model, tag in ((H100, "h100"), (A100, "a100"))
        for i in range(per_model)
    )


def generate_tenants(config: TenantConfig | None = None) -> Trace:
    """The three teams' pods on the two pools (module docstring)."""
    config = config or TenantConfig()
    rng = np.random.default_rng(config.seed)
    per_model = max(1, round(8 * config.scale))
    gpus = per_model * 8
    span = config.hours * HOUR
    pods: list[PodRecord] = []

    # inference: INFERENCE_LOAD of the A100 pool busy on average, fractions held for 2-8 h
    life = rng.uniform(2, 8, 10_000) * HOUR
    milli = rng.choice([250, 500], 10_000, p=[0.6, 0.4])
    rate = INFERENCE_LOAD * gpus * MILLI_PER_GPU / (life.mean() * milli.mean())
    t, i = 0.0, 0
    while (t := t + rng.exponential(1 / rate)) < span:
        request = Request(2000, 8192, 1, int(milli[i % 10_000]), (A100,))
        pods.append(
            PodRecord(f"inf-{i:05d}", request, round(t, 3), round(t + life[i % 10_000], 3), "inference", 100)
        )
        i += 1

    # training: a burst every 3-6 h of jobs asking TRAINING_BURST of the H100 pool together
    t, i = rng.uniform(0, 2) * HOUR, 0
    while t < span:
        asked = 0
        while asked < TRAINING_BURST * gpus:
            size = int(rng.choice([2, 4, 8], p=[0.3, 0.4, 0.3]))
            start = t + rng.uniform(0, 600)
            end = start + rng.uniform(1, 3) * HOUR
            request = Request(8000 * size, 65536 * size, size, MILLI_PER_GPU, (H100,))
            pods.append(PodRecord(f"train-{i:05d}", request, round(start, 3), round(end, 3), "training", 50))
            asked += size
            i += 1
        t += rng.uniform(3, 6) * HOUR

    # batch: gangs of 4-8 one-GPU pods, any model, BATCH_LOAD of all GPUs on average
    life_g = rng.uniform(0.5, 1.5, 10_000) * HOUR
    size_g = rng.integers(4, 9, 10_000)
    rate = BATCH_LOAD * 2 * gpus / (life_g.mean() * size_g.mean())
    t, g = 0.0, 0
    while (t := t + rng.exponential(1 / rate)) < span:
        size = int(size_g[g % 10_000])
        end = t + life_g[g % 10_000]
        for k in range(size):
            request = Request(4000, 32768, 1, MILLI_PER_GPU)
            name = f"batch-{g:04d}-{k}"
            pods.append(
                PodRecord(name, request, round(t, 3), round(end, 3), "batch", 0, f"gang-{g:04d}", size)
            )
        g += 1

    pods.sort(key=lambda p: (p.creation_time, p.name))
    name = "synthetic-tenants" + ("" if (config.seed, config.scale, config.hours) == (0, 1.0, 24.0) else
                                  f"-s{config.seed}-x{config.scale:g}-h{config.hours:g}")  # fmt: skip
    return Trace(name=name, nodes=_nodes(per_model), pods=tuple(pods))


def split(name: str, scale: float = 1.0) -> list[dict]:
    """One of `SPLITS` as Queue specs (the `--queues` YAML's content), quotas scaled to the cluster."""
    per_model = max(1, round(8 * scale))
    gpus = per_model * 8
    shares = SPLITS[name]
    queues = []
    for team, entries in shares.items():
        resources = []
        for model, quota, limit, weight in entries:
            r: dict[str, object] = {
                "gpuModel": model,
                "quota": round(quota * gpus),
                "overQuotaWeight": weight,
            }
            if limit is not None:
                r["limit"] = round(limit * gpus)
            resources.append(r)
        queues.append({"name": team, "spec": {"resources": resources}})
    return queues


SPLITS: dict[str, dict[str, list[tuple[str, float, float | None, int]]]] = {
    # (model, quota as a share of that pool, limit as a share or None, overQuotaWeight)
    "even": {
        "inference": [(A100, 0.5, None, 1), (H100, 0.0, None, 1)],
        "training": [(H100, 0.5, None, 1), (A100, 0.0, None, 1)],
        "batch": [("*", 0.25, None, 1)],
    },
    "training-first": {
        "inference": [(A100, 0.4, None, 1), (H100, 0.0, 0.0, 1)],
        "training": [(H100, 0.75, None, 3), (A100, 0.0, None, 1)],
        "batch": [(H100, 0.25, 0.5, 1), (A100, 0.25, None, 1)],
    },
}
"""Two quota splits of the multi-tenant workload (shares of each 8-GPU-node pool)."""
