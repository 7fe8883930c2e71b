"""Planning a whole MIG GPU: the layout that serves a demand of instance counts, or why none can.

The node agent repartitions a GPU only to a layout this module chose, and the scheduler
explains a refusal in its words (which instances are in the way, which slices are free).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tessellate.placement.mig import (
    MigError,
    MigGeometry,
    MigLayout,
    MigProfile,
    as_geometry,
    describe_instances,
    describe_slices,
    valid_placements,
)
from tessellate.placement.migfrag import score, weights


@dataclass(frozen=True, slots=True)
class MigPlanFailure:
    """Why no layout serves the demand; `reason` is one line for a person."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def plan_layout(
    gpu: MigGeometry | str,
    demand_counts: Mapping[str, int],
    in_use: MigLayout | None = None,
    demand: Mapping[str, float] | None = None,
) -> MigLayout | MigPlanFailure:
    """A layout with `in_use`'s instances plus `demand_counts` more, or why there is none.

    Among all layouts that serve the counts (every arrangement is searched; a GPU
    has at most 8 memory slices), the one with the least MIG fragmentation for the
    expected future `demand` wins, i.e. the one whose free capacity the expected
    requests can use best (every candidate frees the same number of slices). Ties go to
    the layout that is first in start order. Unknown profile names and negative counts
    raise `MigError`: they are mistakes in the question, not a full GPU.
    """
    g = as_geometry(gpu)
    base = in_use if in_use is not None else MigLayout(g)
    if base.geometry != g:
        raise MigError(f"the in-use layout is for {base.geometry.model}, not {g.model}")
    wanted = _counts(g, demand_counts)
    weights(g, demand)  # reject a bad demand before searching
    refusal = _refusal(base, wanted)
    if refusal is not None:
        return MigPlanFailure(refusal)
    items = sorted(
        (p for p, n in wanted.items() for _ in range(n)),
        key=lambda p: (-p.size, -p.compute_slices, g.index(p)),
    )
    best: tuple[float, tuple, MigLayout] | None = None

    def walk(layout: MigLayout, i: int, previous_start: int) -> None:
        nonlocal best
        if i == len(items):
            key = (score(layout, demand), tuple((x.start, g.index(x.profile)) for x in layout))
            if best is None or key < best[:2]:
                best = (*key, layout)
            return
        profile = items[i]
        floor = previous_start if i and items[i - 1] is profile else -1
        for start in valid_placements(layout, profile):
            if start > floor:
                walk(layout.add(profile, start), i + 1, start)

    walk(base, 0, -1)
    if best is None:
        return MigPlanFailure(_joint_refusal(base, wanted))
    return best[2]


def _counts(g: MigGeometry, demand_counts: Mapping[str, int]) -> dict[MigProfile, int]:
    wanted: dict[MigProfile, int] = {}
    for name, n in demand_counts.items():
        profile = g.profile(name)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise MigError(f"count of {profile.name} must be a whole number >= 0, not {n!r}")
        wanted[profile] = wanted.get(profile, 0) + n
    return {p: n for p, n in wanted.items() if n}


def _in_use_note(base: MigLayout) -> str:
    return f" ({base} in use)" if len(base) else ""


def _refusal(base: MigLayout, wanted: dict[MigProfile, int]) -> str | None:
    """The first simple reason the demand cannot fit, most specific first; None if none applies."""
    g = base.geometry
    for profile, n in wanted.items():
        have = base.count(profile)
        if n + have > profile.max_count:
            extra = f" with {have} in use" if have else ""
            return (
                f"{n} x {profile.name} requested{extra} but at most {profile.max_count} fit on one {g.model}"
            )
    memory = sum(p.size * n for p, n in wanted.items())
    compute = sum(p.compute_slices * n for p, n in wanted.items())
    count = sum(wanted.values())
    breakdown = ", ".join(f"{n} x {p.name}" for p, n in wanted.items())
    if memory > g.memory_slices:
        return f"{breakdown} need {memory} memory slices but {g.model} has {g.memory_slices}"
    if compute > g.compute_slices:
        return f"{breakdown} need {compute} compute slices but {g.model} has {g.compute_slices}"
    if count > g.max_instances:
        return f"{count} instances requested but {g.model} takes at most {g.max_instances}"
    for profile in wanted:
        if not valid_placements(base, profile):
            return _blocked(base, profile)
    if memory > base.free_memory_slices:
        return (
            f"{breakdown} need {memory} memory slices but only {base.free_memory_slices} "
            f"of {g.memory_slices} are free{_in_use_note(base)}"
        )
    if compute > base.free_compute_slices:
        return (
            f"{breakdown} need {compute} compute slices but only {base.free_compute_slices} "
            f"of {g.compute_slices} are free{_in_use_note(base)}"
        )
    if count + len(base) > g.max_instances:
        return f"{count} more instances but {g.model} takes at most {g.max_instances}{_in_use_note(base)}"
    return None


def _blocked(layout: MigLayout, profile: MigProfile) -> str:
    """Why not even one instance of `profile` fits on `layout` (it does not)."""
    g = layout.geometry
    overlapping = {
        s: [i for i in layout if g.profile(i.profile).mask(i.start) & profile.mask(s)] for s in profile.starts
    }
    if all(overlapping.values()):
        if len(profile.starts) == 1:
            (start,) = profile.starts
            blockers = overlapping[start]
            verb = "is" if len(blockers) == 1 else "are"
            if profile.size == g.memory_slices:
                needs = f"{profile.name} needs all {g.memory_slices} memory slices"
                return f"{needs}; {describe_instances(blockers)} {verb} in use"
            return (
                f"{profile.name} can only occupy memory slices [{start}, {start + profile.size}); "
                f"{describe_instances(blockers)} {verb} in use there"
            )
        per_start = "; ".join(
            f"[{s}, {s + profile.size}) holds {describe_instances(blockers)}"
            for s, blockers in overlapping.items()
        )
        starts = ", ".join(map(str, profile.starts))
        return f"{profile.name} can only start at memory slices {starts} (size {profile.size}): {per_start}"
    start = next(s for s, blockers in overlapping.items() if not blockers)
    return f"{profile.name} does not fit: {layout.why_not(profile, start)}"


def _joint_refusal(base: MigLayout, wanted: dict[MigProfile, int]) -> str:
    """Every profile fits on its own, and the totals fit, but not all at once."""
    g = base.geometry
    breakdown = ", ".join(f"{n} x {p.name}" for p, n in wanted.items())
    where = "; ".join(
        f"{p.name} can only start at {', '.join(map(str, p.starts))} (size {p.size})"
        for p in wanted
        if len(p.starts) < g.memory_slices - p.size + 1
    )
    free = describe_slices(g.full_mask & ~base.used_memory_mask) or "none"
    text = (
        f"no arrangement of {breakdown} fits the free memory slices {free} of {g.model}{_in_use_note(base)}"
    )
    return f"{text}: {where}" if where else text
