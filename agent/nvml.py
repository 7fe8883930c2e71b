"""GPU discovery and health events through NVML (`nvidia-ml-py`, the `pynvml` module).

What it reads per GPU: product name, UUID, total memory, PCI bus id, NUMA
node, MIG mode and instances; per node: the NVLink matrix (direct links
between GPUs, and links into an NVSwitch fabric), NVLink and PCIe generation,
and which GPUs share a PCIe switch. Health: critical Xid and double-bit ECC
events, except the Xids that an application causes (NVIDIA's own device
plugin skips the same ones), which say nothing about the GPU.

Every NVML failure becomes a `DiscoveryError` whose message says what to
check; `tessellate agent discover` prints it as one line, never a traceback.
The module is passed in (`NvmlBackend(nvml=...)`) so tests can use a stand-in.

Dynamic MIG: `enable_mig` sets MIG mode and reads it back (on Ampere the new
mode can stay *pending* until the GPU is reset; that is reported, not waited
for); `create_mig` finds the NVML GPU-instance profile whose id is the
catalogue's for that profile name, creates the GPU instance at the exact start
(`nvmlDeviceCreateGpuInstanceWithPlacement`) and one compute instance spanning
it, as `nvidia-smi mig -cgi P -C` does. If the compute instance cannot be made,
the GPU instance just created is destroyed again so no unusable instance is
left behind. Failures become `MigConfigError` with NVML's error text.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from tessellate.agent.discovery import DiscoveryError, HealthEvent, MigConfigError
from tessellate.agent.inventory import Gpu, Inventory, MigDevice

log = logging.getLogger("tessellate.agent.nvml")

APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
"""Xids raised by a faulty application, not a faulty GPU: no reason to take the GPU away."""

NVLINK_VERSION_TO_GENERATION = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 5}
"""NVML's nvmlNvlinkVersion_t (1.0, 2.0, 2.2, 3.0, 3.1, 4.0, 5.0) to the NVLink generation."""

_HINTS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (
        "libnvidia-ml.so.1 was not found: no NVIDIA driver on this host, or the container cannot see it "
        "(run the agent with the nvidia runtime and NVIDIA_DRIVER_CAPABILITIES=utility)"
    ),
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded (does nvidia-smi work?)",
    "NVML_ERROR_NO_PERMISSION": "no permission to open the GPU device files (/dev/nvidia*)",
    "NVML_ERROR_GPU_IS_LOST": "a GPU has fallen off the bus or stopped responding (check dmesg for Xid 79)",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "the NVIDIA driver and its user-space library differ in version",
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bus_key(bus_id: Any) -> str:
    """`00000000:07:00.0` and `0000:07:00.0` name the same device."""
    return _text(bus_id).lower()[-12:]


class NvmlBackend:
    name = "nvml"

    def __init__(self, nvml: Any = None, sysfs: Path = Path("/sys/bus/pci/devices")):
        self._nvml = nvml
        self._sysfs = sysfs
        self._ready = False
        self._events: Any = None
        self._lock = threading.Lock()

    # -- errors ------------------------------------------------------------------------------

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                raise DiscoveryError("nvidia-ml-py is not installed: pip install nvidia-ml-py") from None
            self._nvml = pynvml
        return self._nvml

    def _detail(self, exc: Exception) -> str:
        """What went wrong, with a hint where we know one, else NVML's own text."""
        nvml = self._module()
        code = getattr(exc, "value", None)
        name = next(
            (n for n in _HINTS if getattr(nvml, n, object()) == code and code is not None),
            None,
        )
        return _HINTS[name] if name else str(exc) or type(exc).__name__

    def _error(self, what: str, exc: Exception) -> DiscoveryError:
        return DiscoveryError(f"NVML {what} failed: {self._detail(exc)}")

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        nvml = self._module()
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            raise self._error(what, exc) from None

    def _maybe(self, fn: Any, *args: Any, default: Any = None) -> Any:
        """An optional query: NOT_SUPPORTED and friends mean `default`, not failure."""
        nvml = self._module()
        try:
            return fn(*args)
        except nvml.NVMLError:
            return default

    def _init(self) -> None:
        if not self._ready:
            nvml = self._module()
            self._call("init", nvml.nvmlInit)
            self._ready = True

    # -- discovery ---------------------------------------------------------------------------

    def discover(self) -> Inventory:
        with self._lock:
            self._init()
            nvml = self._module()
            count = self._call("device count", nvml.nvmlDeviceGetCount)
            handles = [
                self._call(f"GPU {i} handle", nvml.nvmlDeviceGetHandleByIndex, i) for i in range(count)
            ]
            buses = [_text(self._call("PCI info", nvml.nvmlDeviceGetPciInfo, h).busId) for h in handles]
            nvlink, fabric, generation = self._nvlinks(handles, buses)
            switches = self._pcie_switches(handles)
            numa = [self._numa(h, bus) for h, bus in zip(handles, buses, strict=True)]
            gpus = tuple(self._gpu(i, h, buses[i], numa[i], switches.get(i)) for i, h in enumerate(handles))
            pcie = [self._maybe(nvml.nvmlDeviceGetMaxPcieLinkGeneration, h) for h in handles]
            pcie_known = [p for p in pcie if isinstance(p, int) and p > 0]
            return Inventory(
                gpus=gpus,
                nvlink=nvlink,
                nvswitch_links=fabric,
                nvlink_generation=generation,
                pcie_generation=min(pcie_known) if pcie_known else None,
                driver_version=_text(self._maybe(nvml.nvmlSystemGetDriverVersion, default="")),
                source="nvml",
            )

    def _gpu(self, index: int, handle: Any, bus: str, numa: int | None, switch: int | None) -> Gpu:
        nvml = self._module()
        memory = self._call("memory info", nvml.nvmlDeviceGetMemoryInfo, handle)
        mode = self._maybe(nvml.nvmlDeviceGetMigMode, handle, default=[0, 0])
        enabled = bool(mode and mode[0])
        model = _text(self._call("name", nvml.nvmlDeviceGetName, handle))
        return Gpu(
            index=index,
            uuid=_text(self._call("UUID", nvml.nvmlDeviceGetUUID, handle)),
            model=model,
            memory_mib=int(memory.total) // (1 << 20),
            numa=numa,
            pci_bus_id=bus,
            pcie_switch=switch,
            mig_enabled=enabled,
            mig=self._mig_devices(handle, model) if enabled else (),
        )

    def _numa(self, handle: Any, bus: str) -> int | None:
        nvml = self._module()
        query = getattr(nvml, "nvmlDeviceGetNumaNodeId", None)  # newer drivers only
        node = self._maybe(query, handle) if query else None
        if isinstance(node, int) and node >= 0:
            return node
        # Older drivers: the kernel knows (sysfs uses a 4-digit PCI domain, lower case).
        path = self._sysfs / bus.lower()[-12:] / "numa_node"
        try:
            value = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return value if value >= 0 else None

    def _nvlinks(
        self, handles: list[Any], buses: list[str]
    ) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...], int | None]:
        nvml = self._module()
        g = len(handles)
        by_bus = {_bus_key(b): i for i, b in enumerate(buses)}
        matrix = [[0] * g for _ in range(g)]
        fabric = [0] * g
        versions: set[int] = set()
        switch_type = getattr(nvml, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2)
        for i, handle in enumerate(handles):
            for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
                active = self._maybe(nvml.nvmlDeviceGetNvLinkState, handle, link, default=None)
                if active is None:
                    break  # this GPU has no more links (or no NVLink at all)
                if not active:
                    continue
                version = self._maybe(nvml.nvmlDeviceGetNvLinkVersion, handle, link)
                if version in NVLINK_VERSION_TO_GENERATION:
                    versions.add(NVLINK_VERSION_TO_GENERATION[version])
                kind = self._maybe(nvml.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link)
                if kind == switch_type:
                    fabric[i] += 1
                    continue
                remote = self._maybe(nvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
                j = by_bus.get(_bus_key(remote.busId)) if remote is not None else None
                if j is not None and j != i:
                    matrix[i][j] += 1
        symmetric = tuple(tuple(max(matrix[i][j], matrix[j][i]) for j in range(g)) for i in range(g))
        has_direct = any(any(row) for row in symmetric)
        return (
            symmetric if has_direct else (),
            tuple(fabric) if any(fabric) else (),
            max(versions) if versions else None,
        )

    def _pcie_switches(self, handles: list[Any]) -> dict[int, int]:
        """GPU index -> switch id, for GPUs that share a PCIe switch (topo -m's PIX / PXB)."""
        nvml = self._module()
        single = getattr(nvml, "NVML_TOPOLOGY_SINGLE", 10)
        multiple = getattr(nvml, "NVML_TOPOLOGY_MULTIPLE", 20)
        g = len(handles)
        group = list(range(g))

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for i in range(g):
            for j in range(i + 1, g):
                level = self._maybe(nvml.nvmlDeviceGetTopologyCommonAncestor, handles[i], handles[j])
                if level in (single, multiple):
                    group[root(j)] = root(i)
        members: dict[int, list[int]] = {}
        for i in range(g):
            members.setdefault(root(i), []).append(i)
        shared = [m for m in members.values() if len(m) > 1]
        return {i: switch for switch, gpus in enumerate(sorted(shared)) for i in gpus}

    def _mig_devices(self, handle: Any, model: str) -> tuple[MigDevice, ...]:
        nvml = self._module()
        found = []
        for k in range(self._maybe(nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0) or 0):
            mig = self._maybe(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, k)
            if mig is None:
                continue  # an empty slot
            gi_id = self._call("MIG GPU instance id", nvml.nvmlDeviceGetGpuInstanceId, mig)
            instance = self._call("MIG GPU instance", nvml.nvmlDeviceGetGpuInstanceById, handle, gi_id)
            info = self._call("MIG GPU instance info", nvml.nvmlGpuInstanceGetInfo, instance)
            attrs = self._call("MIG attributes", nvml.nvmlDeviceGetAttributes, mig)
            memory = self._call("MIG memory info", nvml.nvmlDeviceGetMemoryInfo, mig)
            found.append(
                MigDevice(
                    uuid=_text(self._call("MIG UUID", nvml.nvmlDeviceGetUUID, mig)),
                    profile=mig_profile_name(
                        model, info.profileId, attrs.gpuInstanceSliceCount, attrs.memorySizeMB
                    ),
                    start=int(info.placement.start),
                    memory_mib=int(memory.total) // (1 << 20),
                )
            )
        return tuple(sorted(found, key=lambda m: m.start))

    # -- dynamic MIG ------------------------------------------------------------------------

    def _mig_call(self, what: str, fn: Any, *args: Any) -> Any:
        nvml = self._module()
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            raise MigConfigError(f"NVML {what} failed: {self._detail(exc)}") from None

    def _handle(self, index: int) -> Any:
        nvml = self._module()
        try:
            self._init()
        except DiscoveryError as exc:
            raise MigConfigError(str(exc)) from None
        return self._mig_call(f"GPU {index} handle", nvml.nvmlDeviceGetHandleByIndex, index)

    def enable_mig(self, index: int) -> None:
        nvml = self._module()
        enable = getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
        with self._lock:
            handle = self._handle(index)
            current, pending = self._mig_call(f"GPU {index} MIG mode", nvml.nvmlDeviceGetMigMode, handle)
            if current == enable:
                return
            if pending != enable:
                self._mig_call(f"enabling MIG mode on GPU {index}", nvml.nvmlDeviceSetMigMode, handle, enable)
                current, pending = self._mig_call(f"GPU {index} MIG mode", nvml.nvmlDeviceGetMigMode, handle)
            if current != enable:
                raise MigConfigError(
                    f"MIG mode on GPU {index} is pending a GPU reset: stop every process on GPU {index} "
                    f"and run `nvidia-smi -r -i {index}`, or reboot the node"
                )

    def create_mig(self, index: int, profile: str, start: int) -> None:
        from tessellate.placement.mig import MigError, geometry

        nvml = self._module()
        with self._lock:
            handle = self._handle(index)
            model = _text(self._mig_call(f"GPU {index} name", nvml.nvmlDeviceGetName, handle))
            try:
                size = geometry(model).profile(profile).size
            except MigError as exc:
                raise MigConfigError(f"GPU {index}: {exc}") from None
            info = self._gi_profile(handle, model, profile, index)
            placement = nvml.c_nvmlGpuInstancePlacement_t()
            placement.start = start
            placement.size = size
            what = f"creating {profile} at start {start} on GPU {index}"
            instance = self._mig_call(
                what, nvml.nvmlDeviceCreateGpuInstanceWithPlacement, handle, info.id, placement
            )
            try:
                ci = self._ci_profile(instance, int(info.sliceCount), index, profile)
                self._mig_call(
                    f"{what} (its compute instance)",
                    nvml.nvmlGpuInstanceCreateComputeInstance,
                    instance,
                    ci.id,
                )
            except MigConfigError:
                self._maybe(nvml.nvmlGpuInstanceDestroy, instance)
                raise

    def _gi_profile(self, handle: Any, model: str, profile: str, index: int) -> Any:
        """NVML's GPU-instance profile info for a profile name (matched by catalogue id)."""
        nvml = self._module()
        offered = []
        for p in range(int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 18))):
            info = self._gi_profile_info(handle, p)
            if info is None:
                continue  # not offered by this GPU
            name = mig_profile_name(model, int(info.id), int(info.sliceCount), int(info.memorySizeMB))
            if name == profile:
                return info
            offered.append(name)
        listed = ", ".join(offered) or "none"
        raise MigConfigError(f"GPU {index} ({model}) offers no MIG profile {profile} (NVML lists: {listed})")

    def _gi_profile_info(self, handle: Any, profile: int) -> Any:
        """Profile info by NVML's v2 query, or v1 on drivers without v2; None if not offered."""
        nvml = self._module()
        try:
            return nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13):
                return None
        return self._maybe(nvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, profile, 1)

    def _ci_profile(self, instance: Any, slices: int, index: int, profile: str) -> Any:
        """The compute-instance profile that spans a whole GPU instance of `slices` slices."""
        nvml = self._module()
        constant = getattr(nvml, f"NVML_COMPUTE_INSTANCE_PROFILE_{slices}_SLICE", None)
        if constant is None:
            raise MigConfigError(
                f"GPU {index}: NVML has no compute-instance profile for {profile} ({slices} slices)"
            )
        shared = getattr(nvml, "NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED", 0)
        return self._mig_call(
            f"compute-instance profile of {profile} on GPU {index}",
            nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo,
            instance,
            constant,
            shared,
        )

    # -- health ------------------------------------------------------------------------------

    def _event_set(self) -> Any:
        nvml = self._module()
        if self._events is not None:
            return self._events
        self._init()
        events = self._call("event set", nvml.nvmlEventSetCreate)
        wanted = nvml.nvmlEventTypeXidCriticalError | nvml.nvmlEventTypeDoubleBitEccError
        for i in range(self._call("device count", nvml.nvmlDeviceGetCount)):
            handle = self._call(f"GPU {i} handle", nvml.nvmlDeviceGetHandleByIndex, i)
            supported = self._maybe(nvml.nvmlDeviceGetSupportedEventTypes, handle, default=0)
            mask = wanted & supported
            if not mask:
                log.warning("GPU %d reports no Xid/ECC events; its health is only checked by rediscovery", i)
                continue
            self._call("register events", nvml.nvmlDeviceRegisterEvents, handle, mask, events)
        self._events = events
        return events

    def wait_events(self, timeout: float) -> list[HealthEvent]:
        nvml = self._module()
        events = self._event_set()
        try:
            data = nvml.nvmlEventSetWait_v2(events, max(1, int(timeout * 1000)))
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) == nvml.NVML_ERROR_TIMEOUT:
                return []
            raise self._error("event wait", exc) from None
        xid = int(data.eventData)
        if data.eventType == nvml.nvmlEventTypeXidCriticalError and xid in APPLICATION_XIDS:
            log.info("ignoring application Xid %d", xid)
            return []
        uuid = _text(self._call("UUID", nvml.nvmlDeviceGetUUID, data.device))
        reason = (
            f"Xid {xid}" if data.eventType == nvml.nvmlEventTypeXidCriticalError else "double-bit ECC error"
        )
        return [HealthEvent(uuid, False, reason)]

    def interrupt(self) -> None:
        """NVML has no way to wake nvmlEventSetWait; it returns within its timeout."""

    def close(self) -> None:
        nvml = self._nvml
        if nvml is None or not self._ready:
            return
        if self._events is not None:
            self._maybe(nvml.nvmlEventSetFree, self._events)
            self._events = None
        self._maybe(nvml.nvmlShutdown)
        self._ready = False


def mig_profile_name(model: str, profile_id: int, slices: int, memory_mb: int) -> str:
    """NVIDIA's name for a GPU-instance profile (`3g.40gb`): from the MIG catalogue when it
    knows the model and profile id, else from slices and memory the way nvidia-smi rounds."""
    from tessellate.placement.mig import MigError, geometry

    try:
        for profile in geometry(model).profiles:
            if profile.profile_id == profile_id:
                return profile.name
    except MigError:
        pass
    return f"{slices}g.{-(-int(memory_mb) // 1024)}gb"
