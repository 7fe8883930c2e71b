"""One scheduling cycle: filter, score (cached per node), pick, choose devices.

Both the simulator and the live scheduler drive placement through `Placer`,
so a change of scoring is a change in one place.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from tessellate.placement.checks import ALL, UNROUTED, needs_at_least
from tessellate.placement.fit import explain, feasible_mask
from tessellate.placement.migplace import MigChooser
from tessellate.placement.model import Assignment, Decision, Request, Unschedulable
from tessellate.placement.policies.base import Policy
from tessellate.placement.state import ClusterState
from tessellate.placement.timeslice import refusal, routes


class ScoreCache:
    """Per request score key (its shape, plus GPU memory if bounded), each node's last score
    and the node version it was computed at.

    A placement changes one node, so nearly every score can be reused for the next
    pod of the same shape; only nodes whose version moved are rescored.
    """

    def __init__(self, state: ClusterState):
        self.state = state
        self._entries: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def scores(self, policy: Policy, request: Request, nodes: np.ndarray) -> np.ndarray:
        entry = self._entries.get(request.score_key)
        if entry is None:
            n = len(self.state)
            entry = (np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
            self._entries[request.score_key] = entry
        values, versions = entry
        stale = nodes[versions[nodes] != self.state.version[nodes]]
        if stale.size:
            values[stale] = policy.score(self.state, request, stale)
            versions[stale] = self.state.version[stale]
        return values[nodes]


class Placer:
    """Runs scheduling cycles of one policy against one cluster state.

    MIG requests are placed by `mig` (default: MIG-fragmentation aware with each GPU
    model's default demand); the policy places everything else.
    """

    def __init__(self, state: ClusterState, policy: Policy, mig: MigChooser | None = None):
        self.state = state
        self.policy = policy
        self.mig = mig if mig is not None else MigChooser()
        policy.bind(state)
        self._cache = ScoreCache(state) if policy.pure else None

    def place(self, pod: str, request: Request, eligible: np.ndarray | None = None) -> Decision:
        """Decide where `pod` goes; the caller commits with `state.allocate`.

        `eligible` (bool per node) is what filters outside the core let through,
        e.g. the scheduler's taints and node affinity; an explanation then counts
        resource reasons only among those nodes. On time-sliced nodes the assignment
        carries the request as translated there (one slice, `placement.timeslice`).
        """
        state = self.state
        if request.is_cpu_only or not state.time_sliced:
            return self._place(pod, request, eligible)
        reasons: Counter[str] = Counter()
        for group, translated in routes(state, request):
            if eligible is not None:
                group = group & eligible
            if not group.any():
                continue
            if translated is None:
                reasons[refusal(request)] += int(group.sum())
                continue
            decision = self._place(pod, translated, group)
            if isinstance(decision, Assignment):
                return decision
            reasons += decision.reasons
        return Unschedulable(node_count=len(state), reasons=reasons)

    def fits(self, request: Request, nodes: np.ndarray | None = None) -> np.ndarray:
        """Per node (of `nodes`, default all): whether `request` fits there now as `place` would
        put it (translated on time-sliced nodes). True somewhere exactly when `place` assigns."""
        state = self.state
        if request.is_cpu_only or not state.time_sliced:
            return feasible_mask(state, request, ALL if nodes is None else nodes)
        where = np.arange(len(state)) if nodes is None else nodes
        out = np.zeros(len(where), dtype=bool)
        for group, translated in routes(state, request):
            inside = group[where]
            if translated is not None and inside.any():
                out[inside] = feasible_mask(state, translated, where[inside])
        return out

    def needs_at_least(self, big: Request, small: Request) -> bool:
        """True when `big` can fit only where `small` fits, whatever the state (so `small` failing
        dooms `big`): on every kind of node, as `place` translates them for it."""
        for (_, big_there), (_, small_there) in zip(
            routes(self.state, big), routes(self.state, small), strict=True
        ):
            if big_there is None:
                continue  # big never goes to these nodes
            if small_there is None or not needs_at_least(big_there, small_there, UNROUTED):
                return False
        return True

    def _place(self, pod: str, request: Request, eligible: np.ndarray | None) -> Decision:
        state = self.state
        mask = feasible_mask(state, request)
        if eligible is not None:
            mask &= eligible
        feasible = np.flatnonzero(mask)
        if feasible.size == 0:
            return explain(state, request, eligible)
        if request.is_mig:
            chosen = self.mig.choose(state, request, feasible)
            return Assignment(
                pod=pod,
                node=chosen.node,
                node_name=state.names[chosen.node],
                request=request,
                mig=chosen.slots,
                mig_plans=chosen.plans,
            )
        if feasible.size == 1:
            node = int(feasible[0])
        else:
            if self._cache is not None:
                scores = self._cache.scores(self.policy, request, feasible)
            else:
                scores = self.policy.score(state, request, feasible)
            node = int(feasible[np.argmax(self.policy.normalize(scores))])
        gpus = self.policy.choose_gpus(state, node, request)
        return Assignment(pod=pod, node=node, node_name=state.names[node], request=request, gpus=gpus)
