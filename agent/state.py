"""The agent's one source of truth: the current inventory and which GPUs are unhealthy.

Writers (discovery, health events) bump a version; readers (each device
plugin's ListAndWatch stream, the node publisher) wait for the version to move
past the one they last acted on. A discovery failure makes every GPU
unhealthy until discovery works again: the kubelet then stops admitting pods
to them, which is the point.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tessellate.agent.discovery import HealthEvent
from tessellate.agent.inventory import Inventory


@dataclass(frozen=True)
class Snapshot:
    version: int
    inventory: Inventory
    unhealthy: dict[str, str] = field(default_factory=dict)
    """uuid -> why (a Xid, an ECC error, ...)."""
    discovery_error: str | None = None

    def healthy(self, uuid: str) -> bool:
        return self.discovery_error is None and uuid not in self.unhealthy

    def reason(self, uuid: str) -> str | None:
        if self.discovery_error is not None:
            return f"discovery failed: {self.discovery_error}"
        return self.unhealthy.get(uuid)


class DeviceState:
    def __init__(self, inventory: Inventory):
        self._cond = threading.Condition()
        self._snapshot = Snapshot(1, inventory)

    def snapshot(self) -> Snapshot:
        with self._cond:
            return self._snapshot

    def _publish(self, **changes: object) -> None:
        old = self._snapshot
        fields = {
            "inventory": old.inventory,
            "unhealthy": old.unhealthy,
            "discovery_error": old.discovery_error,
            **changes,
        }
        if (fields["inventory"], fields["unhealthy"], fields["discovery_error"]) == (
            old.inventory,
            old.unhealthy,
            old.discovery_error,
        ):
            return
        self._snapshot = Snapshot(old.version + 1, **fields)  # type: ignore[arg-type]
        self._cond.notify_all()

    def apply(self, events: list[HealthEvent]) -> None:
        """Health events from the backend; unknown UUIDs (a MIG device, a GPU gone) are kept
        anyway so that a GPU that comes back unhealthy stays so."""
        with self._cond:
            unhealthy = dict(self._snapshot.unhealthy)
            for event in events:
                if event.healthy:
                    unhealthy.pop(event.uuid, None)
                else:
                    unhealthy[event.uuid] = event.reason or "unhealthy"
            self._publish(unhealthy=unhealthy)

    def discovered(self, inventory: Inventory) -> None:
        """A successful (re)discovery: new inventory, and discovery is healthy again."""
        with self._cond:
            self._publish(inventory=inventory, discovery_error=None)

    def discovery_failed(self, reason: str) -> None:
        with self._cond:
            self._publish(discovery_error=reason)

    def wait(self, after: int, timeout: float | None = None, stop: threading.Event | None = None) -> Snapshot:
        """The snapshot once its version is past `after`, or the current one at the timeout
        or once `stop` is set (`wake()` makes waiters look at it)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._snapshot.version > after or (stop is not None and stop.is_set()), timeout
            )
            return self._snapshot

    def wake(self) -> None:
        """Wake every waiter (used on shutdown so streams notice quickly)."""
        with self._cond:
            self._cond.notify_all()
