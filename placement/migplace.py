"""Placing MIG requests: which nodes can take `k` instances of a profile, and where they go.

Options on a GPU are its free existing instances of the profile (static and dynamic
nodes) and, on dynamic nodes, new instances at any valid start of a GPU that is in
MIG mode or idle. Existing instances are always preferred (no reconfiguration).
Among new ones, the MIG-aware choice takes the placement whose GPU's MIG
fragmentation grows least (`placement.migfrag.choose_placement`, FGD on memory slices);
the baseline takes the first fit. Nodes are compared the same way: a node's score
is the least fragmentation growth any of its GPUs offers, memoised per GPU layout,
so a cycle costs a table look-up per MIG GPU, and only MIG nodes are visited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
from tessellate.placement.mig import MigGeometry, MigInstance, MigLayout, valid_placements
from tessellate.placement.migfrag import choose_placement, first_fit_placement, mig_fragmentation
from tessellate.placement.migplanner import MigPlanFailure, plan_layout
from tessellate.placement.model import MILLI_PER_GPU, MigPlan, MigSlot, Request

if TYPE_CHECKING:  # the state's own checks use `mig_room`
    from tessellate.placement.state import ClusterState

MigChoice = Literal["aware", "firstfit"]
MIG_CHOICES: tuple[MigChoice, ...] = ("aware", "firstfit")
_EXISTING = -1e9
"""Score of an option that reuses an existing instance: better than any new one."""


# -- per-GPU facts, memoised by layout --------------------------------------------------------


@lru_cache(maxsize=65536)
def _new_room(layout: MigLayout, profile: str) -> int:
    """How many new instances of `profile` fit on `layout` (greedy lowest start; starts of a
    profile are aligned to its size, so greedy is optimal for one profile)."""
    count = 0
    while True:
        starts = valid_placements(layout, profile)
        if not starts:
            return count
        layout = layout.add(profile, starts[0])
        count += 1


@lru_cache(maxsize=65536)
def _best_new(layout: MigLayout, profile: str, demand: tuple[tuple[str, float], ...] | None) -> float:
    """Least fragmentation growth of one new instance of `profile` on `layout` (inf: none fits)."""
    starts = valid_placements(layout, profile)
    if not starts:
        return np.inf
    weights = None if demand is None else dict(demand)
    before = mig_fragmentation(layout, weights)
    return min(round(mig_fragmentation(layout.add(profile, s), weights) - before, 9) for s in starts)


@lru_cache(maxsize=1024)
def _demand_for(g: MigGeometry, demand: tuple[tuple[str, float], ...] | None) -> tuple | None:
    """The expected demand restricted to profiles this model offers (None: the model's default)."""
    if demand is None:
        return None
    names = set(g.profile_names)
    kept = tuple((n, w) for n, w in demand if n in names and w > 0)
    return kept or None


def _offers(g: MigGeometry, profile: str) -> bool:
    return profile in g.profile_names


@dataclass(frozen=True)
class _Gpu:
    layout: MigLayout
    free: tuple[MigInstance, ...]
    """Existing free instances of the profile, by start."""
    new_ok: bool
    """New instances may be created here (dynamic node, GPU in MIG mode or idle)."""


def _gpus(state: ClusterState, node: int, profile: str) -> list[_Gpu]:
    book = state.mig
    dynamic = bool(book.dynamic[node])
    out = []
    for gpu, (layout, busy) in enumerate(book.slots_of(node)):
        free = tuple(i for i in layout if i.profile == profile and i not in busy)
        new_ok = dynamic and (len(layout) > 0 or state.gpu_left[node, gpu] == MILLI_PER_GPU)
        out.append(_Gpu(layout, free, new_ok))
    return out


# -- feasibility ----------------------------------------------------------------------------


def mig_room(state: ClusterState, profile: str) -> np.ndarray:
    """Per node, how many instances of `profile` it could still give one pod (0 off MIG nodes).

    Cached per profile and node version: a placement changes one node."""
    cache = state.__dict__.setdefault("_mig_room_cache", {})
    entry = cache.get(profile)
    n = len(state)
    if entry is None:
        entry = (np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
        cache[profile] = entry
    values, versions = entry
    mig_nodes = np.flatnonzero(state.mig.capable)
    stale = mig_nodes[versions[mig_nodes] != state.version[mig_nodes]]
    for node in stale.tolist():
        g = state.mig.geometry[node]
        room = 0
        if _offers(g, profile):
            for gpu in _gpus(state, node, profile):
                room += len(gpu.free) + (_new_room(gpu.layout, profile) if gpu.new_ok else 0)
        values[node] = room
        versions[node] = state.version[node]
    return values


# -- choosing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MigDecision:
    node: int
    slots: tuple[MigSlot, ...]
    plans: tuple[MigPlan, ...]


class MigChooser:
    """Node, GPUs and start slots for MIG requests: `aware` (least MIG fragmentation) or `firstfit`.

    `demand` is the expected MIG demand (profile -> weight) that fragmentation is measured
    against; profiles a GPU model lacks are ignored for it; None: each model's default.
    """

    def __init__(self, choice: MigChoice = "aware", demand: Mapping[str, float] | None = None):
        if choice not in MIG_CHOICES:
            raise ValueError(f"unknown MIG choice {choice!r}; known: {', '.join(MIG_CHOICES)}")
        self.choice = choice
        self.demand = None if demand is None else tuple(sorted((str(k), float(v)) for k, v in demand.items()))

    def node_scores(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        """Lower is better: the least fragmentation growth of one more instance per node."""
        profile = request.mig_profile
        scores = np.full(len(nodes), np.inf)
        for k, node in enumerate(nodes.tolist()):
            demand = _demand_for(state.mig.geometry[node], self.demand)
            best = np.inf
            for gpu in _gpus(state, node, profile):
                if gpu.free:
                    best = _EXISTING
                    break
                if gpu.new_ok:
                    best = min(best, _best_new(gpu.layout, profile, demand))
            scores[k] = best
        return scores

    def choose(self, state: ClusterState, request: Request, feasible: np.ndarray) -> MigDecision:
        """Where the request goes, among `feasible` nodes (each has room, see `mig_room`)."""
        if self.choice == "firstfit" or len(feasible) == 1:
            node = int(feasible[0])
        else:
            # Ties (e.g. every node would open an idle GPU) go to the node with the fewest idle
            # GPUs, keeping whole nodes free for multi-GPU pods; then to the lowest index.
            scores = self.node_scores(state, request, feasible)
            node = int(feasible[np.lexsort((state.gpu_free_count[feasible], scores))[0]])
        return self._on_node(state, node, request)

    def _on_node(self, state: ClusterState, node: int, request: Request) -> MigDecision:
        profile = request.mig_profile
        gpus = _gpus(state, node, profile)
        layouts = [g.layout for g in gpus]
        before = list(layouts)
        taken: set[tuple[int, MigInstance]] = set()
        slots: list[MigSlot] = []
        demand = _demand_for(state.mig.geometry[node], self.demand)
        for _ in range(request.mig_count):
            reuse = next(
                ((i, inst) for i, g in enumerate(gpus) for inst in g.free if (i, inst) not in taken), None
            )
            if reuse is not None:
                taken.add(reuse)
                slots.append(MigSlot(reuse[0], reuse[1].profile, reuse[1].start))
                continue
            open_gpus = [i for i, g in enumerate(gpus) if g.new_ok]
            candidates = [layouts[i] for i in open_gpus]
            if self.choice == "aware":
                picked = choose_placement(candidates, profile, None if demand is None else dict(demand))
            else:
                picked = first_fit_placement(candidates, profile)
            if picked is None:
                raise ValueError(f"node {state.names[node]} has no room for {request.describe()}")
            gpu, start = open_gpus[picked[0]], picked[1]
            layouts[gpu] = layouts[gpu].add(profile, start)
            slots.append(MigSlot(gpu, profile, start))
        plans = tuple(
            MigPlan(state.names[node], gpu, before[gpu], layouts[gpu])
            for gpu in range(len(layouts))
            if layouts[gpu] != before[gpu]
        )
        return MigDecision(node, tuple(slots), plans)


# -- planning a GPU for pending demand ----------------------------------------------------------


def plan_gpu(
    state: ClusterState,
    node: int,
    gpu: int,
    counts: Mapping[str, int],
    demand: Mapping[str, float] | None = None,
) -> MigPlan | MigPlanFailure:
    """A new layout for one GPU that keeps its instances in use and adds `counts` more.

    Free instances may be dropped (repartitioning the free part); the plan is a value
    for a caller to publish (mig-manager's `nvidia.com/mig.config`, or a per-GPU
    annotation), not a change of the cluster state.
    """
    if node not in state.mig.layouts:
        return MigPlanFailure(f"node {state.names[node]} takes no MIG instances")
    layout = state.mig.layouts[node][gpu]
    if not len(layout) and state.gpu_left[node, gpu] != MILLI_PER_GPU:
        return MigPlanFailure(f"GPU {gpu} of {state.names[node]} runs whole-GPU or fractional work")
    in_use = state.mig.used_layout(node, gpu)
    g = layout.geometry
    weights = _demand_for(g, None if demand is None else tuple(sorted(demand.items())))
    planned = plan_layout(g, counts, in_use=in_use, demand=None if weights is None else dict(weights))
    if isinstance(planned, MigPlanFailure):
        return planned
    return MigPlan(state.names[node], gpu, layout, planned)
