"""Seeded synthetic workloads, so the simulator runs without any downloaded trace.

The default mix imitates the Alibaba openb 2023 default trace (Weng et al.,
USENIX ATC'23). No trace rows are shipped: `OPENB_2023` holds only summary
parameters (node shapes, class shares, GPU counts, a histogram of fraction
sizes, common CPU/memory pairs, time percentiles), measured by
`scripts/measure_openb_mix.py`, which a test re-runs against the real files.

What is drawn and what is fixed, and why:

* Node counts per shape, pod counts per class and per whole-GPU count are
  apportioned (largest remainder), not sampled, so a small `scale` keeps the
  trace's mix and GPU-demand ratio (~0.98 of capacity) instead of drifting
  with the seed. The default pod count follows the cluster's GPU count, not
  its node count, for the same reason.
* Fraction sizes, CPU/memory pairs, model constraints, arrival times and
  lifetimes are drawn from numpy's `Generator(PCG64(seed))`; the same seed
  always gives the same trace.
* CPU/memory pairs (and model constraints) that no node of the generated
  cluster could host are excluded before drawing, so every pod fits at least
  one node even when a small scale drops the rare big node shapes.
* Times, two models (`SyntheticConfig.timing`):
  - "busy" (default): Poisson arrivals and log-normal lifetimes whose rate
    follows Little's law for a target GPU load. The real trace's timing
    would leave the cluster nearly idle in a timed replay (8152 pods over
    ~149 days, median lifetime ~9 minutes), so the main command uses this.
  - "trace": arrivals follow the trace's creation-time percentiles
    (piecewise linear) and lifetimes its per-class percentiles interpolated
    on a log scale (0 s to ~145 days): the openb timing, statistically.
  Either way names sort in arrival order, as in openb.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tessellate.placement import MILLI_PER_GPU, NodeSpec, Request
from tessellate.simulator.trace import PodRecord, Trace

CLASSES = ("cpu_only", "fraction", "whole")
"""Pod classes of fgd-protocol.md Sec. 1.2: no GPU, one GPU fraction, whole GPUs."""

Pair = tuple[int, int, int]
"""(cpu_milli, memory_mib, how many pods of the source trace had it)."""


@dataclass(frozen=True, slots=True)
class WorkloadMix:
    """Summary parameters of a source trace; all counts are pods (or nodes) in that trace."""

    node_shapes: tuple[tuple[str, int, int, int, int], ...]
    """(gpu_model, gpu_count, cpu_milli, memory_mib, node count)."""
    class_counts: tuple[tuple[str, int], ...]
    whole_gpu_counts: tuple[tuple[int, int], ...]
    """(GPUs per pod, pods) for the whole-GPU class."""
    fraction_milli: tuple[tuple[int, int], ...]
    """(milli-GPU, pods) for the fraction class: the full histogram."""
    cpu_memory: tuple[tuple[str, tuple[Pair, ...]], ...]
    """Per group (cpu_only, fraction, whole-N) the most common pairs covering >= 95% of it."""
    gpu_spec_share: float
    """Share of GPU pods that restrict GPU models."""
    gpu_spec_sets: tuple[tuple[str, int], ...]
    """(`|`-separated allowed models, pods), used when gpu_spec_share > 0."""
    percentiles: tuple[float, ...]
    creation_time: tuple[int, ...]
    """Creation time (s) at each percentile."""
    lifetime: tuple[tuple[str, tuple[int, ...]], ...]
    """Per class, deletion - creation (s) at each percentile."""


# fmt: off
OPENB_2023 = WorkloadMix(
    # Measured by scripts/measure_openb_mix.py from openb_node_list_gpu_node.csv and
    # openb_pod_list_default.csv (gpu_spec_sets from openb_pod_list_gpuspec25.csv:
    # the default trace has no gpu_spec at all).
    node_shapes=(
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
    ),
    class_counts=(("cpu_only", 1088), ("fraction", 3078), ("whole", 3986)),
    whole_gpu_counts=((1, 3911), (2, 16), (4, 15), (8, 44)),
    fraction_milli=(
        (50, 7), (110, 24), (140, 1), (160, 74), (220, 62), (230, 140), (270, 4),
        (290, 1), (320, 328), (330, 7), (350, 6), (370, 47), (440, 2), (460, 128),
        (470, 750), (480, 19), (550, 72), (590, 75), (650, 253), (810, 1078),
    ),
    cpu_memory=(
        ("cpu_only", (
            (12500, 57344, 364), (32000, 49152, 284), (8000, 30517, 163), (15400, 51200, 120),
            (16500, 51200, 95), (8000, 15625, 11),
        )),
        ("fraction", (
            (3152, 5600, 1122), (11908, 47104, 625), (8000, 30517, 486), (4000, 22888, 189),
            (4000, 15258, 182), (4152, 10600, 152), (4000, 30517, 136), (6000, 6144, 51),
        )),
        ("whole-1", (
            (11300, 49152, 857), (11400, 48128, 534), (3152, 5600, 470), (18708, 64512, 255),
            (9810, 41560, 195), (12000, 24576, 158), (15700, 58368, 158), (11908, 47104, 153),
            (16000, 32768, 108), (4000, 24576, 104), (8000, 16384, 104), (12000, 16384, 99),
            (14200, 58368, 93), (24200, 93184, 84), (11400, 77824, 65), (8000, 32768, 55),
            (11900, 77824, 51), (12000, 15360, 44), (8200, 33792, 41), (4000, 31250, 40),
            (15200, 80896, 36), (16000, 65536, 33),
        )),
        ("whole-2", (
            (16200, 66560, 7), (6000, 65536, 3), (30200, 160768, 3), (17400, 43008, 2),
            (14000, 60000, 1),
        )),
        ("whole-4", ((32200, 132096, 9), (32000, 131072, 3), (60200, 320512, 3))),
        ("whole-8", ((64200, 263168, 18), (88000, 327680, 18), (64000, 262144, 3), (120000, 737280, 3))),
    ),
    gpu_spec_share=0.0,
    gpu_spec_sets=(
        ("T4", 906), ("G2", 248), ("P100", 215), ("V100M16|V100M32", 126),
        ("P100|V100M16|V100M32", 74), ("G3", 59), ("G2|P100|T4|V100M16|V100M32", 37),
        ("V100M16|V100M32|V100M32", 23), ("P100|T4|V100M16|V100M32", 22),
        ("A10|G2|T4|V100M16|V100M32", 17), ("P100|V100M16", 11), ("V100M32", 11),
        ("V100M16", 4), ("A10|G2|P100|T4|V100M16|V100M32|V100M32", 3), ("A10|T4", 3),
    ),
    percentiles=(0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0,
                 99.0, 100.0),
    creation_time=(
        0, 10015331, 10052446, 10192229, 10326612, 10630521, 10903664, 11263963, 11516536,
        11924146, 12194811, 12540654, 12781129, 12831862, 12856122, 12874182, 12901761,
    ),
    lifetime=(
        ("cpu_only", (10, 53, 63, 94, 135, 151, 173, 250, 456, 787, 1402, 2512, 12873, 19471, 25093,
                      28365, 10143286)),
        ("fraction", (0, 5, 10, 27, 54, 109, 174, 267, 439, 745, 1119, 2243, 7141, 16536, 41504,
                      74631, 12475899)),
        ("whole", (1, 30, 39, 57, 92, 164, 229, 349, 633, 1073, 1748, 3201, 5666, 13178, 58324,
                   234617, 12537496)),
    ),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class ClassMix:
    """Relative weights of the pod classes (normalised; need not sum to 1)."""

    cpu_only: float
    fraction: float
    whole: float

    def __post_init__(self) -> None:
        weights = (self.cpu_only, self.fraction, self.whole)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"class weights must be >= 0 and not all 0, got {weights}")

    def weights(self) -> tuple[float, float, float]:
        return (self.cpu_only, self.fraction, self.whole)


Timing = Literal["busy", "trace"]


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. The defaults reproduce the openb default trace's size and mix.

    `scale` shrinks the cluster proportionally (0.1 -> 121 nodes); `nodes` sets
    the node count directly instead. `pods` defaults to the source trace's pods
    per GPU times the generated cluster's GPUs, which keeps GPU demand near
    0.98 of capacity; `class_mix` and `gpu_spec_share` override the measured
    ones. `load` and `median_lifetime_s` shape the "busy" timing only.
    """

    seed: int = 0
    scale: float = 1.0
    nodes: int | None = None
    pods: int | None = None
    class_mix: ClassMix | None = None
    gpu_spec_share: float | None = None
    timing: Timing = "busy"
    load: float = 0.9
    """"busy" timing: mean GPU demand of running pods as a share of capacity (Little's law)."""
    median_lifetime_s: float = 3600.0
    """"busy" timing: median of the log-normal lifetimes (sigma 1)."""
    mix: WorkloadMix = field(default=OPENB_2023, repr=False)
    cluster: tuple[NodeSpec, ...] | None = field(default=None, repr=False)
    """Nodes to size the workload to instead of generating them (`sim run --nodes N.csv`
    without `--pods`): the pod count follows their GPUs, requests are drawn among the shapes
    they can host, and model constraints only where the set's models exist there."""

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 100:
            raise ValueError(f"scale must be in (0, 100], got {self.scale}")
        if self.nodes is not None and self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.pods is not None and self.pods < 1:
            raise ValueError(f"pods must be >= 1, got {self.pods}")
        if self.gpu_spec_share is not None and not 0 <= self.gpu_spec_share <= 1:
            raise ValueError(f"gpu_spec_share must be in [0, 1], got {self.gpu_spec_share}")
        if self.timing not in ("busy", "trace"):
            raise ValueError(f"timing must be 'busy' or 'trace', got {self.timing!r}")
        if self.load <= 0 or self.median_lifetime_s <= 0:
            raise ValueError("load and median_lifetime_s must be positive")


def apportion(weights: Sequence[float], total: int) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder; ties to the earlier entry)."""
    weight_sum = float(sum(weights))
    if weight_sum <= 0:
        raise ValueError("cannot apportion over weights that are all zero")
    exact = [total * w / weight_sum for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _nodes(config: SyntheticConfig, rng: np.random.Generator) -> tuple[NodeSpec, ...]:
    """Shapes in the source proportions, in a seeded random order (openb interleaves shapes)."""
    shapes = config.mix.node_shapes
    total = config.nodes or max(1, round(sum(s[4] for s in shapes) * config.scale))
    specs = [
        (model, gpus, cpu, memory)
        for (model, gpus, cpu, memory, _), count in zip(
            shapes, apportion([s[4] for s in shapes], total), strict=True
        )
        for _ in range(count)
    ]
    width = max(4, len(str(total - 1)))
    return tuple(
        NodeSpec(
            name=f"syn-node-{i:0{width}d}",
            cpu_milli=cpu,
            memory_mib=memory,
            gpu_count=gpus,
            gpu_model=model if gpus else "",
        )
        for i, (model, gpus, cpu, memory) in enumerate(specs[j] for j in rng.permutation(total))
    )


def _pod_count(config: SyntheticConfig, nodes: Sequence[NodeSpec]) -> int:
    if config.pods is not None:
        return config.pods
    mix = config.mix
    source_pods = sum(n for _, n in mix.class_counts)
    source_gpus = sum(s[1] * s[4] for s in mix.node_shapes)
    gpus = sum(n.gpu_count for n in nodes)
    if source_gpus == 0:  # a CPU-only source cluster: follow the node count instead
        return max(1, round(source_pods * len(nodes) / sum(s[4] for s in mix.node_shapes)))
    return max(1, round(source_pods * gpus / source_gpus))


def _fits(shapes: set[tuple[str, int, int, int]], cpu: int, memory: int, gpus: int, models: str = "") -> bool:
    allowed = set(models.split("|")) if models else None
    return any(
        cpu <= c and memory <= m and gpus <= g and (allowed is None or model in allowed)
        for model, g, c, m in shapes
    )


def _draw(rng: np.random.Generator, counts: Sequence[int], size: int) -> np.ndarray:
    """`size` indices drawn with probability proportional to `counts`."""
    p = np.asarray(counts, dtype=float)
    return rng.choice(len(counts), size=size, p=p / p.sum())


def _quantile_draw(
    rng: np.random.Generator, pct: Sequence[float], values: Sequence[int], size: int, log: bool = False
) -> np.ndarray:
    """Inverse-CDF draws from a percentile table; `log` interpolates log(1 + x) for heavy tails."""
    u = rng.random(size) * 100.0
    if not log:
        return np.interp(u, pct, values)
    return np.expm1(np.interp(u, pct, np.log1p(np.asarray(values, dtype=float))))


def generate(config: SyntheticConfig | None = None) -> Trace:
    """A synthetic trace; deterministic for a given config (seed included)."""
    config = config or SyntheticConfig()
    mix = config.mix
    rng = np.random.default_rng(config.seed)
    nodes = config.cluster if config.cluster is not None else _nodes(config, rng)
    shapes = {(n.gpu_model, n.gpu_count, n.cpu_milli, n.memory_mib) for n in nodes}
    n_pods = _pod_count(config, nodes)

    # Fixed counts per (class, GPUs per pod), then a random order.
    measured = dict(mix.class_counts)
    weights = config.class_mix.weights() if config.class_mix else tuple(measured.get(c, 0) for c in CLASSES)
    per_class = dict(zip(CLASSES, apportion(weights, n_pods), strict=True))
    kinds: list[tuple[str, int]] = [("cpu_only", 0)] * per_class["cpu_only"]
    kinds += [("fraction", 1)] * per_class["fraction"]
    if per_class["whole"]:
        sizes = [g for g, _ in mix.whole_gpu_counts]
        counts = apportion([n for _, n in mix.whole_gpu_counts], per_class["whole"])
        for gpus, count in zip(sizes, counts, strict=True):
            kinds += [("whole", gpus)] * count
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]

    # CPU/memory per group, among the pairs some node of this cluster can host.
    pairs_by_group = dict(mix.cpu_memory)
    cpu = np.zeros(n_pods, dtype=np.int64)
    memory = np.zeros(n_pods, dtype=np.int64)
    groups: dict[str, list[int]] = {}
    for i, (cls, gpus) in enumerate(kinds):
        groups.setdefault(cls if cls != "whole" else f"whole-{gpus}", []).append(i)
    for group in sorted(groups):
        members = groups[group]
        gpus = kinds[members[0]][1]
        fitting = [p for p in pairs_by_group.get(group, ()) if _fits(shapes, p[0], p[1], gpus)]
        if not fitting:
            raise ValueError(
                f"no node of the {len(nodes)}-node synthetic cluster can host a {group} pod; "
                "use a larger scale or more nodes"
            )
        chosen = _draw(rng, [p[2] for p in fitting], len(members))
        cpu[members] = [fitting[k][0] for k in chosen]
        memory[members] = [fitting[k][1] for k in chosen]

    fractions = [i for i, (cls, _) in enumerate(kinds) if cls == "fraction"]
    milli = np.full(n_pods, MILLI_PER_GPU, dtype=np.int64)
    if fractions:
        values = [m for m, _ in mix.fraction_milli]
        milli[fractions] = [values[k] for k in _draw(rng, [n for _, n in mix.fraction_milli], len(fractions))]

    # Model constraints: a Bernoulli per GPU pod, then a set that can host it.
    spec_share = mix.gpu_spec_share if config.gpu_spec_share is None else config.gpu_spec_share
    models: list[tuple[str, ...]] = [()] * n_pods
    if spec_share > 0 and mix.gpu_spec_sets:
        constrained = rng.random(n_pods) < spec_share
        for i, (cls, gpus) in enumerate(kinds):
            if cls == "cpu_only" or not constrained[i]:
                continue
            usable = [s for s in mix.gpu_spec_sets if _fits(shapes, int(cpu[i]), int(memory[i]), gpus, s[0])]
            if usable:
                models[i] = tuple(usable[int(_draw(rng, [n for _, n in usable], 1)[0])][0].split("|"))

    requests = []
    for i, (cls, gpus) in enumerate(kinds):
        gpu: dict[str, object] = {}
        if cls != "cpu_only":
            gpu = {"gpu_count": gpus, "gpu_milli": int(milli[i]), "gpu_models": models[i]}
        requests.append(Request(cpu_milli=int(cpu[i]), memory_mib=int(memory[i]), **gpu))  # type: ignore[arg-type]
    if config.timing == "trace":
        created, deleted = _trace_times(rng, mix, kinds)
    else:
        created, deleted = _busy_times(rng, config, nodes, requests)

    width = max(5, len(str(n_pods - 1)))
    pods = tuple(
        PodRecord(f"syn-pod-{i:0{width}d}", request, float(created[i]), float(deleted[i]))
        for i, request in enumerate(requests)
    )
    return Trace(name=_name(config), nodes=nodes, pods=pods)


def _name(config: SyntheticConfig) -> str:
    """`synthetic-openb`, plus what differs from the defaults (reports key runs by it)."""
    name = "synthetic-openb"
    if (config.seed, config.scale) != (0, 1.0):
        name += f"-s{config.seed}-x{config.scale:g}"
    if config.nodes is not None:
        name += f"-n{config.nodes}"
    if config.pods is not None:
        name += f"-p{config.pods}"
    if config.timing != "busy":
        name += f"-{config.timing}"
    defaults = SyntheticConfig()
    tweaks = ("class_mix", "gpu_spec_share", "load", "median_lifetime_s", "mix")
    if any(getattr(config, k) != getattr(defaults, k) for k in tweaks):
        name += "-custom"
    return name


def _trace_times(
    rng: np.random.Generator, mix: WorkloadMix, kinds: Sequence[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """openb-like timing: whole seconds from the measured percentile tables."""
    n = len(kinds)
    created = np.sort(np.rint(_quantile_draw(rng, mix.percentiles, mix.creation_time, n)))
    lifetimes = dict(mix.lifetime)
    lifetime = np.zeros(n)
    for cls in CLASSES:
        members = [i for i, (c, _) in enumerate(kinds) if c == cls]
        if members:
            draws = _quantile_draw(rng, mix.percentiles, lifetimes[cls], len(members), log=True)
            lifetime[members] = np.rint(draws)
    return created, created + lifetime


def _busy_times(
    rng: np.random.Generator, config: SyntheticConfig, nodes: Sequence[NodeSpec], requests: Sequence[Request]
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals at the rate that, by Little's law, keeps `load` of the GPUs busy."""
    lifetimes = rng.lognormal(np.log(config.median_lifetime_s), 1.0, len(requests))
    capacity = sum(n.gpu_count for n in nodes) * MILLI_PER_GPU
    mean_demand = max(float(np.mean([r.total_gpu_milli for r in requests])), 1.0)
    rate = config.load * max(capacity, MILLI_PER_GPU) / (lifetimes.mean() * mean_demand)
    created = np.round(np.cumsum(rng.exponential(1 / rate, len(requests))), 3)
    return created, created + np.round(lifetimes, 3)


MIX_KEYS = {"cpu": "cpu_only", "frac": "fraction", "whole": "whole"}


def parse_mix(text: str) -> tuple[ClassMix | None, float | None]:
    """`--synthetic-mix cpu=0.1,frac=0.5,whole=0.4,spec=0.3`: relative class weights (cpu,
    frac, whole; a class left out of a given mix gets weight 0; no class given keeps the openb
    mix) and `spec`, the share of GPU pods that name their GPU models. ValueError says what
    is wrong."""
    weights: dict[str, float] = {}
    spec: float | None = None
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, raw = part.partition("=")
        key = key.strip()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not sep or value != value or value < 0:
            raise ValueError(f"--synthetic-mix: {part!r} should be KEY=NUMBER >= 0, e.g. frac=0.4")
        if key == "spec":
            if value > 1:
                raise ValueError(f"--synthetic-mix: spec is a share of GPU pods, 0..1, got {value:g}")
            spec = value
        elif key in MIX_KEYS:
            weights[MIX_KEYS[key]] = value
        else:
            raise ValueError(
                f"--synthetic-mix: unknown key {key!r}; use cpu, frac, whole (weights) and spec (0..1)"
            )
    if not weights:
        return None, spec
    if sum(weights.values()) <= 0:
        raise ValueError("--synthetic-mix: the class weights cannot all be 0")
    return ClassMix(**{c: weights.get(c, 0.0) for c in CLASSES}), spec
