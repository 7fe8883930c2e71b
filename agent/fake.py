"""A GPU backend driven by a YAML description: for tests, demos and simulated nodes.

It stands in for NVML, so the whole agent (device plugins, node annotation,
health reporting) runs on a machine without GPUs. The file is read again when
it changes, which is how a test or an operator simulates a GPU failing
(`health: Unhealthy`), falling off the bus (remove it) or the driver going away
(`fail: ...`). Tests in the same process can also call `inject`.

Example (an HGX A100 baseboard: 8 GPUs behind NVSwitches, two NUMA nodes)::

    driver_version: "550.54.15"
    nvlink_generation: 3          # required when nvswitch or nvlink is given
    pcie_generation: 4
    model: NVIDIA A100-SXM4-80GB  # default for every GPU
    memory_mib: 81920
    gpus: 8                       # a count, or a list of per-GPU entries (below)
    numa: [0, 0, 0, 0, 1, 1, 1, 1]
    nvswitch: 12                  # NVLinks each GPU has into the switch fabric
    uuid_seed: node-a             # fake UUIDs derive from this and the index

Per-GPU entries (a list under `gpus`) may set `uuid`, `model`, `memory_mib`,
`numa`, `pcie_switch`, `pci_bus_id`, `health` (`Healthy`/`Unhealthy`),
`reason` and `mig` (a list of `{profile, start, uuid?, memory_mib?}`; an empty
list means MIG mode on with no instances). Direct links between GPU pairs go
under `nvlink: {"0-1": 12, ...}`. `fail: "<message>"` makes discovery fail.

Dynamic MIG (`enable_mig`, `create_mig`) never writes the file: what the
agent changes lives in memory, as an overlay on whatever the file says, keyed
by the GPU's UUID (like a real GPU, whose instances vanish on reboot: a new
process starts from the file again). A GPU the overlay put in MIG mode stays
in it, and the instances it created are added to the file's; their UUIDs
derive from the GPU's UUID, profile and start (`fake_uuid`), so the same
instance gets the same UUID every time. The rules are the real ones: the
model must have MIG geometry (placement's catalogue), an instance must be a
valid placement next to the existing ones, and a GPU entry with
`mig_pending_reset: true` refuses to enable MIG mode as a GPU awaiting a reset.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from tessellate.agent.discovery import DiscoveryError, HealthEvent, MigConfigError
from tessellate.agent.inventory import Gpu, Inventory, MigDevice
from tessellate.placement.mig import MigError, MigLayout, geometry

_TOP_KEYS = frozenset(
    {
        "driver_version",
        "nvlink_generation",
        "pcie_generation",
        "model",
        "memory_mib",
        "gpus",
        "numa",
        "nvswitch",
        "nvlink",
        "uuid_seed",
        "fail",
    }
)
_GPU_KEYS = frozenset(
    {
        "uuid",
        "model",
        "memory_mib",
        "numa",
        "pcie_switch",
        "pci_bus_id",
        "health",
        "reason",
        "mig",
        "mig_pending_reset",
    }
)
_MIG_KEYS = frozenset({"profile", "start", "uuid", "memory_mib"})
_NAMESPACE = uuidlib.UUID("6f1d3c52-2b8e-4f8e-9d0a-7a5e0c7b9a11")

POLL_SECONDS = 0.1
"""How often `wait_events` looks at the file's modification time."""


def fake_uuid(seed: str, index: int, kind: str = "GPU") -> str:
    """A stable UUID in NVML's format (`GPU-xxxxxxxx-...`) for a fake device."""
    return f"{kind}-{uuidlib.uuid5(_NAMESPACE, f'{seed}/{index}')}"


def parse(doc: Any, where: str = "fake GPUs") -> tuple[Inventory, dict[str, str]]:
    """The inventory a YAML document describes, and {uuid: reason} of GPUs it marks unhealthy."""
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{where}: expected a mapping at the top, got {type(doc).__name__}")
    _unknown(doc, _TOP_KEYS, where)
    if doc.get("fail"):
        raise DiscoveryError(f"{where}: {doc['fail']}")
    seed = str(doc.get("uuid_seed", "fake"))
    entries = doc.get("gpus", 0)
    if isinstance(entries, int) and not isinstance(entries, bool):
        entries = [{} for _ in range(entries)]
    if not isinstance(entries, list):
        raise DiscoveryError(f"{where}: gpus must be a count or a list, got {entries!r}")
    numa = doc.get("numa")
    if numa is not None and (not isinstance(numa, list) or len(numa) != len(entries)):
        raise DiscoveryError(f"{where}: numa must list one NUMA node per GPU ({len(entries)})")
    gpus, unhealthy = [], {}
    for index, entry in enumerate(entries):
        gpu, reason = _gpu(
            doc, entry or {}, index, seed, numa[index] if numa else None, f"{where}: gpus[{index}]"
        )
        gpus.append(gpu)
        if reason is not None:
            unhealthy[gpu.uuid] = reason
    nvlink, nvswitch = _links(doc, len(gpus), where)
    try:
        inventory = Inventory(
            gpus=tuple(gpus),
            nvlink=nvlink,
            nvswitch_links=nvswitch,
            nvlink_generation=doc.get("nvlink_generation"),
            pcie_generation=doc.get("pcie_generation"),
            driver_version=str(doc.get("driver_version", "fake")),
            source=f"fake:{where}",
        )
    except ValueError as exc:
        raise DiscoveryError(f"{where}: {exc}") from None
    return inventory, unhealthy


def _unknown(doc: dict, allowed: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in doc if k not in allowed)
    if extra:
        raise DiscoveryError(
            f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


def _gpu(
    doc: dict, entry: dict, index: int, seed: str, numa: int | None, where: str
) -> tuple[Gpu, str | None]:
    if not isinstance(entry, dict):
        raise DiscoveryError(f"{where}: expected a mapping, got {entry!r}")
    _unknown(entry, _GPU_KEYS, where)
    model = entry.get("model", doc.get("model"))
    memory = entry.get("memory_mib", doc.get("memory_mib"))
    if not model or not isinstance(memory, int):
        raise DiscoveryError(f"{where}: needs a model and memory_mib (per GPU or at the top)")
    gpu_uuid = str(entry.get("uuid") or fake_uuid(seed, index))
    mig_entries = entry.get("mig")
    mig = []
    for k, item in enumerate(mig_entries or []):
        if not isinstance(item, dict) or "profile" not in item or "start" not in item:
            raise DiscoveryError(f"{where}: mig[{k}] needs profile and start")
        _unknown(item, _MIG_KEYS, f"{where}: mig[{k}]")
        mig.append(
            MigDevice(
                uuid=str(item.get("uuid") or fake_uuid(f"{gpu_uuid}/mig", k, "MIG")),
                profile=str(item["profile"]),
                start=int(item["start"]),
                memory_mib=int(item.get("memory_mib", 0)),
            )
        )
    health = entry.get("health", "Healthy")
    if health not in ("Healthy", "Unhealthy"):
        raise DiscoveryError(f"{where}: health must be Healthy or Unhealthy, got {health!r}")
    gpu = Gpu(
        index=index,
        uuid=gpu_uuid,
        model=str(model),
        memory_mib=memory,
        numa=entry.get("numa", numa),
        pci_bus_id=str(entry.get("pci_bus_id", f"00000000:{0x10 + index:02X}:00.0")),
        pcie_switch=entry.get("pcie_switch"),
        mig_enabled=mig_entries is not None,
        mig=tuple(mig),
    )
    reason = (
        str(entry.get("reason", "marked Unhealthy in the fake GPU file")) if health == "Unhealthy" else None
    )
    return gpu, reason


def _links(doc: dict, count: int, where: str) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    fabric = doc.get("nvswitch")
    nvswitch: tuple[int, ...] = ()
    if fabric:
        nvswitch = tuple([int(fabric)] * count)
    pairs = doc.get("nvlink") or {}
    if not isinstance(pairs, dict):
        raise DiscoveryError(f'{where}: nvlink must map "i-j" to a link count')
    if not pairs:
        return (), nvswitch
    matrix = [[0] * count for _ in range(count)]
    for key, links in pairs.items():
        try:
            i, j = (int(x) for x in str(key).split("-"))
        except ValueError:
            raise DiscoveryError(f'{where}: nvlink key {key!r} is not "i-j"') from None
        if not (0 <= i < count and 0 <= j < count) or i == j:
            raise DiscoveryError(f"{where}: nvlink pair {key!r} names GPUs this node does not have")
        matrix[i][j] = matrix[j][i] = int(links)
    return tuple(tuple(row) for row in matrix), nvswitch


def created_mig_uuid(gpu_uuid: str, profile: str, start: int) -> str:
    """The UUID the fake gives an instance it created (stable across calls and processes)."""
    return fake_uuid(f"{gpu_uuid}/mig/{profile}", start, "MIG")


class FakeBackend:
    """Reads a YAML file (or a dict) instead of asking NVML."""

    name = "fake"

    def __init__(self, source: Path | str | dict[str, Any]):
        self.path = Path(source) if not isinstance(source, dict) else None
        self._doc = source if isinstance(source, dict) else None
        self._cond = threading.Condition()
        self._injected: list[HealthEvent] = []
        self._file_health: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._started = False
        self._interrupted = False
        self._mig_on: set[str] = set()
        """GPU UUIDs put in MIG mode by `enable_mig`."""
        self._created: dict[str, list[MigDevice]] = {}
        """GPU UUID -> instances made by `create_mig`."""

    def _read(self) -> tuple[Inventory, dict[str, str]]:
        if self.path is None:
            return parse(self._doc)
        try:
            doc = yaml.safe_load(self.path.read_text())
        except OSError as exc:
            raise DiscoveryError(f"cannot read the fake GPU file {self.path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise DiscoveryError(f"the fake GPU file {self.path} is not valid YAML: {exc}") from None
        return parse(doc, str(self.path))

    def _overlaid(self, inventory: Inventory) -> Inventory:
        """The file's inventory plus what enable_mig / create_mig changed (caller holds _cond)."""
        gpus = []
        for gpu in inventory.gpus:
            created = self._created.get(gpu.uuid, [])
            if gpu.uuid in self._mig_on or created:
                taken = {m.start for m in gpu.mig}
                mig = (*gpu.mig, *(m for m in created if m.start not in taken))
                gpu = replace(gpu, mig_enabled=True, mig=tuple(sorted(mig, key=lambda m: m.start)))
            gpus.append(gpu)
        return replace(inventory, gpus=tuple(gpus))

    def _gpu(self, index: int) -> tuple[Gpu, dict[str, Any]]:
        """GPU `index` as discovery would report it, and its entry in the file (caller holds _cond)."""
        try:
            inventory = self._overlaid(self._read()[0])
        except DiscoveryError as exc:
            raise MigConfigError(str(exc)) from None
        if not 0 <= index < len(inventory.gpus):
            raise MigConfigError(f"there is no GPU {index} (the node has {len(inventory.gpus)})")
        try:
            doc = self._doc if self.path is None else yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError):
            doc = None  # changed under us since _read; the entry's flags are then unknown
        entries = doc.get("gpus") if isinstance(doc, dict) else None
        entry = entries[index] if isinstance(entries, list) and isinstance(entries[index], dict) else {}
        return inventory.gpus[index], entry

    def enable_mig(self, index: int) -> None:
        with self._cond:
            gpu, entry = self._gpu(index)
            if gpu.mig_enabled:
                return
            try:
                geometry(gpu.model)
            except MigError:
                raise MigConfigError(f"GPU {index} ({gpu.model}) does not support MIG") from None
            if entry.get("mig_pending_reset"):
                raise MigConfigError(
                    f"MIG mode on GPU {index} is pending a GPU reset (the fake file says "
                    "mig_pending_reset); stop the processes on it and reset it, or reboot the node"
                )
            self._mig_on.add(gpu.uuid)

    def create_mig(self, index: int, profile: str, start: int) -> None:
        with self._cond:
            gpu, _ = self._gpu(index)
            if not gpu.mig_enabled:
                raise MigConfigError(f"GPU {index} is not in MIG mode")
            try:
                g = geometry(gpu.model)
                layout = MigLayout.of(g, *((m.profile, m.start) for m in gpu.mig))
                layout.add(profile, start)
                memory = g.profile(profile).memory_mib
            except MigError as exc:
                raise MigConfigError(
                    f"cannot create {profile} at start {start} on GPU {index}: {exc}"
                ) from None
            device = MigDevice(created_mig_uuid(gpu.uuid, profile, start), profile, start, memory)
            self._created.setdefault(gpu.uuid, []).append(device)

    def discover(self) -> Inventory:
        inventory, unhealthy = self._read()
        with self._cond:
            inventory = self._overlaid(inventory)
            if not self._started:
                # Health the file declares is reported once, through wait_events, like a Xid.
                self._started = True
                self._stamp = self._file_stamp()
                self._injected.extend(HealthEvent(u, False, r) for u, r in unhealthy.items())
                self._file_health = dict(unhealthy)
                self._cond.notify_all()
        return inventory

    def inject(self, event: HealthEvent) -> None:
        """Deliver a health event as if the driver had reported it (tests in this process)."""
        with self._cond:
            self._injected.append(event)
            self._cond.notify_all()

    def wait_events(self, timeout: float) -> list[HealthEvent]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._interrupted:
                if self._injected:
                    events, self._injected = self._injected, []
                    return events
                changed = self._file_changes()
                if changed:
                    return changed
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                wait = left if self.path is None else min(left, POLL_SECONDS)
                self._cond.wait(wait)
            return []

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _file_changes(self) -> list[HealthEvent]:
        """Health differences since the file was last read (edits made while we run)."""
        stamp = self._file_stamp()
        if self.path is None or stamp == self._stamp:
            return []
        self._stamp = stamp
        try:
            _, unhealthy = self._read()
        except DiscoveryError:
            return []  # the next rediscovery reports it, for every GPU at once
        events = [HealthEvent(u, False, r) for u, r in unhealthy.items() if self._file_health.get(u) != r]
        events += [HealthEvent(u, True, "healthy again") for u in self._file_health if u not in unhealthy]
        self._file_health = dict(unhealthy)
        return events

    def interrupt(self) -> None:
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def close(self) -> None:
        self.interrupt()
