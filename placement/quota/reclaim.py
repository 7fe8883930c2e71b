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
module never answers it again. The search itself, node by node with bisection and
reprieve, is the one priority preemption uses too (`placement.preemption`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction

import numpy as np
from tessellate.placement.model import Request
from tessellate.placement.preemption import MAX_NODES, Candidate, Fits, Victims, fewest_victims, victim_order
from tessellate.placement.quota.book import Charge, QuotaBook
from tessellate.placement.quota.nodes import NodeKinds, quota_mask


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


def reclaim_by_kind(
    book: QuotaBook,
    kinds: NodeKinds,
    queue: str,
    request: Request,
    fits: Callable[[Sequence[Charge], np.ndarray], bool],
    allowed: np.ndarray | None = None,
) -> Iterator[Victims]:
    """`reclaim` tried per kind of node (GPU model, time-slicing) the pod may use and stay within
    its quota on (and, given `allowed`, the nodes the caller's filters let it use), yielding
    each kind's victims: `fits(victims, nodes)` is the caller's what-if on those nodes. The
    simulator takes the first answer; the live scheduler may skip one (victims already leaving)."""
    inside = quota_mask(book, kinds, queue, request, within_quota=True)
    for kind, units in zip(kinds.kinds, kinds.units(request), strict=True):
        if not units or (request.gpu_models and kind.model not in request.gpu_models):
            continue
        nodes = kind.nodes if inside is None else kind.nodes & inside
        if allowed is not None:
            nodes = nodes & allowed
        if not nodes.any():
            continue
        found = reclaim(book, queue, kind.model, units, lambda vs, n=nodes: fits(vs, n))
        if found is not None:
            yield found


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
