"""A node's static MIG partitions, read from what the cluster already publishes.

Counts come from allocatable `nvidia.com/mig-<profile>` (NVIDIA's "mixed" strategy,
where `nvidia.com/gpu` counts only the GPUs outside MIG mode). Positions come from
the node agent's `tessellate.dev/gpu-devices` annotation when it lists MIG
instances; otherwise the layout is the canonical one mig-parted would create for
those counts (`plan_layout` on an empty GPU), on MIG GPUs numbered after the whole
ones. The number of MIG GPUs is the `nvidia.com/gpu.count` label minus the whole
GPUs when that label exists, else the fewest GPUs that can hold the counts.

A node whose agent runs with `--mig-dynamic` says so in the devices annotation
(`"mig_dynamic": true`); its layouts then come from that annotation alone (every GPU,
in MIG mode or not) and the core may plan new instances there, which the scheduler
publishes for the agent (`scheduler/migplans.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tessellate.placement.mig import MigError, MigGeometry, MigLayout, geometry
from tessellate.placement.migplanner import plan_layout

from tessellate.wire.devices import DEVICES
from tessellate.wire.podspec import MIG_PREFIX

GPU_COUNT_LABEL = "nvidia.com/gpu.count"
MAX_MIG_GPUS = 16


@dataclass(frozen=True)
class MigInventory:
    """Per GPU index, its partition (None: not in MIG mode); `gpu_count` covers every index."""

    layouts: tuple[MigLayout | None, ...]
    gpu_count: int
    problem: str | None = None


def mig_counts(allocatable: dict[str, Any], parse: Any) -> dict[str, int]:
    """Profile -> allocatable instances (positive counts only; unparsable ones are skipped)."""
    out: dict[str, int] = {}
    for name, raw in allocatable.items():
        if name.startswith(MIG_PREFIX):
            try:
                n = parse(raw)
            except ValueError:
                continue
            if n > 0:
                out[name.removeprefix(MIG_PREFIX)] = n
    return out


def mig_dynamic(annotations: dict[str, str]) -> bool:
    """Does this node's agent create MIG instances on request (`--mig-dynamic`)?"""
    try:
        return json.loads(annotations.get(DEVICES) or "{}").get("mig_dynamic") is True
    except (ValueError, AttributeError):
        return False


def read_mig(
    counts: dict[str, int],
    whole_gpus: int,
    model: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    dynamic: bool = False,
) -> MigInventory | None:
    """The node's MIG partitions, or None when it has no MIG instances and cannot make any
    (a problem says why MIG instances could not be used, e.g. a model without MIG geometry)."""
    if not counts and not dynamic:
        return None
    try:
        g = geometry(model)
    except MigError:
        if not counts:
            return None  # a dynamic agent on GPUs without MIG: nothing to plan
        return MigInventory(
            (), whole_gpus, f"MIG resources on GPU model {model or 'unknown'!r} without MIG geometry"
        )
    known = _from_agent(g, annotations, every_gpu=dynamic)
    if known is not None or not counts:
        return known
    return _canonical(g, counts, whole_gpus, labels)


def _from_agent(g: MigGeometry, annotations: dict[str, str], every_gpu: bool = False) -> MigInventory | None:
    """Layouts from the agent's annotation; `every_gpu`: also when no GPU is in MIG mode yet
    (a dynamic node lists all its GPUs, each a layout to plan into or None)."""
    raw = annotations.get(DEVICES)
    if not raw:
        return None
    try:
        gpus = json.loads(raw)["gpus"]
        layouts: list[MigLayout | None] = [None] * len(gpus)
        for entry in gpus:
            mig = entry.get("mig") or {}
            if mig.get("enabled") and mig.get("instances"):
                instances = [(i["profile"], int(i["start"])) for i in mig["instances"]]
                layouts[int(entry["index"])] = MigLayout.of(g, *instances)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        return MigInventory(
            (), 0, f"annotation {DEVICES} has no usable MIG layout ({exc}); assuming mig-parted's"
        )
    if not any(layouts) and not (every_gpu and layouts):
        return None
    return MigInventory(tuple(layouts), len(layouts))


def _canonical(
    g: MigGeometry, counts: dict[str, int], whole_gpus: int, labels: dict[str, str]
) -> MigInventory:
    try:
        total = int(labels.get(GPU_COUNT_LABEL, ""))
    except ValueError:
        total = 0
    tries = [total - whole_gpus] if total > whole_gpus else list(range(1, MAX_MIG_GPUS + 1))
    instances = sorted(
        ((g.profile(p), n) for p, n in counts.items() if p in g.profile_names), key=lambda x: -x[0].size
    )
    unknown = sorted(p for p in counts if p not in g.profile_names)
    for m in tries:
        shares: list[dict[str, int]] = [{} for _ in range(m)]
        k = 0
        for profile, n in instances:
            for _ in range(n):
                shares[k % m][profile.name] = shares[k % m].get(profile.name, 0) + 1
                k += 1
        layouts = [plan_layout(g, share) for share in shares]
        if all(isinstance(layout, MigLayout) for layout in layouts):
            problem = f"{g.model} has no MIG profile {', '.join(unknown)}" if unknown else None
            return MigInventory((None,) * whole_gpus + tuple(layouts), whole_gpus + m, problem)  # type: ignore[arg-type]
    return MigInventory((), whole_gpus, f"allocatable MIG instances {counts} fit no layout of {g.model} GPUs")
