"""Keeping the device state true: health events as they come, and rediscovery on a timer.

Health events (a critical Xid, a double-bit ECC error) mark one GPU unhealthy
at once. Rediscovery catches what events do not: a driver that went away
(every GPU unhealthy until discovery works again), a GPU that fell off the
bus, a MIG reconfiguration.
"""

from __future__ import annotations

import logging
import threading
import time

from tessellate.agent.discovery import Backend, DiscoveryError
from tessellate.agent.state import DeviceState

log = logging.getLogger("tessellate.agent.health")

WAKE_SECONDS = 1.0
"""Longest single wait for events, so that shutdown is noticed promptly."""


class HealthMonitor:
    def __init__(self, backend: Backend, state: DeviceState, rediscover_every: float = 60.0):
        self.backend = backend
        self.state = state
        self.rediscover_every = rediscover_every

    def rediscover(self) -> None:
        try:
            inventory = self.backend.discover()
        except DiscoveryError as exc:
            if self.state.snapshot().discovery_error is None:
                log.error("discovery failed, marking every GPU unhealthy: %s", exc)
            self.state.discovery_failed(str(exc))
            return
        if self.state.snapshot().discovery_error is not None:
            log.info("discovery works again")
        self.state.discovered(inventory)

    def run(self, stopping: threading.Event) -> None:
        due = time.monotonic() + self.rediscover_every
        while not stopping.is_set():
            left = due - time.monotonic()
            if left <= 0:
                self.rediscover()
                due = time.monotonic() + self.rediscover_every
                continue
            try:
                events = self.backend.wait_events(min(left, WAKE_SECONDS))
            except DiscoveryError as exc:
                log.error("health events failed: %s", exc)
                self.state.discovery_failed(str(exc))
                stopping.wait(min(left, 5.0))
                continue
            for event in events:
                log.warning(
                    "GPU %s is now %s: %s",
                    event.uuid,
                    "healthy" if event.healthy else "unhealthy",
                    event.reason,
                )
            if events:
                self.state.apply(events)
