"""Applying MIG plans: the applier on the fake backend, and the NVML calls through a stand-in module.

The plan-watching path (node annotations, status, admission policy) runs
against a real API server in tests/integration/test_agent_mig.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from tessellate.agent.annotation import devices_annotation
from tessellate.agent.claims import ALLOCATED, gpu_users
from tessellate.agent.discovery import HealthEvent, MigConfigError
from tessellate.agent.fake import FakeBackend, created_mig_uuid, fake_uuid
from tessellate.agent.health import HealthMonitor
from tessellate.agent.migplan import MigPlanApplier, geometries
from tessellate.agent.nvml import NvmlBackend
from tessellate.agent.state import DeviceState
from tessellate.placement.mig import MigLayout
from test_agent_discovery import NOT_SUPPORTED, NVMLError, StubNvml

from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.migplan import APPLIED, FAILED, GpuPlan, NodePlan, PlanFormatError, decode_plan

A100 = "NVIDIA A100-SXM4-80GB"
SEED = "plan-node"
UUIDS = [fake_uuid(SEED, i) for i in range(4)]
DOC: dict[str, Any] = {
    "model": A100,
    "memory_mib": 81920,
    "uuid_seed": SEED,
    "gpus": [{}, {"mig": [{"profile": "1g.10gb", "start": 6}]}, {}, {"mig_pending_reset": True}],
}


def plan(
    generation: int, *gpus: tuple[int, list[tuple[str, int]]], uuid: dict[int, str] | None = None
) -> NodePlan:
    named = uuid or {}
    return NodePlan(
        generation,
        tuple(GpuPlan(i, MigLayout.of("A100-80GB", *layout), named.get(i) or UUIDS[i]) for i, layout in gpus),
    )


class Node:
    """A fake node: backend, device state, and the applier wired as the agent wires them."""

    def __init__(self, doc: dict[str, Any] = DOC):
        self.backend = FakeBackend(doc)
        self.state = DeviceState(self.backend.discover())
        monitor = HealthMonitor(self.backend, self.state)

        def rediscover():  # type: ignore[no-untyped-def]
            monitor.rediscover()
            return self.state.snapshot()

        self.applier = MigPlanApplier(self.backend, rediscover)

    def apply(self, node_plan: NodePlan, users: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return self.applier.apply(node_plan, self.state.snapshot(), users or {})

    def instances(self, index: int) -> list[tuple[str, int]]:
        gpu = self.state.snapshot().inventory.gpus[index]
        return sorted((m.profile, m.start) for m in gpu.mig) if gpu.mig_enabled else []


def test_a_plan_enables_mig_mode_and_creates_each_instance_at_its_start() -> None:
    node = Node()
    status = node.apply(plan(3, (0, [("3g.40gb", 4), ("1g.10gb", 0)])))
    assert (status.generation, status.state, status.message) == (3, APPLIED, "")
    assert node.instances(0) == [("1g.10gb", 0), ("3g.40gb", 4)]
    gpu = node.state.snapshot().inventory.gpus[0]
    assert {m.uuid for m in gpu.mig} == {created_mig_uuid(UUIDS[0], "3g.40gb", 4),
                                         created_mig_uuid(UUIDS[0], "1g.10gb", 0)}  # fmt: skip
    assert {m.memory_mib for m in gpu.mig} == {40192, 9856}
    doc = devices_annotation(node.state.snapshot(), mig_dynamic=True)
    assert doc["mig_dynamic"] is True and doc["gpus"][0]["mig"]["enabled"]


def test_existing_instances_are_kept_and_only_missing_ones_created() -> None:
    node = Node()
    before = node.state.snapshot().inventory.gpus[1].mig[0].uuid
    status = node.apply(plan(1, (1, [("1g.10gb", 6), ("2g.20gb", 0)])))
    assert status.state == APPLIED
    assert node.instances(1) == [("1g.10gb", 6), ("2g.20gb", 0)]
    assert node.state.snapshot().inventory.gpus[1].mig[-1].uuid == before  # untouched
    assert node.apply(plan(2, (1, [("1g.10gb", 6), ("2g.20gb", 0)]))).state == APPLIED  # idempotent


def test_an_instance_the_plan_does_not_list_is_left_alone_and_reported() -> None:
    node = Node()
    status = node.apply(plan(4, (1, [("3g.40gb", 0)])))
    assert status.state == APPLIED
    assert status.message == "GPU 1 also has 1g.10gb at start 6, which the plan does not list (left alone)"
    assert node.instances(1) == [("1g.10gb", 6), ("3g.40gb", 0)]


def test_a_gpu_in_use_is_not_switched_to_mig_mode() -> None:
    node = Node()
    status = node.apply(plan(5, (2, [("7g.80gb", 0)])), {UUIDS[2]: "pod ns/p as a whole GPU"})
    assert (status.state, status.message) == (
        FAILED,
        "GPU 2 runs pod ns/p as a whole GPU; cannot enable MIG mode",
    )
    assert not node.state.snapshot().inventory.gpus[2].mig_enabled


def test_a_failing_gpu_does_not_stop_the_others_but_fails_the_plan() -> None:
    node = Node()
    status = node.apply(plan(6, (0, [("7g.80gb", 0)]), (3, [("7g.80gb", 0)])))
    assert status.state == FAILED
    assert status.message.startswith("MIG mode on GPU 3 is pending a GPU reset")
    assert node.instances(0) == [("7g.80gb", 0)]


@pytest.mark.parametrize(
    ("node_plan", "message"),
    [
        (plan(1, (1, [("7g.80gb", 0)])), "GPU 1: the planned instances do not fit next to the existing ones"),
        (plan(1, (0, [("1g.10gb", 0)]), uuid={0: "GPU-other"}),
         f"the plan says GPU 0 is GPU-other, but GPU 0 is {UUIDS[0]}; not touching it"),
        (plan(1, (9, [("1g.10gb", 0)]), uuid={9: "GPU-x"}), "the plan names GPU 9, but this node has 4 GPUs"),
    ],
)  # fmt: skip
def test_plans_that_cannot_be_applied_fail_with_the_reason(node_plan: NodePlan, message: str) -> None:
    node = Node()
    status = node.apply(node_plan)
    assert status.state == FAILED and message in status.message
    assert node.instances(1) == [("1g.10gb", 6)]


def test_an_unhealthy_gpu_is_not_reconfigured() -> None:
    node = Node()
    node.state.apply([HealthEvent(UUIDS[0], False, "Xid 79")])
    status = node.apply(plan(1, (0, [("1g.10gb", 0)])))
    assert (status.state, status.message) == (FAILED, "GPU 0 is unhealthy (Xid 79); not changing it")


def test_decode_plan_refuses_an_invalid_placement_for_this_nodes_model() -> None:
    inventory = FakeBackend(DOC).discover()
    wanted = [{"profile": "3g.40gb", "start": 2}]
    raw = json.dumps({"version": 1, "generation": 2, "gpus": [{"index": 0, "instances": wanted}]})
    with pytest.raises(PlanFormatError, match=r"3g\.40gb cannot start at memory slice 2"):
        decode_plan(raw, geometries(inventory))


def test_the_fake_refuses_what_the_driver_would() -> None:
    backend = FakeBackend({"model": "Tesla V100-SXM2-16GB", "memory_mib": 16384, "gpus": 1})
    with pytest.raises(MigConfigError, match=r"GPU 0 \(Tesla V100-SXM2-16GB\) does not support MIG"):
        backend.enable_mig(0)
    with pytest.raises(MigConfigError, match="GPU 0 is not in MIG mode"):
        backend.create_mig(0, "1g.10gb", 0)
    a100 = FakeBackend(DOC)
    with pytest.raises(MigConfigError, match=r"1g\.10gb at start 6 .*overlap"):
        a100.create_mig(1, "1g.10gb", 6)
    with pytest.raises(MigConfigError, match="there is no GPU 7"):
        a100.enable_mig(7)


def _pod(name: str, annotations: dict[str, str], limits: dict[str, str], phase: str = "Running") -> dict:
    meta = {"name": name, "namespace": "ns", "annotations": annotations, "creationTimestamp": "t"}
    return {"metadata": meta,
            "spec": {"schedulerName": "tessellate",
                     "containers": [{"name": "c", "resources": {"limits": limits}}]},
            "status": {"phase": phase}}  # fmt: skip


def test_gpu_users_are_served_or_assigned_whole_gpus_and_fractions_not_mig_instances() -> None:
    pods = [
        _pod("whole", {ALLOCATED: json.dumps({"c": [UUIDS[0]]})}, {"nvidia.com/gpu": "1"}),
        _pod("part", {ASSIGNMENT: json.dumps({"gpus": [{"index": 1, "milli": 300}]})},
             {"tessellate.dev/gpu-milli": "300"}),
        _pod("mig", {ASSIGNMENT: json.dumps({"gpus": [{"index": 2, "mig": "1g.10gb", "start": 0}]}),
                     ALLOCATED: json.dumps({"c": ["MIG-x"]})}, {"nvidia.com/mig-1g.10gb": "1"}),
        _pod("done", {ALLOCATED: json.dumps({"c": [UUIDS[3]]})}, {"nvidia.com/gpu": "1"}, phase="Succeeded"),
    ]  # fmt: skip
    users = gpu_users(pods, lambda i: UUIDS[i])
    assert users == {UUIDS[0]: "pod ns/whole as a whole GPU", UUIDS[1]: "pod ns/part as a fraction"}


# ---------------------------------------------------------------------------------------------
# NVML


class Placement:
    """Stands in for pynvml's c_nvmlGpuInstancePlacement_t."""

    start = 0
    size = 0


INSUFFICIENT, FUNCTION_NOT_FOUND = 23, 13
A100_PROFILES = {0: (19, 1, 9856), 7: (20, 1, 9856), 9: (15, 1, 19968), 1: (14, 2, 19968), 2: (9, 3, 40192),
                 3: (5, 4, 40192), 4: (0, 7, 80384)}  # fmt: skip
"""NVML profile constant -> (profile id, compute slices, MiB) on an A100-80GB."""


class MigNvml(StubNvml):
    """StubNvml plus the MIG configuration calls, with an A100's rules for overlap."""

    c_nvmlGpuInstancePlacement_t = Placement
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_COUNT = 18
    NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE = 0
    NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE = 1
    NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE = 2
    NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE = 3
    NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE = 4
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0

    def __init__(self, gpus: int):
        super().__init__(gpus)
        self.pending: set[int] = set()
        self.needs_reset = False
        self.calls: list[tuple[Any, ...]] = []
        self.ci_error: int | None = None
        self.profile_info_versions = {1, 2}

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        if h[1] in self.pending:
            return [0, 1]
        return super().nvmlDeviceGetMigMode(h)

    def nvmlDeviceSetMigMode(self, h: Any, mode: int) -> int:
        self.calls.append(("set mig", h[1], mode))
        if self.needs_reset:
            self.pending.add(h[1])
        else:
            self.mig[h[1]] = []
        return 0

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: Any, p: int, version: int = 2) -> SimpleNamespace:
        if version not in self.profile_info_versions:
            raise NVMLError(FUNCTION_NOT_FOUND)
        if p not in A100_PROFILES:
            raise NVMLError(NOT_SUPPORTED)
        pid, slices, mib = A100_PROFILES[p]
        return SimpleNamespace(id=pid, sliceCount=slices, memorySizeMB=mib)

    def nvmlDeviceCreateGpuInstanceWithPlacement(self, h: Any, pid: int, placement: Placement) -> tuple:
        self.calls.append(("create gi", h[1], pid, placement.start, placement.size))
        used = {s for _, start, _ in self.mig[h[1]] for s in range(start, start + 1)}
        if placement.start in used:
            raise NVMLError(INSUFFICIENT)
        return ("gi", h[1], pid, placement.start)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi: tuple, p: int, eng: int) -> SimpleNamespace:
        self.calls.append(("ci profile", p, eng))
        return SimpleNamespace(id=p)

    def nvmlGpuInstanceCreateComputeInstance(self, gi: tuple, ci: int) -> str:
        if self.ci_error is not None:
            raise NVMLError(self.ci_error)
        _, gpu, pid, start = gi
        mib = next(m for i, _, m in A100_PROFILES.values() if i == pid)
        self.mig[gpu].append((pid, start, mib))
        return "ci"

    def nvmlGpuInstanceDestroy(self, gi: tuple) -> None:
        self.calls.append(("destroy gi", gi[1], gi[3]))


def test_nvml_enables_mig_mode_and_creates_instances_that_discovery_then_finds() -> None:
    stub = MigNvml(2)
    backend = NvmlBackend(stub)
    backend.discover()
    backend.enable_mig(1)
    backend.create_mig(1, "3g.40gb", 4)
    backend.create_mig(1, "1g.10gb", 0)
    assert ("create gi", 1, 9, 4, 4) in stub.calls  # the catalogue's profile id 9, size 4 memory slices
    assert ("ci profile", 2, 0) in stub.calls  # NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, shared engines
    gpu = backend.discover().gpus[1]
    assert gpu.mig_enabled and [(m.profile, m.start) for m in gpu.mig] == [("1g.10gb", 0), ("3g.40gb", 4)]
    backend.enable_mig(1)  # already on: nothing to do
    assert [c for c in stub.calls if c[0] == "set mig"] == [("set mig", 1, 1)]


def test_nvml_profile_query_falls_back_to_v1_on_drivers_without_v2() -> None:
    stub = MigNvml(1)
    stub.profile_info_versions = {1}
    backend = NvmlBackend(stub)
    backend.enable_mig(0)
    backend.create_mig(0, "2g.20gb", 2)
    assert ("create gi", 0, 14, 2, 2) in stub.calls
    stub.profile_info_versions = set()
    with pytest.raises(MigConfigError, match=r"offers no MIG profile 2g\.20gb \(NVML lists: none\)"):
        backend.create_mig(0, "2g.20gb", 4)


def test_nvml_mig_mode_pending_a_reset_is_reported() -> None:
    stub = MigNvml(1)
    stub.needs_reset = True
    with pytest.raises(
        MigConfigError, match=r"MIG mode on GPU 0 is pending a GPU reset: .*nvidia-smi -r -i 0"
    ):
        NvmlBackend(stub).enable_mig(0)


def test_nvml_refusals_carry_nvmls_text_and_leave_no_half_made_instance() -> None:
    stub = MigNvml(1)
    stub.mig = {0: [(19, 0, 9856)]}
    backend = NvmlBackend(stub)
    with pytest.raises(
        MigConfigError, match=rf"NVML creating 1g\.10gb at start 0 on GPU 0 failed: NVML error {INSUFFICIENT}"
    ):
        backend.create_mig(0, "1g.10gb", 0)
    stub.ci_error = INSUFFICIENT
    with pytest.raises(MigConfigError, match="its compute instance"):
        backend.create_mig(0, "2g.20gb", 2)
    assert ("destroy gi", 0, 2) in stub.calls
    with pytest.raises(MigConfigError, match=r"A100-80GB has no MIG profile '5g\.50gb'"):
        backend.create_mig(0, "5g.50gb", 0)
