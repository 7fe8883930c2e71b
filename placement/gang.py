"""All-or-nothing placement of a pod group (gang scheduling), for any driver of the core.

A distributed job's members are useful only together: placing some of them holds GPUs
that the rest of the job may be waiting for, which is how half-started jobs deadlock a
cluster. `place_together` decides every member, keeping each decision as it goes (so later
members see earlier ones), and takes them all back unless at least `min_available`
members run. The rule is generic over how one member is decided and undone, because the
live scheduler filters and charges more than the core knows (taints, extended resources);
`place_group` is the rule over a `Placer` and its state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from tessellate.placement.cycle import Placer
from tessellate.placement.model import Assignment, Request, Unschedulable

Member = TypeVar("Member")
Kept = TypeVar("Kept")


@dataclass
class GroupOutcome(Generic[Member, Kept]):
    """What one pass over a group kept, and why each other member was not placed."""

    kept: list[tuple[Member, Kept]] = field(default_factory=list)
    refused: list[tuple[Member, str]] = field(default_factory=list)
    enough: bool = False
    """At least `min_available` members run: the kept decisions stand."""
    rolled_back: int = 0
    """Decisions taken back because too few members could be placed."""


def demand_order(request: Request) -> int:
    """Members with the biggest GPU demand go first: they are the hardest to fit last."""
    return -request.gpu_count * request.gpu_milli


def place_together(
    members: Sequence[Member],
    min_available: int,
    running: int,
    decide: Callable[[Member], Kept | str],
    undo: Callable[[Kept], None],
) -> GroupOutcome[Member, Kept]:
    """Decide `members` in order; keep the decisions only if `running` + kept >= `min_available`.

    `decide` returns what it committed or a reason string; `undo` reverses one commit.
    """
    outcome: GroupOutcome[Member, Kept] = GroupOutcome()
    for member in members:
        result = decide(member)
        if isinstance(result, str):
            outcome.refused.append((member, result))
        else:
            outcome.kept.append((member, result))
    outcome.enough = running + len(outcome.kept) >= min_available
    if outcome.enough:
        return outcome
    for _, kept in reversed(outcome.kept):
        undo(kept)
    outcome.rolled_back = len(outcome.kept)
    outcome.kept = []
    return outcome


def place_group(
    placer: Placer,
    members: Sequence[tuple[str, Request]],
    min_available: int,
    running: int = 0,
    eligible: np.ndarray | None = None,
) -> GroupOutcome[tuple[str, Request], Assignment]:
    """`place_together` over the core alone: each member placed and allocated on `placer.state`."""
    state = placer.state

    def decide(member: tuple[str, Request]) -> Assignment | str:
        decision = placer.place(member[0], member[1], eligible)
        if isinstance(decision, Unschedulable):
            return decision.message
        state.allocate(decision)
        return decision

    ordered = sorted(members, key=lambda m: (demand_order(m[1]), m[0]))
    return place_together(ordered, min_available, running, decide, lambda a: state.release(a.pod))
