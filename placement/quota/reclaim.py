"""Reclaim: a queue within its quota takes back GPUs that queues over their quota borrowed.

Victims are chosen only among pods whose queue stays at or above its own quota once
they are gone (so only borrowed capacity is ever taken back: a queue at or below its
quota loses nothing), lowest priority first, then youngest, and only the fewest needed.
In a hierarchy the rule holds below the two queues' lowest common ancestor: every
queue on the claimant's side must stay within its quota with the pod, every queue on
the victim's side at or above its quota without the victims (siblings reclaim from
each other inside their parent; a queue never reclaims from a subtree that is within
its own quota as a whole).

Whether the pod then fits is the caller's question (`Fits`), asked with the victims
taken out: the placement core already answers "does it fit" (`Placer.fits`), so this
module never answers it again. Victims are sought one node at a time, as kube-scheduler
preempts: on each node the eligible candidates are taken in order until the pod fits,
the shortest such prefix is found by bisection, and then victims are given back, most
important first, while it still fits ("reprieve"). Among the nodes that work, the one
whose most important victim matters least wins, then the fewest victims.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement.quota.book import Charge, QuotaBook

Fits = Callable[[Sequence[Charge]], bool]
"""`fits(victims)`: whether the claimant's pod fits with these pods (all on one node) gone."""
MAX_NODES = 16
"""Nodes that work after which the search stops (kube-scheduler samples similarly)."""


@dataclass(frozen=True, slots=True)
class Victims:
    """The pods to preempt and the node they free."""

    node: Hashable
    pods: tuple[Charge, ...]

    def rank(self) -> tuple[int, int]:
        return (max(v.priority for v in self.pods), len(self.pods))


def victim_order(c: Charge) -> tuple[int, float, str]:
    """Lowest priority first, then youngest (latest `started`), then by name."""
    return (c.priority, -c.started, c.pod)


def reclaim(
    book: QuotaBook,
    queue: str,
    model: str,
    units: Fraction,
    fits: Fits,
    *,
    max_nodes: int = MAX_NODES,
) -> Victims | None:
    """Victims whose preemption lets `queue`'s pod of `units` x `model` fit; None if none do.

    None also when the pod would take `queue` above its quota (borrowing never preempts)."""
    if units <= 0 or not book.within_quota(queue, model, units):
        return None
    claimant = book.tree.paths[queue]
    budget = _Budget(book, model)
    candidates = []
    for other in book.tree.leaves:
        if other == queue:
            continue
        below = _below_common(claimant, book.tree.paths[other])
        if below is None:
            continue
        mine, theirs = below
        if not all(book.within_quota(q, model, units) for q in mine):
            continue
        if not all(book.over_quota(q, model) for q in theirs):
            continue
        candidates += [(c, theirs) for c in book.pods_of(other) if c.model == model]
    return fewest_victims(candidates, fits, budget.allows, max_nodes=max_nodes)


def _below_common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The parts of two root-first paths below their lowest common ancestor (None: b within a)."""
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    if k == len(b):
        return None
    return a[k:], b[k:]


class _Budget:
    """Units each queue can give up and stay at or above its quota, less what is taken."""

    def __init__(self, book: QuotaBook, model: str) -> None:
        self.book, self.model = book, model

    def allows(
        self, taken: Sequence[tuple[Charge, tuple[str, ...]]], c: tuple[Charge, tuple[str, ...]]
    ) -> bool:
        charge, chain = c
        for q in chain:
            gone = sum((t.units for t, ch in taken if q in ch), Fraction(0))
            if -self.book.quota_left(q, self.model) - gone < charge.units:
                return False
        return True


Candidate = tuple[Charge, tuple[str, ...]]


def fewest_victims(
    candidates: Iterable[Candidate],
    fits: Fits,
    allows: Callable[[Sequence[Candidate], Candidate], bool],
    *,
    max_nodes: int = MAX_NODES,
) -> Victims | None:
    """The per-node victim search of the module docstring, over any candidates.

    `allows(taken, c)`: whether `c` may join the victims `taken` so far (a budget rule);
    it must stay true for any subset of an allowed set. Generic so that a priority
    preemption can use it with its own candidates (lower-priority pods) and rule."""
    by_node: dict[Hashable, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: victim_order(c[0])):
        by_node.setdefault(c[0].node, []).append(c)
    best: Victims | None = None
    found = 0
    for node, group in by_node.items():  # nodes with the least important pod first
        floor = group[0][0].priority
        if best is not None and best.rank() <= (floor, 1):
            break  # every node left has a victim at least this important
        chosen = _on_node(group, fits, allows)
        if chosen is None:
            continue
        candidate = Victims(node, tuple(c for c, _ in chosen))
        if best is None or candidate.rank() < best.rank():
            best = candidate
        found += 1
        if found >= max_nodes:
            break
    return best


def _on_node(
    group: list[Candidate], fits: Fits, allows: Callable[[Sequence[Candidate], Candidate], bool]
) -> list[Candidate] | None:
    taken: list[Candidate] = []
    for c in group:
        if allows(taken, c):
            taken.append(c)
    if not taken or not fits([c for c, _ in taken]):
        return None
    lo, hi = 1, len(taken)  # the shortest prefix that fits: removing more never hurts
    while lo < hi:
        mid = (lo + hi) // 2
        if fits([c for c, _ in taken[:mid]]):
            hi = mid
        else:
            lo = mid + 1
    chosen = taken[:lo]
    for c in reversed(list(chosen)):  # reprieve, most important first
        if len(chosen) == 1:
            break
        rest = [x for x in chosen if x is not c]
        if fits([x for x, _ in rest]):
            chosen = rest
    return chosen
