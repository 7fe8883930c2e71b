"""What discovery found on a node: its GPUs, their MIG instances and how they are linked.

One plain, immutable description that both backends (NVML and the YAML fake)
produce and everything downstream reads: the device plugins (device IDs, NUMA
hints, health), the node annotation (placement's topology schema) and
`tessellate agent discover --json`. Health is not part of it: it changes on its
own schedule and lives in `state.DeviceState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance (GPU instance + its compute instance) as the container runtime sees it."""

    uuid: str
    profile: str
    """NVIDIA's profile name, e.g. `3g.40gb` (the `nvidia.com/mig-<profile>` resource)."""
    start: int
    """First memory slice (NVML's GPU-instance placement)."""
    memory_mib: int


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    model: str
    """The product name NVML reports, e.g. `NVIDIA A100-SXM4-80GB`."""
    memory_mib: int
    numa: int | None = None
    """NUMA node the GPU is attached to; None when the platform does not say (one-node hosts)."""
    pci_bus_id: str = ""
    pcie_switch: int | None = None
    """Id of the PCIe switch the GPU shares with other GPUs; None: shares none, or unknown."""
    mig_enabled: bool = False
    mig: tuple[MigDevice, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "model": self.model,
            "memory_mib": self.memory_mib,
            "numa": self.numa,
            "pci_bus_id": self.pci_bus_id,
            "pcie_switch": self.pcie_switch,
            "mig": {"enabled": self.mig_enabled, "instances": [_mig_json(m) for m in self.mig]},
        }


def _mig_json(m: MigDevice) -> dict[str, Any]:
    return {"uuid": m.uuid, "profile": m.profile, "start": m.start, "memory_mib": m.memory_mib}


@dataclass(frozen=True)
class Inventory:
    """A node's GPUs (by index 0..G-1) and their interconnect."""

    gpus: tuple[Gpu, ...]
    nvlink: tuple[tuple[int, ...], ...] = ()
    """Direct NVLinks between GPU pairs, a symmetric G x G matrix (the `#` of `NV#`);
    empty when the node has no NVLink."""
    nvswitch_links: tuple[int, ...] = ()
    """Per GPU, NVLinks into an NVSwitch fabric (0: none); empty when there is no fabric."""
    nvlink_generation: int | None = None
    pcie_generation: int | None = None
    driver_version: str = ""
    source: str = ""
    """Where it came from: `nvml` or `fake:<path>`."""

    def __post_init__(self) -> None:
        for position, gpu in enumerate(self.gpus):
            if gpu.index != position:
                raise ValueError(f"GPU at position {position} has index {gpu.index}; indices must be 0..G-1")
        uuids = [g.uuid for g in self.gpus]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"duplicate GPU UUIDs: {uuids}")
        g = len(self.gpus)
        if self.nvlink and (len(self.nvlink) != g or any(len(row) != g for row in self.nvlink)):
            raise ValueError(f"nvlink must be a {g}x{g} matrix")
        if self.nvswitch_links and len(self.nvswitch_links) != g:
            raise ValueError(f"nvswitch_links must list {g} GPUs")

    def by_uuid(self, uuid: str) -> Gpu | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def mig_by_uuid(self, uuid: str) -> tuple[Gpu, MigDevice] | None:
        """The MIG device with this UUID and its parent GPU (only GPUs in MIG mode count)."""
        for gpu in self.gpus:
            if gpu.mig_enabled:
                for device in gpu.mig:
                    if device.uuid == uuid:
                        return gpu, device
        return None

    def links(self, i: int, j: int) -> int:
        return self.nvlink[i][j] if self.nvlink else 0

    def to_json(self) -> dict[str, Any]:
        """What `tessellate agent discover --json` prints."""
        return {
            "source": self.source,
            "driver_version": self.driver_version,
            "nvlink_generation": self.nvlink_generation,
            "pcie_generation": self.pcie_generation,
            "gpus": [g.to_json() for g in self.gpus],
            "nvlink_matrix": [list(row) for row in self.nvlink],
            "nvswitch_links": list(self.nvswitch_links),
        }
