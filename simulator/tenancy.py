"""What a queue-aware timed replay records per queue and GPU model (`simulator.queued`).

Per step: every queue's allocated GPU units per model, its fair share (quota plus its
weighted part of the idle GPUs, `placement.quota.fairshare`) and its pending pods; per
placed pod its queueing delay; every reclaim with its victims. `TenancyResult` turns
them into the per-queue tables and curves of reports (simulator/report/queues.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from tessellate.placement.quota import QuotaBook

NO_LIMIT = math.inf


@dataclass(frozen=True, slots=True)
class ReclaimEvent:
    """One reclaim: `queue`'s `pod` got in by preempting `victims` (pods of over-quota queues)."""

    time: float
    queue: str
    pod: str
    model: str
    victims: tuple[str, ...]
    victim_queues: tuple[str, ...]


@dataclass
class TenancyResult:
    """Per-queue outcome of a queue-aware replay."""

    queues: tuple[str, ...]
    models: tuple[str, ...]
    time: np.ndarray
    """Seconds, one row per step (as `TimedResult.steps.time`)."""
    usage: np.ndarray
    """[step, queue, model] GPU units allocated."""
    fair: np.ndarray
    """[step, queue, model] fair share in GPU units."""
    pending: np.ndarray
    """[step, queue] pods waiting."""
    quota: np.ndarray
    """[queue, model] quota (GPU units)."""
    limit: np.ndarray
    """[queue, model] limit (inf: none)."""
    leaves: tuple[bool, ...]
    delays: dict[str, list[float]] = field(default_factory=dict)
    """Per queue: queueing delay of each first start (seconds)."""
    reclaims: list[ReclaimEvent] = field(default_factory=list)
    preempted: dict[str, int] = field(default_factory=dict)
    """Per queue: its pods preempted by reclaim."""
    restarted: int = 0
    """Preempted pods that started again."""
    unknown_queue: dict[str, int] = field(default_factory=dict)
    """Pods naming a queue that does not exist (or a parent queue): they wait, never tried."""
    groups_started: int = 0
    group_rollbacks: int = 0
    """Pod-group passes that placed some members and took them back (too few fitted)."""
    priority_preemptions: int = 0
    """Pods started by preempting lower-priority pods of their own queue."""

    def index(self, queue: str) -> int:
        return self.queues.index(queue)

    def time_average(self, values: np.ndarray) -> np.ndarray:
        """Time-weighted mean over steps (axis 0) of a per-step array."""
        if len(self.time) == 0:
            return np.zeros(values.shape[1:])
        weights = np.diff(self.time, append=self.time[-1])
        total = weights.sum()
        if total <= 0:
            return values[-1]
        return np.tensordot(weights, values, axes=(0, 0)) / total

    def delay_percentile(self, queue: str, q: float) -> float:
        values = self.delays.get(queue, [])
        return float(np.percentile(values, q)) if values else 0.0

    def rows(self) -> list[dict[str, object]]:
        """One row per (queue, model) a queue used or has quota of: the per-queue table."""
        usage_mean, fair_mean = self.time_average(self.usage), self.time_average(self.fair)
        by_claimant: dict[str, int] = {}
        for event in self.reclaims:
            by_claimant[event.queue] = by_claimant.get(event.queue, 0) + 1
        out = []
        for qi, queue in enumerate(self.queues):
            for mi, model in enumerate(self.models):
                peak = float(self.usage[:, qi, mi].max()) if len(self.time) else 0.0
                if peak == 0 and self.quota[qi, mi] == 0 and fair_mean[qi, mi] == 0:
                    continue
                borrowed = np.maximum(self.usage[:, qi, mi] - self.quota[qi, mi], 0)
                out.append(
                    {
                        "queue": queue,
                        "gpu_model": model,
                        "leaf": self.leaves[qi],
                        "quota": float(self.quota[qi, mi]),
                        "limit": float(self.limit[qi, mi]),
                        "alloc_mean": float(usage_mean[qi, mi]),
                        "alloc_peak": peak,
                        "fair_mean": float(fair_mean[qi, mi]),
                        "borrowed_mean": float(self.time_average(borrowed[:, None])[0])
                        if len(self.time)
                        else 0.0,
                        "pods_started": len(self.delays.get(queue, [])),
                        "delay_p50_s": self.delay_percentile(queue, 50),
                        "delay_p95_s": self.delay_percentile(queue, 95),
                        "reclaims": by_claimant.get(queue, 0),
                        "preempted": self.preempted.get(queue, 0),
                    }
                )
        return out

    def summary(self) -> dict[str, float]:
        """Flat totals for `TimedResult.summary` (only queue-aware replays add them)."""
        return {
            "queues": float(sum(self.leaves)),
            "reclaims": float(len(self.reclaims)),
            "preempted": float(sum(self.preempted.values())),
            "restarted": float(self.restarted),
            "unknown_queue_pods": float(sum(self.unknown_queue.values())),
            "groups_started": float(self.groups_started),
            "group_rollbacks": float(self.group_rollbacks),
        }


class TenancyRecorder:
    """Collects the per-step rows. Fair shares are recomputed only when something changed and
    at most once per `min_interval` seconds of trace time (they are exact `Fraction` water
    fills: per step they would cost more than the placements); in between a step keeps the
    last value, so plots on a grid of a few hundred points see no difference."""

    def __init__(self, book: QuotaBook, min_interval: float = 0.0) -> None:
        self.book = book
        self.min_interval = min_interval
        self._fair_at = -math.inf
        self._stale = True
        self.queues = tuple(book.tree)
        self.models = tuple(sorted(book.capacity))
        self._time: list[float] = []
        self._usage: list[np.ndarray] = []
        self._fair: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._last_fair: np.ndarray | None = None

    def record(self, now: float, pending_units: dict, pending_pods: dict[str, int], changed: bool) -> None:
        book, queues, models = self.book, self.queues, self.models
        usage = np.array([[float(book.usage(q, m)) for m in models] for q in queues]).reshape(
            len(queues), len(models)
        )
        self._stale |= changed
        if self._last_fair is None or (self._stale and now - self._fair_at >= self.min_interval):
            self._stale, self._fair_at = False, now
            shares = book.fair_shares(pending_units)
            self._last_fair = np.array(
                [[float(shares.get((q, m), Fraction(0))) for m in models] for q in queues]
            ).reshape(len(queues), len(models))
        self._time.append(now)
        self._usage.append(usage)
        self._fair.append(self._last_fair)
        self._pending.append(np.array([pending_pods.get(q, 0) for q in queues], dtype=np.int64))

    def result(self, **extra: object) -> TenancyResult:
        book, queues, models = self.book, self.queues, self.models
        shape = (len(self._time), len(queues), len(models))
        quota = np.array([[float(book.entry(q, m).quota) for m in models] for q in queues]).reshape(shape[1:])
        limit = np.array(
            [
                [NO_LIMIT if (x := book.entry(q, m).limit) is None else float(x) for m in models]
                for q in queues
            ]
        ).reshape(shape[1:])
        return TenancyResult(
            queues=queues,
            models=models,
            time=np.array(self._time, dtype=np.float64),
            usage=np.array(self._usage).reshape(shape),
            fair=np.array(self._fair).reshape(shape),
            pending=np.array(self._pending, dtype=np.int64).reshape(len(self._time), len(queues)),
            quota=quota,
            limit=limit,
            leaves=tuple(book.tree.is_leaf(q) for q in queues),
            **extra,  # type: ignore[arg-type]
        )
