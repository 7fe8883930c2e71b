"""MIG geometry: which GPU instances fit where on one GPU, and where to put the next one.

A MIG-capable GPU has a row of *memory slices* (8 on A100/H100/H200, 4 on A30)
and a budget of *compute slices* (7, or 4 on A30). A profile such as
`3g.40gb` owns a fixed number of each, and may only start at the memory
slices NVIDIA allows (`nvidia-smi mig -lgipp`): a 3g (size 4) starts at 0 or 4,
a 2g at 0, 2 or 4, a 1g at 0..6 (never 7). An instance at start `s` with size
`z` occupies memory slices [s, s + z). A `MigLayout` is a set of instances that
respects all of that, so an invalid layout cannot exist.

Where to put the next instance follows the FGD paper's idea, moved from
milli-GPU to memory slices: for an expected MIG demand (profile ->
probability), a free memory slice is a *fragment* for a profile when no valid
placement of that profile could cover it; the MIG fragmentation of a layout is
the expected number of free slices the demand could not use. `choose_start`
takes the placement that adds the least fragmentation; `first_fit` is the
baseline that takes the lowest start.

The catalogue (placement/data/mig_catalogue.json) is generated from the shared
reference by scripts/build_mig_catalogue.py; this module only reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from placement.catalogue import UnknownGpuModelError

RESOURCE_PREFIX = "nvidia.com/mig-"
"""Kubernetes resource name prefix of the device plugin's "mixed" strategy."""

_TIE = 9
"""Fragmentation values are compared after rounding to this many decimals, so that
float noise never overrides the documented tie-break (lowest start)."""


class MigError(ValueError):
    """A MIG question that cannot be answered as asked (unknown name, invalid layout, bad demand)."""


class UnknownMigModelError(MigError, UnknownGpuModelError):
    """A GPU model with no MIG geometry in the catalogue."""


class UnknownMigProfileError(MigError):
    """A profile name the GPU model does not offer."""


class InvalidMigLayoutError(MigError):
    """Instances that cannot coexist on one GPU; `problems` says why, one line each."""

    def __init__(self, model: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"invalid MIG layout on {model}: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile of one GPU model, with the slots it may occupy."""

    name: str
    compute_slices: int
    memory_slices: int
    starts: tuple[int, ...]
    """Memory slices an instance of this profile may start at."""
    size: int
    """Memory slices an instance occupies (equals `memory_slices`; `-lgipp`'s Size)."""
    max_count: int
    """Most instances of this profile on one GPU."""
    memory_mib: int
    memory_gib: float | None = None
    """As `nvidia-smi mig -lgip` reports it, where a capture exists."""
    memory_source: str = "reported"
    profile_id: int | None = None
    sm_count: int | None = None

    @property
    def media_extensions(self) -> bool:
        return self.name.endswith("+me")

    @property
    def resource_name(self) -> str:
        """The Kubernetes extended resource, e.g. `nvidia.com/mig-3g.40gb`."""
        return RESOURCE_PREFIX + self.name

    def mask(self, start: int) -> int:
        """Bit i set for every memory slice i an instance at `start` occupies."""
        return ((1 << self.size) - 1) << start


@dataclass(frozen=True, slots=True)
class MigGeometry:
    """The MIG geometry of one GPU model: slice totals and the profiles it offers."""

    model: str
    memory_slices: int
    compute_slices: int
    max_instances: int
    profiles: tuple[MigProfile, ...]
    aliases: tuple[str, ...] = ()
    product_names: tuple[str, ...] = ()
    memory_total_gb: float | None = None
    placement_verification: str = ""
    """'doc', 'capture' or 'inferred' (not observed on this model; see the reference)."""

    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    @property
    def full_mask(self) -> int:
        return (1 << self.memory_slices) - 1

    def profile(self, name: str | MigProfile) -> MigProfile:
        """Look a profile up by name (case-insensitive; `nvidia.com/mig-` prefix allowed)."""
        if isinstance(name, MigProfile):
            if name in self.profiles:
                return name
            name = name.name
        key = name.strip().lower().removeprefix(RESOURCE_PREFIX)
        for profile in self.profiles:
            if profile.name == key:
                return profile
        raise UnknownMigProfileError(
            f"{self.model} has no MIG profile {name!r}; its profiles: {', '.join(self.profile_names)}"
        )

    def index(self, profile: str | MigProfile) -> int:
        """Position of the profile in the catalogue (a stable tie-break)."""
        return self.profiles.index(self.profile(profile))


@dataclass(frozen=True, slots=True, order=True)
class MigInstance:
    """One GPU instance: a profile at a start slot (on the memory-slice axis)."""

    profile: str
    start: int

    def to_json(self) -> dict[str, str | int]:
        return {"profile": self.profile, "start": self.start}

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"


InstanceLike = MigInstance | tuple[str, int]


def _as_instance(item: InstanceLike) -> MigInstance:
    if isinstance(item, MigInstance):
        return item
    profile, start = item
    return MigInstance(str(profile), int(start))


@dataclass(frozen=True)
class MigLayout:
    """The MIG instances on one GPU: immutable, and valid by construction.

    Instances are kept sorted by start slot. Constructing a layout that breaks a
    rule (start not allowed for the profile, slices past the end, two instances on
    one memory slice, more compute slices than the GPU has, more instances of a
    profile than allowed, or more instances than the GPU allows) raises
    `InvalidMigLayoutError` listing every broken rule.
    """

    geometry: MigGeometry
    instances: tuple[MigInstance, ...] = ()
    _used: int = field(init=False, repr=False, compare=False, hash=False, default=0)
    _compute: int = field(init=False, repr=False, compare=False, hash=False, default=0)

    def __post_init__(self) -> None:
        items = [_as_instance(i) for i in self.instances]
        problems = self.problems(self.geometry, items)
        if problems:
            raise InvalidMigLayoutError(self.geometry.model, problems)
        geometry = self.geometry
        canonical = sorted(
            (MigInstance(geometry.profile(i.profile).name, i.start) for i in items),
            key=lambda i: (i.start, geometry.index(i.profile)),
        )
        used = compute = 0
        for instance in canonical:
            profile = geometry.profile(instance.profile)
            used |= profile.mask(instance.start)
            compute += profile.compute_slices
        object.__setattr__(self, "instances", tuple(canonical))
        object.__setattr__(self, "_used", used)
        object.__setattr__(self, "_compute", compute)

    # -- construction -------------------------------------------------------------

    @classmethod
    def empty(cls, gpu: MigGeometry | str) -> MigLayout:
        return cls(_geometry_of(gpu))

    @classmethod
    def of(cls, gpu: MigGeometry | str, *instances: InstanceLike) -> MigLayout:
        """`MigLayout.of("A100-80GB", ("4g.40gb", 0), ("3g.40gb", 4))`."""
        return cls(_geometry_of(gpu), tuple(_as_instance(i) for i in instances))

    @staticmethod
    def problems(geometry: MigGeometry, instances: Iterable[InstanceLike]) -> list[str]:
        """Every rule the instances break together on one GPU of this model; empty when valid."""
        problems: list[str] = []
        placed: list[tuple[MigInstance, MigProfile]] = []
        for instance in map(_as_instance, instances):
            try:
                profile = geometry.profile(instance.profile)
            except UnknownMigProfileError as exc:
                problems.append(str(exc))
                continue
            instance = MigInstance(profile.name, instance.start)
            end = instance.start + profile.size
            if instance.start not in profile.starts:
                allowed = ", ".join(map(str, profile.starts))
                problems.append(
                    f"{profile.name} cannot start at memory slice {instance.start} (allowed: {allowed})"
                )
            elif instance.start < 0 or end > geometry.memory_slices:
                problems.append(
                    f"{instance} would occupy memory slices [{instance.start}, {end}) "
                    f"but {geometry.model} has {geometry.memory_slices}"
                )
            placed.append((instance, profile))
        positioned = [
            (i, p) for i, p in placed if i.start >= 0 and i.start + p.size <= geometry.memory_slices
        ]
        for i, (a, pa) in enumerate(positioned):
            for b, pb in positioned[i + 1 :]:
                common = pa.mask(a.start) & pb.mask(b.start)
                if common:
                    problems.append(f"{a} and {b} overlap on memory slices {_ranges(common)}")
        compute = sum(p.compute_slices for _, p in placed)
        if compute > geometry.compute_slices:
            problems.append(
                f"instances need {compute} compute slices but {geometry.model} has {geometry.compute_slices}"
            )
        for profile in geometry.profiles:
            n = sum(1 for _, p in placed if p is profile)
            if n > profile.max_count:
                problems.append(f"{n} x {profile.name} but at most {profile.max_count} fit on one GPU")
        if len(placed) > geometry.max_instances:
            problems.append(
                f"{len(placed)} instances but {geometry.model} allows at most {geometry.max_instances}"
            )
        return problems

    # -- what is used and free ------------------------------------------------------

    @property
    def used_memory_mask(self) -> int:
        return self._used

    @property
    def used_compute_slices(self) -> int:
        return self._compute

    @property
    def free_compute_slices(self) -> int:
        return self.geometry.compute_slices - self._compute

    @property
    def free_memory_slices(self) -> int:
        return self.geometry.memory_slices - self._used.bit_count()

    def free_slices(self) -> tuple[int, ...]:
        """Indices of the free memory slices."""
        return tuple(i for i in range(self.geometry.memory_slices) if not self._used >> i & 1)

    def count(self, profile: str | MigProfile) -> int:
        name = self.geometry.profile(profile).name
        return sum(1 for i in self.instances if i.profile == name)

    def why_not(self, profile: str | MigProfile, start: int) -> str | None:
        """Why an instance of `profile` at `start` cannot be added; None when it can."""
        p = self.geometry.profile(profile)
        if start not in p.starts:
            return f"{p.name} cannot start at memory slice {start} (allowed: {', '.join(map(str, p.starts))})"
        blockers = [
            i for i in self.instances if self.geometry.profile(i.profile).mask(i.start) & p.mask(start)
        ]
        if blockers:
            return f"memory slices [{start}, {start + p.size}) hold {_names(blockers)}"
        if p.compute_slices > self.free_compute_slices:
            return f"{p.name} needs {p.compute_slices} compute slices, {self.free_compute_slices} are free"
        if self.count(p) >= p.max_count:
            return f"{p.max_count} x {p.name} already, the most one GPU takes"
        if len(self.instances) >= self.geometry.max_instances:
            return f"{len(self.instances)} instances already, the most {self.geometry.model} takes"
        return None

    def can_add(self, profile: str | MigProfile, start: int) -> bool:
        p = self.geometry.profile(profile)
        return (
            start in p.starts
            and not p.mask(start) & self._used
            and p.compute_slices <= self.free_compute_slices
            and len(self.instances) < self.geometry.max_instances
            and self.count(p) < p.max_count
        )

    # -- new layouts ----------------------------------------------------------------

    def add(self, profile: str | MigProfile, start: int) -> MigLayout:
        """This layout plus one instance; raises `InvalidMigLayoutError` if it does not fit."""
        p = self.geometry.profile(profile)
        return MigLayout(self.geometry, (*self.instances, MigInstance(p.name, start)))

    def remove(self, instance: InstanceLike) -> MigLayout:
        target = _as_instance(instance)
        target = MigInstance(self.geometry.profile(target.profile).name, target.start)
        if target not in self.instances:
            raise MigError(f"{target} is not in the layout {self}")
        return MigLayout(self.geometry, tuple(i for i in self.instances if i != target))

    # -- views ------------------------------------------------------------------------

    def to_json(self) -> list[dict[str, str | int]]:
        """`[{"profile": "3g.40gb", "start": 4}, ...]`, by start slot."""
        return [i.to_json() for i in self.instances]

    def slice_map(self) -> str:
        """One character per memory slice: the instance's compute slices, '.' when free.

        Instances are separated by '|': `4444|22|1|.` is 4g@0, 2g@4, 1g@6, slice 7 free.
        """
        cells: list[str] = []
        slot = 0
        by_start = {i.start: i for i in self.instances}
        while slot < self.geometry.memory_slices:
            instance = by_start.get(slot)
            if instance is None:
                cells.append(".")
                slot += 1
                continue
            profile = self.geometry.profile(instance.profile)
            cells.append(str(profile.compute_slices) * profile.size)
            slot += profile.size
        text = ""
        for i, cell in enumerate(cells):
            if i and not (cell == "." and cells[i - 1] == "."):
                text += "|"
            text += cell
        return text

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[MigInstance]:
        return iter(self.instances)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, MigInstance | tuple):
            return _as_instance(item) in self.instances  # type: ignore[arg-type]
        return False

    def __str__(self) -> str:
        return " + ".join(map(str, self.instances)) if self.instances else "(empty)"

    def __repr__(self) -> str:
        pairs = "".join(f", ({i.profile!r}, {i.start})" for i in self.instances)
        return f"MigLayout.of({self.geometry.model!r}{pairs})"


def _ranges(mask: int) -> str:
    """'[4, 6)' style text for the set bits of a slice mask."""
    parts: list[str] = []
    i = 0
    while mask >> i:
        if mask >> i & 1:
            j = i
            while mask >> j & 1:
                j += 1
            parts.append(f"[{i}, {j})")
            i = j
        else:
            i += 1
    return ", ".join(parts)


def _names(instances: Sequence[MigInstance]) -> str:
    return ", ".join(f"{i.profile} at start {i.start}" for i in instances)


# -- the catalogue -----------------------------------------------------------------------


def _normalise_model(name: str) -> str:
    key = "-".join(name.strip().replace("_", " ").split()).upper()
    return key.removeprefix("NVIDIA-")


@lru_cache(maxsize=1)
def _load() -> tuple[Mapping[str, MigGeometry], Mapping[str, str]]:
    text = resources.files("placement").joinpath("data", "mig_catalogue.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    models: dict[str, MigGeometry] = {}
    lookup: dict[str, str] = {}
    for entry in raw["models"]:
        profiles = tuple(
            MigProfile(
                name=p["name"],
                compute_slices=p["compute_slices"],
                memory_slices=p["memory_slices"],
                starts=tuple(p["placements"]["starts"]),
                size=p["placements"]["size"],
                max_count=p["max_count"],
                memory_mib=p["memory_mib"],
                memory_gib=p["memory_gib"],
                memory_source=p["memory_source"],
                profile_id=p["profile_id"],
                sm_count=p["sm_count"],
            )
            for p in entry["profiles"]
        )
        geometry = MigGeometry(
            model=entry["model"],
            memory_slices=entry["memory_slices"],
            compute_slices=entry["compute_slices"],
            max_instances=entry["max_gpu_instances"],
            profiles=profiles,
            aliases=tuple(entry["aliases"]),
            product_names=tuple(entry["product_names"]),
            memory_total_gb=entry["memory_total_gb"],
            placement_verification=entry["placement_verification"],
        )
        models[geometry.model] = geometry
        for name in (geometry.model, *geometry.aliases, *geometry.product_names):
            lookup.setdefault(_normalise_model(name), geometry.model)
    return MappingProxyType(models), MappingProxyType(lookup)


def load_catalogue() -> Mapping[str, MigGeometry]:
    """Every MIG-capable GPU model Tessellate knows, by canonical name (read-only)."""
    return _load()[0]


def known_models() -> tuple[str, ...]:
    return tuple(load_catalogue())


def geometry(model: str) -> MigGeometry:
    """The MIG geometry of a GPU model, by its reference name or an alias.

    Lookup ignores case, treats spaces as dashes and drops an `NVIDIA-` prefix, so
    `A100-40GB`, `NVIDIA A100-SXM4-40GB` and the gpu.product label value all work.
    """
    models, lookup = _load()
    canonical = lookup.get(_normalise_model(model))
    if canonical is None:
        raise UnknownMigModelError(f"unknown MIG GPU model {model!r}; known models: {', '.join(models)}")
    return models[canonical]


def _geometry_of(gpu: MigGeometry | str) -> MigGeometry:
    return gpu if isinstance(gpu, MigGeometry) else geometry(gpu)


# -- placements ------------------------------------------------------------------------


def valid_placements(layout: MigLayout, profile: str | MigProfile) -> tuple[int, ...]:
    """Start slots where one more instance of `profile` fits on this layout, lowest first."""
    p = layout.geometry.profile(profile)
    if (
        p.compute_slices > layout.free_compute_slices
        or len(layout) >= layout.geometry.max_instances
        or layout.count(p) >= p.max_count
    ):
        return ()
    used = layout.used_memory_mask
    return tuple(s for s in p.starts if not p.mask(s) & used)


def maximal_layouts(gpu: MigGeometry | str, profiles: Iterable[str] | None = None) -> tuple[MigLayout, ...]:
    """Every valid layout to which no further instance can be added, in a fixed order.

    `profiles` restricts the profiles considered (default: all of the model's). The
    order is lexicographic over instances sorted by start slot, larger profiles
    first at the same start: 7g@0 leads, all-1g layouts come last.
    """
    g = _geometry_of(gpu)
    names = tuple(g.profile(n).name for n in profiles) if profiles is not None else g.profile_names
    return _maximal(g, tuple(dict.fromkeys(names)))


@lru_cache(maxsize=64)
def _maximal(g: MigGeometry, names: tuple[str, ...]) -> tuple[MigLayout, ...]:
    chosen = [g.profile(n) for n in names]
    candidates = sorted(
        ((s, p) for p in chosen for s in p.starts),
        key=lambda c: (c[0], -c[1].size, -c[1].compute_slices, g.index(c[1])),
    )
    found: list[tuple[tuple[int, ...], MigLayout]] = []

    def walk(layout: MigLayout, first: int, path: tuple[int, ...]) -> None:
        for i in range(first, len(candidates)):
            start, profile = candidates[i]
            if layout.can_add(profile, start):
                walk(layout.add(profile, start), i + 1, (*path, i))
        if not any(layout.can_add(p, s) for s, p in candidates):
            found.append((path, layout))

    walk(MigLayout(g), 0, ())
    found.sort(key=lambda item: item[0])
    return tuple(layout for _, layout in found)


# -- MIG fragmentation (FGD on memory slices) ------------------------------------------------


def default_demand(gpu: MigGeometry | str) -> dict[str, float]:
    """Equal weight on every profile without media extensions (`+me` has its base's shape)."""
    g = _geometry_of(gpu)
    names = [p.name for p in g.profiles if not p.media_extensions] or list(g.profile_names)
    return {n: 1.0 / len(names) for n in names}


def _weights(g: MigGeometry, demand: Mapping[str, float] | None) -> tuple[tuple[MigProfile, float], ...]:
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
    for profile, weight in _weights(g, demand):
        total += weight * (free & ~usable_mask(layout, profile)).bit_count()
    return total


def mig_fragmentation_ratio(layout: MigLayout, demand: Mapping[str, float] | None = None) -> float:
    """Share of the free memory slices that the demand could not use (0 when nothing is free)."""
    free = layout.free_memory_slices
    return mig_fragmentation(layout, demand) / free if free else 0.0


def _score(layout: MigLayout, demand: Mapping[str, float] | None) -> float:
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
    return min(starts, key=lambda s: (_score(layout.add(profile, s), demand), s))


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


# -- planning a whole GPU ---------------------------------------------------------------------


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
    g = _geometry_of(gpu)
    base = in_use if in_use is not None else MigLayout(g)
    if base.geometry != g:
        raise MigError(f"the in-use layout is for {base.geometry.model}, not {g.model}")
    wanted = _counts(g, demand_counts)
    _weights(g, demand)  # reject a bad demand before searching
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
            key = (_score(layout, demand), tuple((x.start, g.index(x.profile)) for x in layout))
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
                return f"{needs}; {_names(blockers)} {verb} in use"
            return (
                f"{profile.name} can only occupy memory slices [{start}, {start + profile.size}); "
                f"{_names(blockers)} {verb} in use there"
            )
        per_start = "; ".join(
            f"[{s}, {s + profile.size}) holds {_names(blockers)}" for s, blockers in overlapping.items()
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
    free = _ranges(g.full_mask & ~base.used_memory_mask) or "none"
    text = (
        f"no arrangement of {breakdown} fits the free memory slices {free} of {g.model}{_in_use_note(base)}"
    )
    return f"{text}: {where}" if where else text
