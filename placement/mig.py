"""MIG geometry: which GPU instances fit where on one GPU, and where to put the next one.

A MIG-capable GPU has a row of *memory slices* (8 on A100/H100/H200, 4 on A30)
and a budget of *compute slices* (7, or 4 on A30). A profile such as
`3g.40gb` owns a fixed number of each, and may only start at the memory
slices NVIDIA allows (`nvidia-smi mig -lgipp`): a 3g (size 4) starts at 0 or 4,
a 2g at 0, 2 or 4, a 1g at 0..6 (never 7). An instance at start `s` with size
`z` occupies memory slices [s, s + z). A `MigLayout` is a set of instances that
respects all of that, so an invalid layout cannot exist.

Where to put the next instance is `placement.migfrag` (FGD on memory slices); how to
lay out a whole GPU for a demand is `placement.migplanner`.

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

from tessellate.placement.catalogue import UnknownGpuModelError

RESOURCE_PREFIX = "nvidia.com/mig-"
"""Kubernetes resource name prefix of the device plugin's "mixed" strategy."""


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
        return cls(as_geometry(gpu))

    @classmethod
    def of(cls, gpu: MigGeometry | str, *instances: InstanceLike) -> MigLayout:
        """`MigLayout.of("A100-80GB", ("4g.40gb", 0), ("3g.40gb", 4))`."""
        return cls(as_geometry(gpu), tuple(_as_instance(i) for i in instances))

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
                    problems.append(f"{a} and {b} overlap on memory slices {describe_slices(common)}")
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
            return f"memory slices [{start}, {start + p.size}) hold {describe_instances(blockers)}"
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


def describe_slices(mask: int) -> str:
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


def describe_instances(instances: Sequence[MigInstance]) -> str:
    return ", ".join(f"{i.profile} at start {i.start}" for i in instances)


# -- the catalogue -----------------------------------------------------------------------


def _normalise_model(name: str) -> str:
    key = "-".join(name.strip().replace("_", " ").split()).upper()
    return key.removeprefix("NVIDIA-")


@lru_cache(maxsize=1)
def _load() -> tuple[Mapping[str, MigGeometry], Mapping[str, str]]:
    catalogue = resources.files("tessellate.placement").joinpath("data", "mig_catalogue.json")
    text = catalogue.read_text(encoding="utf-8")
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


def as_geometry(gpu: MigGeometry | str) -> MigGeometry:
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
    g = as_geometry(gpu)
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
