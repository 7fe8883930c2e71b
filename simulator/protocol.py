"""The FGD paper's workload-inflation protocol (fgd-protocol.md Sec. 2.2).

Pods are shuffled with Go's generator, then copies drawn from the original
trace are appended until the GPU demand reaches `tune` times the cluster's
capacity (or pods are removed when it is above). Nodes get a seeded
permutation that is the global tie-breaker. Every draw happens in the
artifact's order, so a seed here is the same run as the same seed there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tessellate.placement import NodeSpec
from tessellate.simulator.gorand import GoRand
from tessellate.simulator.trace import PodRecord, Trace

INFORMER_DRAWS = 10
"""Draws the artifact's client-go informers consume between tuning and node naming."""


@dataclass(frozen=True)
class InflationPlan:
    """The arrival sequence and node tie-break order of one seeded run."""

    arrivals: tuple[PodRecord, ...]
    nodes: tuple[NodeSpec, ...]
    """In tie-break order: the node that wins ties comes first."""
    tuned_copies: int
    removed: int
    rng: GoRand
    """The generator after the protocol's draws; the Random policy continues it."""


def plan_inflation(trace: Trace, seed: int, tune: float | None = 1.3, shuffle: bool = True) -> InflationPlan:
    """Build the arrival list and node order for `seed`; `tune=None` keeps the trace as is."""
    reference = sorted(trace.pods, key=lambda p: p.name)
    rng = GoRand(seed)
    rng.int63()  # the artifact evaluates one rand.Int() for a debug log line
    arrivals = list(reference)
    if shuffle:
        rng.shuffle(arrivals)
    copies = removed = 0
    if tune is not None and tune > 0:
        demand = sum(p.request.total_gpu_milli for p in arrivals)
        goal = tune * trace.total_gpus * 1000
        if demand < goal:
            while True:
                candidate = reference[rng.intn(len(reference))]
                # The artifact compares the per-GPU share, not the pod's total (a quirk kept).
                if demand + candidate.request.gpu_milli > goal:
                    break
                arrivals.append(replace(candidate, name=f"{candidate.name}-tuned-{copies}"))
                demand += candidate.request.total_gpu_milli
                copies += 1
        else:
            while demand > goal:
                gone = arrivals.pop(rng.intn(len(arrivals)))
                demand -= gone.request.total_gpu_milli
                removed += 1
    for _ in range(INFORMER_DRAWS):
        rng.int63()
    by_name = sorted(trace.nodes, key=lambda n: n.name)
    prefix = rng.perm(len(by_name))
    order = sorted(range(len(by_name)), key=lambda i: prefix[i])
    return InflationPlan(
        arrivals=tuple(arrivals),
        nodes=tuple(by_name[i] for i in order),
        tuned_copies=copies,
        removed=removed,
        rng=rng,
    )
