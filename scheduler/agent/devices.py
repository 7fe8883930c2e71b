"""Which extended resources the agent serves, and the device IDs it lists for each.

* `nvidia.com/gpu` (only with `--mode full`): one device per GPU, ID = the GPU
  UUID, as NVIDIA's device plugin does, so a node can switch plugins without
  the kubelet's checkpoint naming devices nobody serves.
* `tessellate.dev/gpu-milli`: 1000 devices per GPU, ID `<uuid>::<k>` (k =
  000..999, 45 characters, under the API's 63). The kubelet only counts them;
  which GPU a pod really gets comes from the scheduler's assignment.
* `tessellate.dev/gpu-memory-mib` is *not* a device plugin resource: one
  device per MiB would be ~655,000 IDs on an 8 x 80 GiB node, far beyond what
  a ListAndWatch message and the kubelet's checkpoint handle well. It is a node
  extended resource instead (see `node.py`).

GPUs in MIG mode are left out of both: a MIG GPU is used through its instances.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.agent.proto import deviceplugin_pb2 as pb
from scheduler.agent.state import Snapshot
from scheduler.podspec import GPU, GPU_MEMORY, GPU_MILLI

MILLI_PER_GPU = 1000
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
_SEPARATOR = "::"

__all__ = ["GPU", "GPU_MEMORY", "GPU_MILLI", "Resource", "gpu_of", "milli_id"]


def milli_id(uuid: str, k: int) -> str:
    return f"{uuid}{_SEPARATOR}{k:03d}"


def gpu_of(device_id: str) -> str:
    """The GPU UUID a device ID belongs to (for either resource)."""
    return device_id.split(_SEPARATOR, 1)[0]


@dataclass(frozen=True)
class Resource:
    """One extended resource served by one device-plugin socket."""

    name: str
    endpoint: str
    """Socket file name in the kubelet's device-plugin directory."""
    per_gpu: int
    """Devices listed per GPU: 1 for whole GPUs, 1000 for milli shares."""

    @property
    def fractional(self) -> bool:
        return self.per_gpu > 1

    def device_ids(self, uuid: str) -> list[str]:
        if not self.fractional:
            return [uuid]
        return [milli_id(uuid, k) for k in range(self.per_gpu)]

    def devices(self, snapshot: Snapshot) -> list[pb.Device]:
        """The full ListAndWatch list for this resource."""
        out = []
        for gpu in snapshot.inventory.gpus:
            if gpu.mig_enabled:
                continue
            health = HEALTHY if snapshot.healthy(gpu.uuid) else UNHEALTHY
            topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=gpu.numa)]) if gpu.numa is not None else None
            out.extend(pb.Device(ID=i, health=health, topology=topology) for i in self.device_ids(gpu.uuid))
        return out


WHOLE_GPUS = Resource(GPU, "tessellate-gpu.sock", 1)
MILLI_SHARES = Resource(GPU_MILLI, "tessellate-gpu-milli.sock", MILLI_PER_GPU)

MODES = {"fractions": (MILLI_SHARES,), "full": (MILLI_SHARES, WHOLE_GPUS)}
"""`--mode`: fractions only (NVIDIA's plugin keeps nvidia.com/gpu), or everything."""
