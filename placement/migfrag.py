"""MIG fragmentation: FGD's idea moved from milli-GPU to memory slices, and where the next
instance goes.

For an expected MIG demand (profile ->
probability), a free memory slice is a *fragment* for a profile when no valid
placement of that profile could cover it; the MIG fragmentation of a layout is
the expected number of free slices the demand could not use. `choose_start`
takes the placement that adds the least fragmentation; `first_fit` is the
baseline that takes the lowest start.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from tessellate.placement.mig import (
    MigError,
    MigGeometry,
    MigLayout,
    MigProfile,
    UnknownMigProfileError,
    as_geometry,
    valid_placements,
)

_TIE = 9
"""Fragmentation values are compared after rounding to this many decimals, so that
float noise never overrides the documented tie-break (lowest start)."""


def default_demand(gpu: MigGeometry | str) -> dict[str, float]:
    """Equal weight on every profile without media extensions (`+me` has its base's shape)."""
    g = as_geometry(gpu)
    names = [p.name for p in g.profiles if not p.media_extensions] or list(g.profile_names)
    return {n: 1.0 / len(names) for n in names}


def weights(g: MigGeometry, demand: Mapping[str, float] | None) -> tuple[tuple[MigProfile, float], ...]:
    return _weights_cached(g, None if demand is None else tuple(demand.items()))


@lru_cache(maxsize=256)
def _weights_cached(
    g: MigGeometry, items: tuple[tuple[str, float], ...] | None
) -> tuple[tuple[MigProfile, float], ...]:
    pairs = default_demand(g).items() if items is None else items
    merged: dict[MigProfile, float] = {}
    for name, weight in pairs:
        profile = g.profile(name)
        if not weight >= 0:
            raise MigError(f"demand weight of {profile.name} must be >= 0, not {weight!r}")
        merged[profile] = merged.get(profile, 0.0) + float(weight)
    total = sum(merged.values())
    if total <= 0:
        raise MigError("the MIG demand needs at least one profile with a positive weight")
    return tuple((p, w / total) for p, w in merged.items() if w > 0)


def usable_mask(layout: MigLayout, profile: str | MigProfile) -> int:
    """Free memory slices that some valid placement of `profile` could cover."""
    p = layout.geometry.profile(profile)
    mask = 0
    for start in valid_placements(layout, p):
        mask |= p.mask(start)
    return mask


def mig_fragmentation(layout: MigLayout, demand: Mapping[str, float] | None = None) -> float:
    """Expected number of free memory slices the demand could not use (FGD's F, in slices).

    For each profile p with probability w_p, the free slices no valid placement of p
    could cover are p's fragment; the result is the sum of w_p times its size. A full
    GPU has 0; an empty A100 has some, because e.g. a 1g can never use slice 7.
    `demand` maps profile names to weights (normalised here; default `default_demand`).
    """
    g = layout.geometry
    free = g.full_mask & ~layout.used_memory_mask
    if not free:
        return 0.0
    total = 0.0
    for profile, weight in weights(g, demand):
        total += weight * (free & ~usable_mask(layout, profile)).bit_count()
    return total


def mig_fragmentation_ratio(layout: MigLayout, demand: Mapping[str, float] | None = None) -> float:
    """Share of the free memory slices that the demand could not use (0 when nothing is free)."""
    free = layout.free_memory_slices
    return mig_fragmentation(layout, demand) / free if free else 0.0


def score(layout: MigLayout, demand: Mapping[str, float] | None) -> float:
    return round(mig_fragmentation(layout, demand), _TIE)


def choose_start(
    layout: MigLayout, profile: str | MigProfile, demand: Mapping[str, float] | None = None
) -> int | None:
    """The start slot whose instance adds the least MIG fragmentation; ties go to the lowest start.

    None when the profile fits nowhere on this layout.
    """
    starts = valid_placements(layout, profile)
    if not starts:
        return None
    return min(starts, key=lambda s: (score(layout.add(profile, s), demand), s))


def first_fit(layout: MigLayout, profile: str | MigProfile) -> int | None:
    """Baseline: the lowest start slot that fits, or None."""
    starts = valid_placements(layout, profile)
    return starts[0] if starts else None


def choose_placement(
    layouts: Sequence[MigLayout], profile: str, demand: Mapping[str, float] | None = None
) -> tuple[int, int] | None:
    """(GPU index, start slot) adding the least MIG fragmentation over all GPUs, or None.

    Like FGD across nodes: the increase of each GPU's fragmentation is compared, so a
    request lands where it wastes least, which packs GPUs that are already in use.
    Ties go to the lowest GPU index, then the lowest start. GPUs whose model lacks the
    profile are skipped; `demand` names must exist on every GPU considered (pass None
    on mixed models to use each model's default demand).
    """
    best: tuple[float, int, int] | None = None
    for index, layout in enumerate(layouts):
        if not _offers(layout.geometry, profile):
            continue
        starts = valid_placements(layout, profile)
        if not starts:
            continue
        before = mig_fragmentation(layout, demand)
        for start in starts:
            delta = round(mig_fragmentation(layout.add(profile, start), demand) - before, _TIE)
            if best is None or (delta, index, start) < best:
                best = (delta, index, start)
    return None if best is None else (best[1], best[2])


def first_fit_placement(layouts: Sequence[MigLayout], profile: str) -> tuple[int, int] | None:
    """Baseline: the first GPU with room, at its lowest start slot."""
    for index, layout in enumerate(layouts):
        if _offers(layout.geometry, profile):
            start = first_fit(layout, profile)
            if start is not None:
                return index, start
    return None


def _offers(g: MigGeometry, profile: str) -> bool:
    try:
        g.profile(profile)
    except UnknownMigProfileError:
        return False
    return True
