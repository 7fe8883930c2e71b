"""Fair share: each queue's quota, plus idle GPUs shared in proportion to overQuotaWeight.

Per GPU model, water-filling: every queue first gets its quota (capped by what it
wants and by its limit); what is left of the model's capacity goes to the queues that
want more, in proportion to their weights, and a queue that reaches its demand or
limit drops out so the rest share what it leaves. In a hierarchy the roots share the
cluster and each parent's fair share is shared among its children the same way. If
the quotas alone exceed the capacity (quotas are promises, nodes come and go), the
guaranteed parts shrink in proportion so the shares still add up to the capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement.quota.tree import QueueTree

ZERO = Fraction(0)
Key = tuple[str, str]
"""(queue, GPU model)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one queue brings to the sharing of one model."""

    quota: Fraction
    limit: Fraction | None
    weight: Fraction
    demand: Fraction
    """Units in use plus units pending."""


def water_fill(capacity: Fraction, claims: Mapping[str, Claim]) -> dict[str, Fraction]:
    """Each claim's fair share of `capacity` (see the module docstring); exact."""
    capacity = max(Fraction(capacity), ZERO)
    want = {q: c.demand if c.limit is None else min(c.demand, c.limit) for q, c in claims.items()}
    share = {q: min(c.quota, want[q]) for q, c in claims.items()}
    base = sum(share.values(), ZERO)
    if base >= capacity:
        if base == 0:
            return share
        return {q: s * capacity / base for q, s in share.items()}
    left = capacity - base
    active = {q for q, c in claims.items() if want[q] > share[q] and c.weight > 0}
    while active and left > 0:
        weights = sum((claims[q].weight for q in active), ZERO)
        give = {q: left * claims[q].weight / weights for q in active}
        full = {q for q in active if give[q] >= want[q] - share[q]}
        if not full:
            for q in active:
                share[q] += give[q]
            break
        for q in full:
            left -= want[q] - share[q]
            share[q] = want[q]
        active -= full
    return share


def fair_shares(
    tree: QueueTree,
    capacity: Mapping[str, Fraction],
    usage: Mapping[Key, Fraction],
    pending: Mapping[Key, Fraction],
) -> dict[Key, Fraction]:
    """Fair share per (queue, model) for every queue (parents too) and every model in `capacity`.

    `usage` and `pending` are per leaf queue; absent keys are 0."""
    out: dict[Key, Fraction] = {}
    for model, cap in capacity.items():
        demand = _demands(tree, model, usage, pending)
        _share_level(tree, model, tree.roots, Fraction(cap), demand, out)
    return out


def _demands(
    tree: QueueTree, model: str, usage: Mapping[Key, Fraction], pending: Mapping[Key, Fraction]
) -> dict[str, Fraction]:
    demand: dict[str, Fraction] = {}

    def visit(name: str) -> Fraction:
        kids = tree.children[name]
        if kids:
            total = sum((visit(k) for k in kids), ZERO)
        else:
            total = usage.get((name, model), ZERO) + pending.get((name, model), ZERO)
        limit = tree.specs[name].entry(model).limit
        demand[name] = total if limit is None else min(total, limit)
        return demand[name]

    for root in tree.roots:
        visit(root)
    return demand


def _share_level(
    tree: QueueTree,
    model: str,
    names: list[str],
    capacity: Fraction,
    demand: Mapping[str, Fraction],
    out: dict[Key, Fraction],
) -> None:
    claims = {}
    for name in names:
        entry = tree.specs[name].entry(model)
        claims[name] = Claim(entry.quota, entry.limit, entry.over_quota_weight, demand[name])
    for name, share in water_fill(capacity, claims).items():
        out[(name, model)] = share
        if tree.children[name]:
            _share_level(tree, model, tree.children[name], share, demand, out)
