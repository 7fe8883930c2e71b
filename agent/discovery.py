"""The contract between the agent and a GPU backend (NVML on a real node, YAML for a fake one).

A backend answers two questions: what GPUs are here (`discover`), and did any
of them change health since we last asked (`wait_events`). For dynamic MIG
(`--mig-dynamic`) it also makes two changes: turn MIG mode on for a GPU, and
create one MIG instance at an exact start slot. Everything else in the agent
is backend-agnostic, so the fake exercises the same code paths a real node does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tessellate.agent.inventory import Inventory


class DiscoveryError(RuntimeError):
    """The backend cannot say what GPUs the node has (no driver, NVML error, bad fake file).

    The message is meant for a human: it says what failed and what to check.
    """


class MigConfigError(RuntimeError):
    """A MIG change the GPU or driver refused (or cannot do yet); the message says which and why."""


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

    def enable_mig(self, index: int) -> None:
        """Turn MIG mode on for GPU `index` (no-op when on); raises MigConfigError, also when
        the change only takes effect after a GPU reset."""
        ...

    def create_mig(self, index: int, profile: str, start: int) -> None:
        """Create a GPU instance of `profile` at memory slice `start` on GPU `index`, with one
        compute instance spanning it (a usable MIG device); raises MigConfigError."""
        ...

    def interrupt(self) -> None:
        """Make a blocked `wait_events` return soon (shutdown); may do nothing."""
        ...

    def close(self) -> None: ...
