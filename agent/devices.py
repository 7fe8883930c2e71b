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

* `nvidia.com/mig-<profile>` (only with `--mode full`, on nodes with a
  MIG-capable GPU): one device per MIG device of that profile, ID = its MIG
  UUID, as NVIDIA's plugin does with `--mig-strategy mixed`. Every profile the
  node's GPU models offer is registered up front, with no devices while no
  such instance exists, so that instances created later (`--mig-dynamic`)
  reach the kubelet through ListAndWatch without a new registration. A MIG
  device is as healthy as its parent GPU.

GPUs in MIG mode are left out of `nvidia.com/gpu` and `gpu-milli`: a MIG GPU
is used through its instances.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tessellate.agent.inventory import Gpu, Inventory
from tessellate.agent.proto import deviceplugin_pb2 as pb
from tessellate.agent.state import Snapshot
from tessellate.placement.mig import MigError, geometry

from tessellate.wire.podspec import GPU, GPU_MEMORY, GPU_MILLI, MIG_PREFIX

MILLI_PER_GPU = 1000
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
_SEPARATOR = "::"

__all__ = [
    "GPU",
    "GPU_MEMORY",
    "GPU_MILLI",
    "MIG_PREFIX",
    "AnyResource",
    "MigResource",
    "Resource",
    "gpu_of",
    "mig_resources",
    "milli_id",
]


def milli_id(uuid: str, k: int) -> str:
    return f"{uuid}{_SEPARATOR}{k:03d}"


def gpu_of(device_id: str) -> str:
    """The GPU UUID a device ID belongs to (a MIG device's ID is its own UUID)."""
    return device_id.split(_SEPARATOR, 1)[0]


def _topology(gpu: Gpu) -> pb.TopologyInfo | None:
    return pb.TopologyInfo(nodes=[pb.NUMANode(ID=gpu.numa)]) if gpu.numa is not None else None


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
            topology = _topology(gpu)
            out.extend(pb.Device(ID=i, health=health, topology=topology) for i in self.device_ids(gpu.uuid))
        return out

    def unknown(self, device_ids: list[str], snapshot: Snapshot) -> list[str]:
        """The device IDs (by GPU) this resource does not serve on the node now."""
        known = {g.uuid for g in snapshot.inventory.gpus if not g.mig_enabled}
        return sorted({gpu_of(d) for d in device_ids} - known)


@dataclass(frozen=True)
class MigResource:
    """`nvidia.com/mig-<profile>`: the MIG devices of one profile, on every GPU in MIG mode."""

    profile: str

    @property
    def name(self) -> str:
        return MIG_PREFIX + self.profile

    @property
    def endpoint(self) -> str:
        return f"tessellate-mig-{self.profile}.sock"

    def devices(self, snapshot: Snapshot) -> list[pb.Device]:
        out = []
        for gpu in snapshot.inventory.gpus:
            if not gpu.mig_enabled:
                continue
            topology = _topology(gpu)
            for device in gpu.mig:
                if device.profile != self.profile:
                    continue
                healthy = snapshot.healthy(gpu.uuid) and snapshot.healthy(device.uuid)
                health = HEALTHY if healthy else UNHEALTHY
                out.append(pb.Device(ID=device.uuid, health=health, topology=topology))
        return out

    def unknown(self, device_ids: list[str], snapshot: Snapshot) -> list[str]:
        """The requested IDs that are not MIG devices of this profile on the node now."""
        known = {
            m.uuid
            for g in snapshot.inventory.gpus
            if g.mig_enabled
            for m in g.mig
            if m.profile == self.profile
        }
        return sorted(set(device_ids) - known)


def mig_profiles(inventory: Inventory) -> tuple[str, ...]:
    """Every MIG profile this node's GPUs offer (catalogue) or have (discovered), in order."""
    names: list[str] = []
    for gpu in inventory.gpus:
        # A model without known geometry: only the instances it already has.
        with contextlib.suppress(MigError):
            names.extend(geometry(gpu.model).profile_names)
        names.extend(m.profile for m in gpu.mig)
    return tuple(dict.fromkeys(names))


def mig_resources(inventory: Inventory) -> tuple[MigResource, ...]:
    return tuple(MigResource(p) for p in mig_profiles(inventory))


WHOLE_GPUS = Resource(GPU, "tessellate-gpu.sock", 1)
MILLI_SHARES = Resource(GPU_MILLI, "tessellate-gpu-milli.sock", MILLI_PER_GPU)

MODES = {"fractions": (MILLI_SHARES,), "full": (MILLI_SHARES, WHOLE_GPUS)}
"""`--mode`: fractions only (NVIDIA's plugin keeps nvidia.com/gpu), or everything
(plus `mig_resources(inventory)`, which depend on the node's GPU models)."""


AnyResource = Resource | MigResource


def served_resources(mode: str, inventory: Inventory) -> tuple[AnyResource, ...]:
    """What the agent serves in `mode` on a node with this inventory."""
    if mode == "full":
        return (*MODES[mode], *mig_resources(inventory))
    return MODES[mode]
