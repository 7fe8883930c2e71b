"""The timed replay's pending queue: waiting pods, and which of them can fit now.

Pods are grouped by identical request; each group keeps arrival order. Every
distinct request gets an id and, for each kind of node `Placer` distinguishes
(`placement.timeslice.routes`: ordinary nodes, then each time-slicing replica
count), a row holding the request as translated there in a
`placement.requests.RequestTable`. A retry pass thus asks, in one vectorised step
per kind of node, the filter's own question (`placement.checks`) of every pending
request on the nodes released since they last did not fit.
"""

from __future__ import annotations

import numpy as np

from placement import Placer, Request
from placement.requests import RequestTable
from placement.timeslice import routes


class PendingQueue:
    """Pending pods by request, with the per-request rows the retry pass checks."""

    def __init__(self, placer: Placer) -> None:
        self.placer = placer
        self.groups: dict[Request, dict[str, int]] = {}  # request -> {pod: arrival seq}
        self.request_of: dict[str, Request] = {}
        self.since: dict[str, float] = {}  # pod -> creation time
        self.ids: dict[Request, int] = {}
        self.requests: list[Request] = []
        self.waiting = np.zeros(16, dtype=np.int64)  # pods pending per id
        state = placer.state
        self.tables = [(group, RequestTable(state)) for _, group in state.replica_groups]
        self._dooms: dict[tuple[int, int], bool] = {}

    def __len__(self) -> int:
        return len(self.request_of)

    def __contains__(self, pod: str) -> bool:
        return pod in self.request_of

    def _id(self, request: Request) -> int:
        rid = self.ids.get(request)
        if rid is None:
            rid = self.ids[request] = len(self.requests)
            self.requests.append(request)
            if rid >= len(self.waiting):
                self.waiting = np.concatenate([self.waiting, np.zeros_like(self.waiting)])
            for (_, table), (_, translated) in zip(
                self.tables, routes(self.placer.state, request), strict=True
            ):
                table.add(translated)
        return rid

    def push(self, pod: str, request: Request, seq: int, created: float) -> None:
        self.groups.setdefault(request, {})[pod] = seq
        self.request_of[pod] = request
        self.since[pod] = created
        rid = self._id(request)  # may regrow `waiting`, so it is looked up after this
        self.waiting[rid] += 1

    def remove(self, pod: str) -> float:
        """Take `pod` out of the queue; returns when it was created."""
        request = self.request_of.pop(pod)
        group = self.groups[request]
        del group[pod]
        if not group:
            del self.groups[request]
        self.waiting[self.ids[request]] -= 1
        return self.since.pop(pod)

    def head(self, request: Request) -> tuple[int, str]:
        """The first pod (arrival seq, name) waiting with `request`."""
        group = self.groups[request]
        pod = next(iter(group))
        return group[pod], pod

    def candidates(self, nodes: np.ndarray) -> np.ndarray:
        """Ids of pending requests that fit now on one of `nodes` (where `Placer.fits` says so)."""
        live = np.flatnonzero(self.waiting > 0)
        if live.size == 0 or nodes.size == 0:
            return live[:0]
        ok = np.zeros(live.size, dtype=bool)
        for group, table in self.tables:
            here = nodes[group[nodes]]
            if here.size:
                ok |= table.fits(live, here).any(axis=1)
        return live[ok]

    def doomed(self, rid: int, failed: list[int]) -> bool:
        """Whether a request that failed since capacity was last freed needs no more than
        request `rid` (which then fails too); memoised, as it holds in any state."""
        for small in failed:
            key = (rid, small)
            hit = self._dooms.get(key)
            if hit is None:
                hit = self._dooms[key] = self.placer.needs_at_least(self.requests[rid], self.requests[small])
            if hit:
                return True
        return False
