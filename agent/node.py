"""Publishing the node's GPUs on its Node object: annotations and GPU memory capacity.

* `tessellate.dev/gpu-topology` and `tessellate.dev/gpu-devices` annotations
  (`annotation.py`), which the scheduler and people read.
* `tessellate.dev/gpu-memory-mib` in `status.capacity` and `status.allocatable`:
  the memory of the healthy, non-MIG GPUs, as a node extended resource. The
  kubelet keeps extended resources it does not serve itself and checks pods
  against them at admission, so quota and admission see GPU memory without a
  device per MiB (see `devices.py` for why not). Which GPU's memory a pod
  uses is the scheduler's per-GPU accounting, written in the assignment.

Both are written when the state changes and checked again every resync, so a
node object that someone edited (or a kubelet that re-registered the node)
gets them back. An agent without `--mig-dynamic` that finds a
`tessellate.dev/mig-plan` on its node says once that it ignores it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tessellate.agent.annotation import devices_annotation, encode, topology_annotation
from tessellate.agent.devices import GPU_MEMORY
from tessellate.agent.state import DeviceState, Snapshot
from tessellate.placement.topology import TopologyError

from tessellate.kube import ApiError, KubeClient
from tessellate.wire.devices import DEVICES
from tessellate.wire.migplan import PLAN
from tessellate.wire.topology import TOPOLOGY

log = logging.getLogger("tessellate.agent.node")


def gpu_memory_mib(snapshot: Snapshot) -> int:
    return sum(
        g.memory_mib for g in snapshot.inventory.gpus if not g.mig_enabled and snapshot.healthy(g.uuid)
    )


def desired_annotations(snapshot: Snapshot, mig_dynamic: bool = False) -> dict[str, str]:
    out = {DEVICES: encode(devices_annotation(snapshot, mig_dynamic))}
    try:
        out[TOPOLOGY] = encode(topology_annotation(snapshot.inventory))
    except TopologyError as exc:
        log.error("not publishing %s: %s", TOPOLOGY, exc)
    return out


class NodePublisher:
    def __init__(
        self,
        api: KubeClient,
        node: str,
        state: DeviceState,
        resync: float = 60.0,
        mig_dynamic: bool = False,
    ):
        self.api = api
        self.node = node
        self.state = state
        self.resync = resync
        self.mig_dynamic = mig_dynamic
        self._plan_ignored = False
        self.published = threading.Event()
        """Set after the first successful publish (tests and readiness wait on it)."""

    def publish(self, snapshot: Snapshot, extra: dict[str, str] | None = None) -> bool:
        """Bring the Node object up to date; True when something had to be written.

        `extra` annotations go into the same PATCH (a MIG plan's status with the
        inventory it produced)."""
        path = f"/api/v1/nodes/{self.node}"
        node = self.api.get(path)
        wrote = False
        current = (node.get("metadata") or {}).get("annotations") or {}
        if PLAN in current and not self.mig_dynamic and not self._plan_ignored:
            log.warning(
                "node %s has a %s annotation, but this agent runs without --mig-dynamic; ignoring it",
                self.node,
                PLAN,
            )
            self._plan_ignored = True
        wanted = {**desired_annotations(snapshot, self.mig_dynamic), **(extra or {})}
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changed:
            self.api.patch(path, {"metadata": {"annotations": changed}})
            wrote = True
        memory = str(gpu_memory_mib(snapshot))
        status: dict[str, Any] = node.get("status") or {}
        if any((status.get(part) or {}).get(GPU_MEMORY) != memory for part in ("capacity", "allocatable")):
            body = {"status": {"capacity": {GPU_MEMORY: memory}, "allocatable": {GPU_MEMORY: memory}}}
            self.api.patch(f"{path}/status", body)
            wrote = True
        return wrote

    def run(self, stopping: threading.Event) -> None:
        version = 0
        backoff = 1.0
        while not stopping.is_set():
            snapshot = self.state.wait(version, self.resync, stopping)
            if stopping.is_set():
                return
            try:
                if self.publish(snapshot):
                    log.info(
                        "node %s: published GPU inventory (state version %d)", self.node, snapshot.version
                    )
                self.published.set()
                version, backoff = snapshot.version, 1.0
            except ApiError as exc:
                log.warning("node %s: could not publish (%s); retrying in %.0fs", self.node, exc, backoff)
                stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except OSError as exc:
                log.warning(
                    "node %s: API server unreachable (%s); retrying in %.0fs", self.node, exc, backoff
                )
                stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
