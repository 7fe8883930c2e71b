"""GPU discovery: the YAML fake, NVML through a stand-in module, and the annotations built from both."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tessellate.agent.annotation import devices_annotation, topology_annotation, topology_of
from tessellate.agent.discovery import DiscoveryError, HealthEvent
from tessellate.agent.fake import FakeBackend, fake_uuid, parse
from tessellate.agent.nvml import NvmlBackend, mig_profile_name
from tessellate.agent.state import DeviceState
from tessellate.placement.topology import dgx1_v100, nvswitch
from tessellate.scheduler.nodes import node_info

from tessellate.wire.topology import from_inventory

DGX1_PAIRS = {"0-1": 1, "0-2": 1, "0-3": 2, "0-4": 2, "1-2": 2, "1-3": 1, "1-5": 2, "2-3": 2,
              "2-6": 1, "3-7": 1, "4-5": 1, "4-6": 1, "4-7": 2, "5-6": 2, "5-7": 1, "6-7": 2}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The YAML fake


def test_fake_count_form_gives_stable_uuids_numa_and_fabric() -> None:
    doc = {"model": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "gpus": 8, "numa": [0] * 4 + [1] * 4,
           "nvswitch": 18, "nvlink_generation": 4, "uuid_seed": "n1"}  # fmt: skip
    inventory, unhealthy = parse(doc)
    assert [g.uuid for g in inventory.gpus] == [fake_uuid("n1", i) for i in range(8)]
    assert inventory.gpus[5].numa == 1 and inventory.nvswitch_links == (18,) * 8
    assert parse(doc)[0] == inventory  # the same file describes the same node every time
    assert unhealthy == {}
    assert fake_uuid("n1", 0).startswith("GPU-") and len(fake_uuid("n1", 0)) == 40


def test_fake_list_form_overrides_per_gpu_and_declares_mig_and_health() -> None:
    doc = {
        "model": "NVIDIA A100-SXM4-80GB",
        "memory_mib": 81920,
        "gpus": [
            {},
            {"mig": [{"profile": "3g.40gb", "start": 4}, {"profile": "1g.10gb", "start": 0}]},
            {"health": "Unhealthy", "reason": "Xid 48", "uuid": "GPU-x"},
        ],
    }
    inventory, unhealthy = parse(doc)
    assert [g.mig_enabled for g in inventory.gpus] == [False, True, False]
    assert [(m.profile, m.start) for m in inventory.gpus[1].mig] == [("3g.40gb", 4), ("1g.10gb", 0)]
    assert unhealthy == {"GPU-x": "Xid 48"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"model": "A", "memory_mib": 1, "gpus": 1, "colour": "red"}, "unknown key(s) colour"),
        ({"model": "A", "gpus": 1}, "needs a model and memory_mib"),
        ({"model": "A", "memory_mib": 1, "gpus": 2, "numa": [0]}, "numa must list one NUMA node per GPU"),
        (
            {"model": "A", "memory_mib": 1, "gpus": 2, "nvlink": {"0-5": 2}},
            "names GPUs this node does not have",
        ),
        ({"model": "A", "memory_mib": 1, "gpus": 1, "fail": "NVML says no"}, "NVML says no"),
    ],
)
def test_fake_file_mistakes_are_discovery_errors_that_say_what_is_wrong(doc: dict, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(doc)


def test_fake_file_edits_arrive_as_health_events(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    base = {"model": "A", "memory_mib": 1, "uuid_seed": "s"}
    path.write_text(json.dumps({**base, "gpus": [{}, {}]}))
    backend = FakeBackend(path)
    backend.discover()
    assert backend.wait_events(0.05) == []
    path.write_text(json.dumps({**base, "gpus": [{}, {"health": "Unhealthy", "reason": "Xid 79"}]}))
    assert backend.wait_events(5) == [HealthEvent(fake_uuid("s", 1), False, "Xid 79")]
    path.write_text(json.dumps({**base, "gpus": [{}, {}]}))
    assert backend.wait_events(5) == [HealthEvent(fake_uuid("s", 1), True, "healthy again")]


# ---------------------------------------------------------------------------------------------
# NVML, through a stand-in for the pynvml module


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


NOT_SUPPORTED, TIMEOUT, LIB_MISSING = 3, 10, 12


class StubNvml:
    """Just enough of pynvml: an NVSwitch board or a box of directly linked GPUs."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    NVML_ERROR_TIMEOUT = TIMEOUT
    NVML_ERROR_LIBRARY_NOT_FOUND = LIB_MISSING
    NVML_NVLINK_MAX_LINKS = 18
    NVML_NVLINK_DEVICE_TYPE_GPU = 0
    NVML_NVLINK_DEVICE_TYPE_SWITCH = 2
    NVML_TOPOLOGY_SINGLE = 10
    NVML_TOPOLOGY_MULTIPLE = 20
    NVML_TOPOLOGY_NODE = 40
    NVML_TOPOLOGY_SYSTEM = 50
    nvmlEventTypeXidCriticalError = 0x8
    nvmlEventTypeDoubleBitEccError = 0x2

    def __init__(self, gpus: int, links: dict[tuple[int, int], int] | None = None, switch_links: int = 0):
        self.gpus = gpus
        self.links = links or {}
        self.switch_links = switch_links
        self.init_error: int | None = None
        self.events: list[SimpleNamespace] = []
        self.mig: dict[int, list[tuple[int, int, int]]] = {}  # gpu -> [(profile id, start, memory MiB)]

    def bus(self, i: int) -> str:
        return f"00000000:{0x10 + i:02X}:00.0"

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> tuple[str, int]:
        return ("gpu", i)

    def nvmlDeviceGetPciInfo(self, h: tuple[str, int]) -> SimpleNamespace:
        return SimpleNamespace(busId=self.bus(h[1]).encode())

    def nvmlDeviceGetName(self, h: Any) -> str:
        return "NVIDIA A100-SXM4-80GB" if h[0] == "gpu" else "MIG"

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return f"GPU-stub-{h[1]}" if h[0] == "gpu" else f"MIG-stub-{h[1]}-{h[2]}"

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> SimpleNamespace:
        if h[0] == "mig":
            return SimpleNamespace(total=self.mig[h[1]][h[2]][2] << 20)
        return SimpleNamespace(total=81920 << 20)

    def nvmlDeviceGetNumaNodeId(self, h: Any) -> int:
        return 0 if h[1] < self.gpus // 2 else 1

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: Any) -> int:
        return 4

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        return [1, 1] if h[1] in self.mig else [0, 0]

    def nvmlDeviceGetNvLinkState(self, h: Any, link: int) -> int:
        if link >= 12:
            raise NVMLError(NOT_SUPPORTED)
        return int(self._remote(h[1], link) is not None)

    def _remote(self, i: int, link: int) -> int | str | None:
        if self.switch_links:
            return "switch" if link < self.switch_links else None
        peers = [
            j
            for (a, b), n in sorted(self.links.items())
            for j in ((b,) * n if a == i else (a,) * n if b == i else ())
        ]
        return peers[link] if link < len(peers) else None

    def nvmlDeviceGetNvLinkVersion(self, h: Any, link: int) -> int:
        return 4  # NVML's 3.0: NVLink 3

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: Any, link: int) -> int:
        return 2 if self._remote(h[1], link) == "switch" else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: Any, link: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self.bus(int(self._remote(h[1], link))))  # type: ignore[arg-type]

    def nvmlDeviceGetTopologyCommonAncestor(self, a: Any, b: Any) -> int:
        return self.NVML_TOPOLOGY_SINGLE if a[1] // 2 == b[1] // 2 else self.NVML_TOPOLOGY_SYSTEM

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, k: int) -> tuple[str, int, int]:
        if k >= len(self.mig.get(h[1], [])):
            raise NVMLError(NOT_SUPPORTED)
        return ("mig", h[1], k)

    def nvmlDeviceGetGpuInstanceId(self, m: Any) -> int:
        return m[2]

    def nvmlDeviceGetGpuInstanceById(self, h: Any, gi: int) -> tuple[int, int]:
        return (h[1], gi)

    def nvmlGpuInstanceGetInfo(self, gi: tuple[int, int]) -> SimpleNamespace:
        profile, start, _ = self.mig[gi[0]][gi[1]]
        return SimpleNamespace(profileId=profile, placement=SimpleNamespace(start=start, size=4))

    def nvmlDeviceGetAttributes(self, m: Any) -> SimpleNamespace:
        return SimpleNamespace(gpuInstanceSliceCount=3, memorySizeMB=self.mig[m[1]][m[2]][2])

    def nvmlEventSetCreate(self) -> str:
        return "events"

    def nvmlDeviceGetSupportedEventTypes(self, h: Any) -> int:
        return 0xFF

    def nvmlDeviceRegisterEvents(self, h: Any, mask: int, events: Any) -> None:
        pass

    def nvmlEventSetWait_v2(self, events: Any, timeout_ms: int) -> SimpleNamespace:
        if not self.events:
            raise NVMLError(TIMEOUT)
        return self.events.pop(0)

    def nvmlEventSetFree(self, events: Any) -> None:
        pass


def test_nvml_nvswitch_board_becomes_placements_nvswitch_topology() -> None:
    inventory = NvmlBackend(StubNvml(8, switch_links=12)).discover()
    assert inventory.nvswitch_links == (12,) * 8 and inventory.nvlink == ()
    assert inventory.nvlink_generation == 3 and inventory.pcie_generation == 4
    assert [g.numa for g in inventory.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [g.pcie_switch for g in inventory.gpus] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert inventory.gpus[0].pci_bus_id == "00000000:10:00.0"
    assert inventory.driver_version == "550.54.15"
    topology = topology_of(inventory)
    assert topology.links == nvswitch(8, nvlink_generation=3).links
    assert topology.bandwidth.tolist() == nvswitch(8, nvlink_generation=3).bandwidth.tolist()


def test_nvml_direct_links_become_the_nvlink_matrix_of_a_dgx1() -> None:
    pairs = {tuple(int(x) for x in k.split("-")): n for k, n in DGX1_PAIRS.items()}
    stub = StubNvml(8, links=pairs)  # type: ignore[arg-type]
    inventory = NvmlBackend(stub).discover()
    assert inventory.links(0, 3) == inventory.links(3, 0) == 2 and inventory.links(0, 5) == 0
    assert sum(inventory.links(0, j) for j in range(8)) == 6  # a V100's six links
    assert topology_of(inventory).links == tuple(
        type(link)(link.a, link.b, link.type, link.count) for link in dgx1_v100().links
    )


def test_nvml_mig_instances_get_their_catalogue_names_and_slots() -> None:
    stub = StubNvml(2)
    stub.mig = {1: [(9, 4, 40192), (19, 0, 9728)]}  # A100-80GB: 3g.40gb is profile 9, 1g.10gb 19
    inventory = NvmlBackend(stub).discover()
    assert not inventory.gpus[0].mig_enabled and inventory.gpus[1].mig_enabled
    assert [(m.profile, m.start, m.memory_mib) for m in inventory.gpus[1].mig] == [
        ("1g.10gb", 0, 9728),
        ("3g.40gb", 4, 40192),
    ]
    assert inventory.gpus[1].mig[0].uuid == "MIG-stub-1-1"


def test_mig_profile_name_falls_back_to_nvidia_smi_rounding_for_unknown_models() -> None:
    assert mig_profile_name("NVIDIA Z9000", 99, 3, 40192) == "3g.40gb"
    assert mig_profile_name("NVIDIA Z9000", 99, 1, 9728) == "1g.10gb"


def test_nvml_failure_is_one_clear_sentence() -> None:
    stub = StubNvml(1)
    stub.init_error = LIB_MISSING
    with pytest.raises(DiscoveryError) as caught:
        NvmlBackend(stub).discover()
    assert str(caught.value).startswith("NVML init failed: libnvidia-ml.so.1 was not found")


def test_nvml_critical_xid_is_an_event_and_application_xids_are_not() -> None:
    stub = StubNvml(2)
    backend = NvmlBackend(stub)
    backend.discover()
    xid = stub.nvmlEventTypeXidCriticalError
    stub.events = [
        SimpleNamespace(device=("gpu", 1), eventType=xid, eventData=13),  # an application fault
        SimpleNamespace(device=("gpu", 1), eventType=xid, eventData=79),  # fell off the bus
    ]
    assert backend.wait_events(0.01) == []
    assert backend.wait_events(0.01) == [HealthEvent("GPU-stub-1", False, "Xid 79")]
    assert backend.wait_events(0.01) == []  # timeout


# ---------------------------------------------------------------------------------------------
# Annotations


def hgx(seed: str = "n") -> dict[str, Any]:
    return {"model": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "gpus": 8, "numa": [0] * 4 + [1] * 4,
            "nvswitch": 12, "nvlink_generation": 3, "uuid_seed": seed}  # fmt: skip


def test_topology_annotation_is_placements_schema_plus_uuids() -> None:
    inventory, _ = parse(hgx())
    doc = topology_annotation(inventory)
    assert from_inventory(doc) == topology_of(inventory)
    assert set(doc["gpus"][0]) == {"index", "numa", "socket", "pcie_switch", "uuid"}
    node = {
        "metadata": {"name": "n", "annotations": {"tessellate.dev/gpu-topology": json.dumps(doc)}},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }
    assert node_info(node).gpu_uuids == tuple(g.uuid for g in inventory.gpus)


def test_topology_without_a_known_nvlink_generation_is_refused() -> None:
    doc = hgx()
    del doc["nvlink_generation"]
    inventory, _ = parse(doc)
    with pytest.raises(ValueError, match="generation is unknown"):
        topology_annotation(inventory)


def test_devices_annotation_reports_model_memory_mig_and_health() -> None:
    doc = hgx()
    doc["gpus"] = [{}, {"mig": [{"profile": "7g.80gb", "start": 0}]}]
    doc["numa"] = [0, 0]
    inventory, _ = parse(doc)
    state = DeviceState(inventory)
    state.apply([HealthEvent(inventory.gpus[0].uuid, False, "Xid 48")])
    gpus = devices_annotation(state.snapshot())["gpus"]
    assert gpus[0]["health"] == "Unhealthy" and gpus[0]["reason"] == "Xid 48"
    assert gpus[1]["mig"]["enabled"] and gpus[1]["mig"]["instances"][0]["profile"] == "7g.80gb"
    assert {g["model"] for g in gpus} == {"NVIDIA A100-SXM4-80GB"} and gpus[1]["memory_mib"] == 81920
