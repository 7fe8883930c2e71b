"""MIG bookkeeping of the cluster state: per GPU, the instances that exist and those in use.

Owned by `ClusterState`, written only through its `allocate` / `release`. A GPU
holding MIG instances offers no milli-GPU to whole or fractional pods (its
`gpu_left` is 0), and a GPU with whole or fractional work takes no MIG instance:
the two kinds never share a GPU, as on real hardware (MIG mode is per GPU).

On a dynamic node an allocation may create instances (in a GPU that is in MIG
mode, or an idle one that switches to it); the release destroys exactly those,
so releasing restores the exact prior state. Static nodes only hand out existing
free instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tessellate.placement.mig import MigGeometry, MigInstance, MigLayout, geometry
from tessellate.placement.model import MILLI_PER_GPU, Assignment, MigPlan, NodeSpec, mig_profile_milli


class MigAllocationError(ValueError):
    """A MIG allocation that breaks a MIG rule; nothing was written (ClusterState re-raises it)."""


@dataclass(frozen=True, slots=True)
class MigChange:
    """What one MIG allocation does, worked out before anything is written."""

    layouts: tuple[tuple[int, MigLayout], ...]
    """(GPU, new layout) for every GPU whose instances change."""
    created: tuple[tuple[int, MigInstance], ...]
    busy: tuple[tuple[int, MigInstance], ...]
    plans: tuple[MigPlan, ...]


class MigBook:
    """Layouts and busy instances of every MIG-capable node (the others are not stored)."""

    def __init__(self, nodes: Sequence[NodeSpec]):
        n = len(nodes)
        self.capable = np.array([node.mig is not None for node in nodes], dtype=bool)
        self.dynamic = np.array([node.mig is not None and node.mig.dynamic for node in nodes], dtype=bool)
        self.geometry: dict[int, MigGeometry] = {}
        self.layouts: dict[int, list[MigLayout]] = {}
        self.busy: dict[int, list[frozenset[MigInstance]]] = {}
        self.created: dict[str, tuple[tuple[int, MigInstance], ...]] = {}
        self.mode_gpus = 0
        """GPUs in MIG mode (holding at least one instance) over the whole cluster."""
        self.used_milli = 0
        """Compute share of the busy instances, in milli-GPU (`mig_profile_milli`)."""
        for i in np.flatnonzero(self.capable):
            node = nodes[i]
            assert node.mig is not None
            g = geometry(node.gpu_model)
            self.geometry[i] = g
            self.layouts[i] = [node.mig.layout(k) or MigLayout(g) for k in range(node.gpu_count)]
            self.busy[i] = [frozenset() for _ in range(node.gpu_count)]
            self.mode_gpus += sum(1 for layout in self.layouts[i] if len(layout))
        self.size = n

    def in_mig_mode(self, node: int) -> np.ndarray:
        """Per GPU of `node`: True when it holds MIG instances (so no whole/fraction work)."""
        return np.array([len(layout) > 0 for layout in self.layouts.get(node, ())], dtype=bool)

    # -- checking and writing ------------------------------------------------------------

    def check(self, a: Assignment, gpu_left: np.ndarray) -> MigChange:
        """Work out the allocation; raise MigAllocationError naming the broken rule."""
        req, node, where = a.request, a.node, f"pod {a.pod} on {a.node_name}"
        if node not in self.layouts:
            raise MigAllocationError(f"{where}: the node takes no MIG instances")
        g = self.geometry[node]
        try:
            profile = g.profile(req.mig_profile)
        except ValueError as exc:
            raise MigAllocationError(f"{where}: {exc}") from None
        if len(a.mig) != req.mig_count:
            raise MigAllocationError(f"{where}: {len(a.mig)} MIG instances for {req.mig_count} requested")
        if a.gpus:
            raise MigAllocationError(f"{where}: a MIG request lists whole GPUs {a.gpus}")
        layouts = dict(enumerate(self.layouts[node]))
        busy = {k: set(v) for k, v in enumerate(self.busy[node])}
        created: list[tuple[int, MigInstance]] = []
        taken: list[tuple[int, MigInstance]] = []
        for slot in a.mig:
            if not 0 <= slot.gpu < len(layouts):
                raise MigAllocationError(f"{where}: GPU {slot.gpu} does not exist")
            if slot.profile != profile.name:
                raise MigAllocationError(f"{where}: slot {slot} is not the requested {profile.name}")
            instance = slot.instance
            layout = layouts[slot.gpu]
            if instance in layout.instances:
                if instance in busy[slot.gpu]:
                    raise MigAllocationError(f"{where}: {instance} on GPU {slot.gpu} is in use")
            elif not self.dynamic[node]:
                raise MigAllocationError(
                    f"{where}: GPU {slot.gpu} has no {instance} instance (static MIG: layout {layout})"
                )
            else:
                if not len(layout) and gpu_left[slot.gpu] != MILLI_PER_GPU:
                    raise MigAllocationError(
                        f"{where}: GPU {slot.gpu} runs whole-GPU or fractional work, it cannot enter MIG mode"
                    )
                reason = layout.why_not(profile, slot.start)
                if reason is not None:
                    raise MigAllocationError(f"{where}: cannot create {instance} on GPU {slot.gpu}: {reason}")
                layouts[slot.gpu] = layout.add(profile, slot.start)
                created.append((slot.gpu, instance))
            busy[slot.gpu].add(instance)
            taken.append((slot.gpu, instance))
        changed = sorted({gpu for gpu, _ in created})
        plans = tuple(MigPlan(a.node_name, gpu, self.layouts[node][gpu], layouts[gpu]) for gpu in changed)
        if a.mig_plans and tuple(a.mig_plans) != plans:  # none given: derived here (a rebuild)
            raise MigAllocationError(f"{where}: the MIG plans do not match the instances it creates")
        return MigChange(
            layouts=tuple((gpu, layouts[gpu]) for gpu in changed),
            created=tuple(created),
            busy=tuple(taken),
            plans=plans,
        )

    def apply(self, a: Assignment, change: MigChange, gpu_left: np.ndarray) -> bool:
        """Write an allocation worked out by `check`; True when a GPU entered MIG mode."""
        node = a.node
        switched = False
        for gpu, layout in change.layouts:
            if not len(self.layouts[node][gpu]):
                gpu_left[gpu] = 0
                self.mode_gpus += 1
                switched = True
            self.layouts[node][gpu] = layout
        for gpu, instance in change.busy:
            self.busy[node][gpu] = self.busy[node][gpu] | {instance}
        self.created[a.pod] = change.created
        self.used_milli += mig_profile_milli(a.request.mig_profile) * a.request.mig_count
        return switched

    def undo(self, a: Assignment, gpu_left: np.ndarray) -> bool:
        """Release a MIG allocation: free its instances, destroy those it created; True when
        a GPU left MIG mode (its milli-GPU is whole again)."""
        node = a.node
        for slot in a.mig:
            self.busy[node][slot.gpu] = self.busy[node][slot.gpu] - {slot.instance}
        switched = False
        for gpu, instance in self.created.pop(a.pod, ()):
            layout = self.layouts[node][gpu].remove(instance)
            self.layouts[node][gpu] = layout
            if not len(layout):
                gpu_left[gpu] = MILLI_PER_GPU
                self.mode_gpus -= 1
                switched = True
        self.used_milli -= mig_profile_milli(a.request.mig_profile) * a.request.mig_count
        return switched

    # -- views ---------------------------------------------------------------------------

    def slots_of(self, node: int) -> list[tuple[MigLayout, frozenset[MigInstance]]]:
        return list(zip(self.layouts[node], self.busy[node], strict=True))

    def used_layout(self, node: int, gpu: int) -> MigLayout:
        """Only the busy instances (what a reconfiguration must keep)."""
        layout = self.layouts[node][gpu]
        return MigLayout(layout.geometry, tuple(sorted(self.busy[node][gpu])))
