"""Choosing victims: the fewest, least important running pods whose removal lets a pod fit.

One search serves every kind of preemption, in the live scheduler and in the simulator:
priority preemption (victims: lower-priority pods) and reclaim (victims: pods borrowed
over their queue's quota, `placement.quota.reclaim`). The caller says who may be taken
(the candidates and a budget rule) and answers the what-if (`Fits`: does the pod fit with
these gone?) with the placement core's own check, so this module never decides a fit.

Victims are sought one node at a time, as kube-scheduler preempts: on each node the
candidates are taken lowest priority, then youngest first, until the pod fits; the
shortest such prefix is found by bisection, and then victims are given back, most
important first, while it still fits ("reprieve"). Among the nodes that work, the one
whose most important victim matters least wins, then the smallest sum of priorities,
then the fewest victims; nodes are tried least important pod first and the search
stops when no node left can win.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a running pod's record; the quota book's type, read here only
    from tessellate.placement.quota.book import Charge

Fits = Callable[[Sequence["Charge"]], bool]
"""`fits(victims)`: whether the claimant's pod fits on `victims[0].node` with `victims` gone.
The first victim is always on the node being tried; the others are on it too, except other
members of a victim's pod group, which go with it wherever they run."""
MAX_NODES = 16
"""Nodes that work after which the search stops (kube-scheduler samples similarly)."""


@dataclass(frozen=True, slots=True)
class Victims:
    """The pods to preempt and the node they free."""

    node: Hashable
    pods: tuple[Charge, ...]

    def rank(self) -> tuple[int, int, int]:
        """kube-scheduler's order: the most important victim, the sum of priorities, the count."""
        priorities = [v.priority for v in self.pods]
        return (max(priorities), sum(priorities), len(priorities))


@dataclass(frozen=True, slots=True)
class Candidate:
    """What preemption takes as one: a pod, or every running member of its pod group."""

    members: tuple[Charge, ...]
    chain: tuple[str, ...] = ()
    """The victim's queues below the lowest common ancestor with the claimant."""

    @property
    def first(self) -> Charge:
        return self.members[0]

    @property
    def nodes(self) -> set[Hashable]:
        return {m.node for m in self.members}

    def units(self) -> dict[str, Fraction]:
        out: dict[str, Fraction] = {}
        for m in self.members:
            out[m.model] = out.get(m.model, Fraction(0)) + m.units
        return out


def victim_order(c: Charge) -> tuple[int, float, str]:
    """Lowest priority first, then youngest (latest `started`), then by name."""
    return (c.priority, -c.started, c.pod)


def fewest_victims(
    candidates: Iterable[Candidate],
    fits: Fits,
    allows: Callable[[Sequence[Candidate], Candidate], bool],
    *,
    max_nodes: int = MAX_NODES,
) -> Victims | None:
    """The per-node victim search of the module docstring, over any candidates.

    `allows(taken, c)`: whether `c` may join the candidates `taken` so far (a budget rule);
    it must stay true for any subset of an allowed set. Generic so that a priority
    preemption can use it with its own candidates (lower-priority pods) and rule."""
    by_node: dict[Hashable, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: victim_order(c.first)):
        for node in sorted(c.nodes, key=str):
            by_node.setdefault(node, []).append(c)
    best: Victims | None = None
    found = 0
    for node, group in by_node.items():  # nodes with the least important pod first
        floor = group[0].first.priority
        if best is not None and best.rank() <= (floor, floor, 1):
            break  # every node left has a victim at least this important
        chosen = _on_node(node, group, fits, allows)
        if chosen is None:
            continue
        candidate = Victims(node, _flat(node, chosen))
        if best is None or candidate.rank() < best.rank():
            best = candidate
        found += 1
        if found >= max_nodes:
            break
    return best


def _flat(node: Hashable, chosen: Sequence[Candidate]) -> tuple[Charge, ...]:
    """The candidates' pods, one on `node` first (what `Fits` reads the node from)."""
    pods = [m for c in chosen for m in c.members]
    first = next(i for i, m in enumerate(pods) if m.node == node)
    return (pods[first], *pods[:first], *pods[first + 1 :])


def _on_node(
    node: Hashable,
    group: list[Candidate],
    fits: Fits,
    allows: Callable[[Sequence[Candidate], Candidate], bool],
) -> list[Candidate] | None:
    taken: list[Candidate] = []
    for c in group:
        if allows(taken, c):
            taken.append(c)
    if not taken or not fits(_flat(node, taken)):
        return None
    lo, hi = 1, len(taken)  # the shortest prefix that fits: removing more never hurts
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(_flat(node, taken[:mid])):
            hi = mid
        else:
            lo = mid + 1
    chosen = taken[:lo]
    for c in reversed(list(chosen)):  # reprieve, most important first
        if len(chosen) == 1:
            break
        rest = [x for x in chosen if x is not c]
        if fits(_flat(node, rest)):
            chosen = rest
    return chosen
