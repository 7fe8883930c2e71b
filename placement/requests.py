"""Many requests as numpy columns, to check them all against some nodes in one go.

`placement.checks` writes each check once over numpy broadcasting; `Rows` gives it
the fields of `Request` as [R, 1] columns, so `passes(state, rows, nodes)` is the
same filter as for one request, answered per row and node. The timed simulator's
queue keeps its distinct pending requests in a `RequestTable`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tessellate.placement.checks import Nodes, model_mask, passes
from tessellate.placement.migplace import mig_room
from tessellate.placement.model import Request
from tessellate.placement.state import ClusterState

COLUMNS = ("cpu_milli", "memory_mib", "gpu_count", "gpu_milli", "gpu_memory_mib", "mig_count")
FLAGS = ("is_cpu_only", "is_fraction", "is_mig")
"""`Request` properties, stored as computed by `Request` itself."""


class RequestTable:
    """Requests appended one row at a time; a row may be None (a request that cannot go to
    the nodes this table is about: it never passes)."""

    def __init__(self, state: ClusterState, rows: int = 16):
        self.state = state
        self.requests: list[Request | None] = []
        self.profiles: list[str] = []
        self._alloc(rows)

    def _alloc(self, rows: int) -> None:
        used = len(self.requests)
        old = getattr(self, "columns", None)
        self.columns = {name: np.zeros(rows, dtype=np.int64) for name in COLUMNS}
        self.columns.update({name: np.zeros(rows, dtype=bool) for name in FLAGS})
        fresh = {
            "present": np.zeros(rows, dtype=bool),
            "access": np.zeros((rows, len(self.state)), dtype=bool),
        }
        for name, array in fresh.items():
            if old is not None:
                array[:used] = getattr(self, name)[:used]
            setattr(self, name, array)
        if old is not None:
            for name, array in self.columns.items():
                array[:used] = old[name][:used]

    def __len__(self) -> int:
        return len(self.requests)

    def add(self, request: Request | None) -> int:
        """Append a row; returns its index."""
        row = len(self.requests)
        if row >= len(self.present):
            self._alloc(2 * len(self.present))
        self.requests.append(request)
        self.profiles.append(request.mig_profile if request is not None else "")
        if request is not None:
            self.present[row] = True
            for name in (*COLUMNS, *FLAGS):
                self.columns[name][row] = getattr(request, name)
            self.access[row] = model_mask(self.state, request.gpu_models)
        return row

    def rows(self, ids: np.ndarray) -> Rows:
        return Rows(self, ids)

    def fits(self, rows: np.ndarray | Rows, nodes: np.ndarray) -> np.ndarray:
        """[len(rows), len(nodes)]: where each row's request fits now (a None row nowhere);
        `rows` are ids, or `Rows` to ask again about."""
        if not isinstance(rows, Rows):
            rows = self.rows(rows)
        return passes(self.state, rows, nodes) & rows.present


class Rows:
    """Rows `ids` of a table, with the fields of `Request` as [R, 1] columns (each taken from
    the table when a check first reads it)."""

    def __init__(self, table: RequestTable, ids: np.ndarray):
        self.table, self.ids = table, ids
        self.present = table.present[ids, None]

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__["table"].columns
        if name not in columns:
            raise AttributeError(name)
        column = columns[name][self.ids, None]
        setattr(self, name, column)
        return column

    def __len__(self) -> int:
        return len(self.ids)

    def allowed(self, nodes: Nodes) -> np.ndarray:
        """[R, nodes]: the node's GPU model is one the row's request allows."""
        access = self.table.access
        if isinstance(nodes, np.ndarray):
            return access[self.ids[:, None], nodes]
        return access[self.ids][:, nodes]

    def mig_room(self, state: ClusterState, nodes: Nodes) -> np.ndarray:
        """[R, nodes]: instances of the row's MIG profile each node could give (0: no profile)."""
        profiles: Sequence[str] = [self.table.profiles[i] for i in self.ids.tolist()]
        rooms = {p: mig_room(state, p)[nodes] for p in set(profiles) if p}
        zeros = np.zeros_like(state.cpu_left[nodes])
        return np.stack([rooms[p] if p else zeros for p in profiles])
