"""Which queue's pending pods are tried first: the one furthest below its fair share.

Dominant-resource style across GPU models: a queue's *dominant ratio* is its largest
usage / fair-share ratio over the models it uses or has a share of, so a queue that is
at its fair share of H100s but holds no A100s still counts as at its share. Lower goes
first. In a hierarchy a leaf is ranked by the ratios along its path from the root
(siblings compete inside their parent's share), then by total usage, then by name.
Within a queue pods go by priority (higher first), then arrival.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction

from tessellate.placement.quota.fairshare import Key
from tessellate.placement.quota.tree import QueueTree

ZERO = Fraction(0)


def dominant_ratio(
    queue: str, models: Iterable[str], usage: Callable[[str, str], Fraction], fair: Mapping[Key, Fraction]
) -> float:
    """max over `models` of usage / fair share (inf: usage without a share; 0: neither)."""
    worst = 0.0
    for model in models:
        used, share = usage(queue, model), fair.get((queue, model), ZERO)
        if used <= 0:
            continue
        worst = max(worst, math.inf if share <= 0 else float(used / share))
    return worst


def queue_key(
    tree: QueueTree,
    leaf: str,
    models: Sequence[str],
    usage: Callable[[str, str], Fraction],
    fair: Mapping[Key, Fraction],
) -> tuple:
    """Sort key of one leaf (lower goes first): its path's dominant ratios, total usage, name."""
    path = tree.paths[leaf]
    total = sum((usage(leaf, m) for m in models), ZERO)
    return (tuple(dominant_ratio(q, models, usage, fair) for q in path), total, leaf)


def queue_order(
    tree: QueueTree,
    queues: Iterable[str],
    models: Iterable[str],
    usage: Callable[[str, str], Fraction],
    fair: Mapping[Key, Fraction],
) -> list[str]:
    """`queues` (leaves) sorted furthest-below-fair-share first (module docstring)."""
    models = tuple(models)
    return sorted(queues, key=lambda leaf: queue_key(tree, leaf, models, usage, fair))


def pod_order(priority: int, arrival: float) -> tuple[int, float]:
    """Sort key within a queue: higher priority first, then earlier arrival."""
    return (-priority, arrival)
