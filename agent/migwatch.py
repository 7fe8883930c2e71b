"""Watching this node for MIG plans (`--mig-dynamic`) and answering each one.

Once a second the watcher GETs its own Node (one small request; a watch would
save little and needs reconnect logic). When `tessellate.dev/mig-plan` carries
a generation newer than the last one answered, it applies the plan
(`migplan.py`) and writes `tessellate.dev/mig-plan-status` for that
generation, in the same PATCH as the new `tessellate.dev/gpu-devices` and
`gpu-topology` annotations, so the scheduler never sees `Applied` next to an
inventory that lacks the instances. The last answered generation starts as the
one in the node's status annotation, so a restarted agent does not redo a plan
it answered.

A plan that does not parse is answered `Failed` with the parser's message, if
its generation can be read at all; one without a readable generation cannot be
answered (the status needs one) and is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tessellate.agent.claims import PodSource, gpu_users
from tessellate.agent.inventory import Gpu
from tessellate.agent.migplan import MigPlanApplier, geometries
from tessellate.agent.node import NodePublisher
from tessellate.agent.state import DeviceState

from tessellate.kube import ApiError, KubeClient
from tessellate.wire.migplan import (
    FAILED,
    PLAN,
    PLAN_STATUS,
    PlanFormatError,
    PlanStatus,
    decode_plan,
    decode_status,
    encode_status,
    plan_generation,
)

log = logging.getLogger("tessellate.agent.migwatch")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class MigPlanWatcher:
    def __init__(
        self,
        api: KubeClient,
        node: str,
        state: DeviceState,
        applier: MigPlanApplier,
        publisher: NodePublisher,
        pods: PodSource,
        lock: threading.Lock,
        interval: float = 1.0,
        users: Callable[[list[dict[str, Any]]], Mapping[str, str]] | None = None,
    ):
        self.api = api
        self.node = node
        self.state = state
        self.applier = applier
        self.publisher = publisher
        self.pods = pods
        self.lock = lock
        """The device plugins' Allocate lock: no pod is admitted while a plan changes GPUs."""
        self.interval = interval
        self.users = users
        """GPU UUID -> the pod using it, from the node's pods (default: `claims.gpu_users`);
        the agent passes its Claims' version, which also counts what it served."""
        self.answered: int | None = None
        """The last generation a status was written for (None: not read from the node yet)."""
        self._unreadable: str | None = None

    def check(self) -> PlanStatus | None:
        """One look at the node; the status written, or None when there was nothing to do."""
        node = self.api.get(f"/api/v1/nodes/{self.node}")
        annotations: dict[str, Any] = (node.get("metadata") or {}).get("annotations") or {}
        if self.answered is None:
            self.answered = _answered(annotations.get(PLAN_STATUS))
        raw = annotations.get(PLAN)
        if not raw:
            return None
        generation = plan_generation(raw)
        if generation is None:
            if raw != self._unreadable:
                log.error("%s has no readable generation, cannot answer it: %.200s", PLAN, raw)
                self._unreadable = raw
            return None
        if generation <= self.answered:
            return None
        try:
            status = self._handle(raw, generation)
        except (ApiError, OSError):
            raise  # the API server: try again next round
        except Exception as exc:  # a bug must not stop plan handling or leave the plan unanswered
            log.exception("MIG plan %d: unexpected error", generation)
            status = PlanStatus(generation, FAILED, f"the agent failed unexpectedly: {exc!r}")
        self._answer(status)
        return status

    def _handle(self, raw: str, generation: int) -> PlanStatus:
        snapshot = self.state.snapshot()
        try:
            plan = decode_plan(raw, geometries(snapshot.inventory))
        except PlanFormatError as exc:
            log.error("MIG plan %d refused: %s", generation, exc)
            return PlanStatus(generation, FAILED, str(exc))
        log.info("MIG plan %d: applying to GPUs %s", generation, [g.index for g in plan.gpus])
        with self.lock:
            snapshot = self.state.snapshot()
            pods = self.pods.pods()
            if self.users is not None:
                users = self.users(pods)
            else:
                users = gpu_users(pods, lambda i: _uuid_at(snapshot.inventory.gpus, i))
            return self.applier.apply(plan, snapshot, users)

    def _answer(self, status: PlanStatus) -> None:
        stamped = PlanStatus(status.generation, status.state, status.message, now())
        self.publisher.publish(self.state.snapshot(), {PLAN_STATUS: encode_status(stamped)})
        self.answered = status.generation
        log.info(
            "MIG plan %d: %s%s",
            status.generation,
            status.state,
            f" ({status.message})" if status.message else "",
        )

    def run(self, stopping: threading.Event) -> None:
        backoff = self.interval
        while not stopping.wait(backoff):
            try:
                self.check()
                backoff = self.interval
            except (ApiError, OSError) as exc:
                backoff = min(max(backoff * 2, 1.0), 30.0)
                log.warning(
                    "MIG plans: cannot reach node %s (%s); retrying in %.0fs", self.node, exc, backoff
                )


def _answered(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return decode_status(raw).generation
    except PlanFormatError:
        return 0


def _uuid_at(gpus: tuple[Gpu, ...], index: int) -> str | None:
    return gpus[index].uuid if 0 <= index < len(gpus) else None
