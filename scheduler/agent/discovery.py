"""The contract between the agent and a GPU backend (NVML on a real node, YAML for a fake one).

A backend answers two questions: what GPUs are here (`discover`), and did any
of them change health since we last asked (`wait_events`). Everything else in
the agent is backend-agnostic, so the fake exercises the same code paths a
real node does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from scheduler.agent.inventory import Inventory


class DiscoveryError(RuntimeError):
    """The backend cannot say what GPUs the node has (no driver, NVML error, bad fake file).

    The message is meant for a human: it says what failed and what to check.
    """


@dataclass(frozen=True)
class HealthEvent:
    """A GPU became healthy or unhealthy (e.g. a critical Xid)."""

    uuid: str
    healthy: bool
    reason: str = ""


class Backend(Protocol):
    name: str

    def discover(self) -> Inventory:
        """Everything about the node's GPUs now; raises DiscoveryError."""
        ...

    def wait_events(self, timeout: float) -> list[HealthEvent]:
        """Block up to `timeout` seconds for health changes; [] when none came."""
        ...

    def interrupt(self) -> None:
        """Make a blocked `wait_events` return soon (shutdown); may do nothing."""
        ...

    def close(self) -> None: ...
