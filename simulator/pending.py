"""The timed replay's pending queue: waiting pods, and which of them can fit now.

Pods are grouped by identical request; each group keeps arrival order. Every
distinct request gets an id and, for each kind of node `Placer` distinguishes
(`placement.timeslice.routes`: ordinary nodes, then each time-slicing replica
count), a row holding the request as translated there in a
`placement.requests.RequestTable`. A retry pass thus asks, in one vectorised step
per kind of node, the filter's own question (`placement.checks`) of every pending
request on the nodes released since they last did not fit, and after each
placement asks it again of the one node that changed.
"""

from __future__ import annotations

import numpy as np
from tessellate.placement import Placer, Request
from tessellate.placement.requests import RequestTable, Rows
from tessellate.placement.timeslice import routes


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
        self._ids = np.zeros(0, dtype=np.int64)  # the current pass's candidates
        self._fit = np.zeros((0, 0), dtype=bool)  # per candidate and released node: fits now
        self._row: dict[int, int] = {}
        self._column: dict[int, int] = {}
        self._rows: dict[int, Rows] = {}  # per table: the candidates' rows, once asked again
        self._live = np.zeros(0, dtype=np.int64)  # the ids pending at the last pass
        self._live_rows: dict[int, Rows] = {}  # per table: their rows

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

    def open_pass(self, nodes: np.ndarray) -> np.ndarray:
        """Start a retry pass over the released `nodes`: the ids of pending requests that fit
        on one of them now (as `Placer.fits` would say). Until the next pass, `fits` answers
        for those ids and `changed` keeps the answers in step with placements."""
        live = np.flatnonzero(self.waiting > 0)
        if not np.array_equal(live, self._live):  # the rows' columns are reused while it holds
            self._live, self._live_rows = live, {}
        fit = np.zeros((live.size, nodes.size), dtype=bool)
        if live.size:
            for k, (group, table) in enumerate(self.tables):
                inside = group[nodes]
                if inside.any():
                    rows = self._live_rows.get(k)
                    if rows is None:
                        rows = self._live_rows[k] = table.rows(live)
                    fit[:, inside] = table.fits(rows, nodes[inside])
        ok = fit.any(axis=1)
        self._ids, self._fit = live[ok], fit[ok]
        self._rows = {}
        self._row = {rid: i for i, rid in enumerate(self._ids.tolist())}
        self._column = {node: j for j, node in enumerate(nodes.tolist())}
        return self._ids

    def fits(self, rid: int) -> bool:
        """Whether request `rid` (an id `open_pass` returned) fits on a released node now."""
        return bool(self._fit[self._row[rid]].any())

    def changed(self, node: int) -> None:
        """Node `node` was just written: ask again whether each candidate fits there."""
        j = self._column.get(node)
        if j is None:
            return
        for k, (group, table) in enumerate(self.tables):
            if group[node]:
                rows = self._rows.get(k)
                if rows is None:
                    rows = self._rows[k] = table.rows(self._ids)
                self._fit[:, j] = table.fits(rows, np.array([node]))[:, 0]

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
