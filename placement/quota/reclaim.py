"""Reclaim: a queue within its quota takes back GPUs that queues over their quota borrowed.

Victims are chosen only among pods whose queue stays at or above its own quota once
they are gone (so only borrowed capacity is ever taken back: a queue at or below its
quota loses nothing), lowest priority first, then youngest, and only the fewest needed.
In a hierarchy the rule holds below the two queues' lowest common ancestor: every
queue on the claimant's side must stay within its quota with the pod, every queue on
the victim's side at or above its quota without the victims (siblings reclaim from
each other inside their parent; a queue never reclaims from a subtree that is within
its own quota as a whole).

A pod group (`Charge.group`) is preempted whole or not at all: its running members are
one candidate, whose units on every model (not only the claimant's) must fit in its
queue's budget, so preempting a gang never pushes its queue below quota anywhere.

Whether the pod then fits is the caller's question (`Fits`), asked with the victims
taken out: the placement core already answers "does it fit" (`Placer.fits`), so this
module never answers it again. Victims are sought one node at a time, as kube-scheduler
preempts: on each node the eligible candidates with a pod there are taken in order until
the pod fits, the shortest such prefix is found by bisection, and then candidates are
given back, most important first, while it still fits ("reprieve"). Among the nodes that
work, the one whose most important victim matters least wins, then the fewest victims.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement.quota.book import Charge, QuotaBook

Fits = Callable[[Sequence[Charge]], bool]
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

    def rank(self) -> tuple[int, int]:
        return (max(v.priority for v in self.pods), len(self.pods))


@dataclass(frozen=True, slots=True)
class Candidate:
    """What preemption takes as one: a pod, or every running member of its pod group."""

    members: tuple[Charge, ...]
    chain: tuple[str, ...]
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
    candidates: list[Candidate] = []
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
        candidates += _candidates(book.pods_of(other), model, theirs)
    return fewest_victims(candidates, fits, _Budget(book).allows, max_nodes=max_nodes)


def _candidates(pods: list[Charge], model: str, chain: tuple[str, ...]) -> list[Candidate]:
    """A queue's preemptible units that hold some of `model`: single pods and whole groups."""
    groups: dict[str, list[Charge]] = {}
    out = []
    for c in pods:
        if c.group:
            groups.setdefault(c.group, []).append(c)
        elif c.model == model:
            out.append(Candidate((c,), chain))
    for members in groups.values():
        if any(m.model == model for m in members):
            out.append(Candidate(tuple(sorted(members, key=victim_order)), chain))
    return out


def _below_common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The parts of two root-first paths below their lowest common ancestor (None: b within a)."""
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    if k == len(b):
        return None
    return a[k:], b[k:]


class _Budget:
    """Units each queue can give up per model and stay at or above its quota, less what is taken."""

    def __init__(self, book: QuotaBook) -> None:
        self.book = book

    def allows(self, taken: Sequence[Candidate], c: Candidate) -> bool:
        for model, units in c.units().items():
            for q in c.chain:
                gone = sum((t.units().get(model, Fraction(0)) for t in taken if q in t.chain), Fraction(0))
                if -self.book.quota_left(q, model) - gone < units:
                    return False
        return True


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
        if best is not None and best.rank() <= (floor, 1):
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
