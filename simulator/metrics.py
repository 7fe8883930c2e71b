"""Per-event metric series and the paper's 0..130 '% of GPU capacity arrived' columns.

`EventSeries` is what the simulator records after every pod event; `discrete`
turns one run's series into the three rows of the paper's result files with
the same rounding as its analysis scripts (numpy round-half-even, and the
artifact's `%.2f` log values for the fragmentation figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tessellate.placement import ClusterState, Fragmentation

ARRIVED_COLUMNS = tuple(range(131))
"""Arrived GPU demand as % of cluster capacity: the x axis of the paper's Fig. 9a."""


@dataclass
class EventSeries:
    """One row per pod event (placed or failed), in arrival order."""

    arrived_milli: np.ndarray
    used_milli: np.ndarray
    frag_milli: np.ndarray
    idle_milli: np.ndarray
    placed: np.ndarray  # bool

    @classmethod
    def empty(cls, events: int) -> EventSeries:
        return cls(
            arrived_milli=np.zeros(events, dtype=np.int64),
            used_milli=np.zeros(events, dtype=np.int64),
            frag_milli=np.zeros(events),
            idle_milli=np.zeros(events),
            placed=np.zeros(events, dtype=bool),
        )

    @property
    def frag_ratio(self) -> np.ndarray:
        """Fragment as % of idle GPU capacity (0 when nothing is idle)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.idle_milli > 0, 100 * self.frag_milli / self.idle_milli, 0.0)


class FragmentationRecorder:
    """Cluster fragmentation after every step, computed in vectorised batches at the end.

    A step (a pod placed, a departure) changes few nodes, so recording those
    nodes' new states is enough: their F values are computed together afterwards
    and the cluster totals follow as running sums of per-node differences. This
    keeps fragmentation off the replay's per-event path.
    """

    BATCH_ROWS = 4096
    """Node states per `Fragmentation.amounts` call (bounds its [rows, types, GPUs] temporaries)."""

    def __init__(self, fragmentation: Fragmentation, state: ClusterState):
        self.fragmentation = fragmentation
        self.state = state
        all_nodes = np.arange(len(state))
        self.initial_frag, self.initial_idle = fragmentation.of_nodes(state, all_nodes)
        self._steps: list[int] = []
        self._nodes: list[int] = []
        self._cpu: list[np.ndarray] = []
        self._gpu: list[np.ndarray] = []

    def record(self, step: int, nodes: int | np.ndarray) -> None:
        """Note the current state of `nodes`, changed during `step` (steps never decrease)."""
        nodes = np.atleast_1d(nodes)
        self._steps.extend([step] * len(nodes))
        self._nodes.extend(nodes.tolist())
        self._cpu.append(self.state.cpu_left[nodes])
        self._gpu.append(self.state.gpu_left[nodes])

    def totals(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(fragment, idle) milli-GPU summed over the cluster after each of `steps` steps."""
        frag_delta, idle_delta = np.zeros(steps), np.zeros(steps)
        if self._nodes:
            nodes = np.array(self._nodes)
            cpu, gpu = np.concatenate(self._cpu), np.concatenate(self._gpu)
            frag, idle = np.empty(len(nodes)), np.empty(len(nodes))
            for lo in range(0, len(nodes), self.BATCH_ROWS):
                hi = lo + self.BATCH_ROWS
                batch = nodes[lo:hi]
                frag[lo:hi], idle[lo:hi] = self.fragmentation.amounts(
                    cpu[lo:hi], gpu[lo:hi], self.state.model_id[batch], self.state.replicas[batch]
                )
            node_frag, node_idle = self.initial_frag.copy(), self.initial_idle.copy()
            rows = zip(self._steps, nodes.tolist(), frag.tolist(), idle.tolist(), strict=True)
            for step, node, f, i in rows:
                frag_delta[step] += f - node_frag[node]
                idle_delta[step] += i - node_idle[node]
                node_frag[node], node_idle[node] = f, i
        return (
            self.initial_frag.sum() + np.cumsum(frag_delta),
            self.initial_idle.sum() + np.cumsum(idle_delta),
        )


def _as_logged(values: np.ndarray) -> np.ndarray:
    """The value after the artifact's `%.2f` log line and pandas' float parse."""
    return np.array([float(f"{v:.2f}") for v in values])


@dataclass(frozen=True)
class DiscreteRows:
    """The three per-run rows of the paper's analysis_*_discrete.csv files (NaN = empty)."""

    alloc: np.ndarray
    frag: np.ndarray
    frag_ratio: np.ndarray


def discrete(series: EventSeries, total_gpus: int) -> DiscreteRows:
    """Average each metric over the events whose arrived demand rounds to x, for x in 0..130.

    Where no event rounds to x exactly, events within x-1..x+1 are used; where
    there are none either, the cell stays empty (NaN), as in the paper's scripts.
    """
    arrived = np.round(series.arrived_milli / total_gpus / 10, 0)
    alloc = np.round(series.used_milli / total_gpus / 10, 2)
    frag = _as_logged(series.frag_milli)
    ratio = _as_logged(series.frag_ratio)
    out = np.full((3, len(ARRIVED_COLUMNS)), np.nan)
    for x in ARRIVED_COLUMNS:
        rows = arrived == x
        if not rows.any():
            rows = (arrived >= x - 1) & (arrived <= x + 1)
            if not rows.any():
                continue
        out[0, x] = np.round(alloc[rows].mean(), 2)
        out[1, x] = np.round(100 * frag[rows].mean() / 1000 / total_gpus, 2)
        out[2, x] = ratio[rows].mean()
    return DiscreteRows(alloc=out[0], frag=out[1], frag_ratio=out[2])
