"""MIG instances in `--mode full`: `nvidia.com/mig-<profile>` over real gRPC, driven by the fake kubelet.

Pods come from an in-memory source (as in test_agent_plugin.py); the node is
four A100-80GB GPUs, GPU 1 and 2 in MIG mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tessellate.agent.agent import Agent
from tessellate.agent.devices import GPU, GPU_MILLI, mig_profiles
from tessellate.agent.discovery import HealthEvent
from tessellate.agent.fake import FakeBackend, fake_uuid
from tessellate.agent.fake_kubelet import FakeKubelet
from tessellate.agent.responses import VISIBLE_DEVICES
from tessellate.placement.mig import geometry
from test_agent_plugin import MemoryPods, start_agent

SEED = "mig-node"
UUIDS = [fake_uuid(SEED, i) for i in range(4)]
A100 = "NVIDIA A100-SXM4-80GB"
MIG_1G = "nvidia.com/mig-1g.10gb"
MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_2G = "nvidia.com/mig-2g.20gb"


def mig_uuid(gpu: int, k: int) -> str:
    """The fake's UUID for the k-th instance listed for a GPU in the file."""
    return fake_uuid(f"{UUIDS[gpu]}/mig", k, "MIG")


DOC: dict[str, Any] = {
    "model": A100,
    "memory_mib": 81920,
    "numa": [0, 0, 1, 1],
    "uuid_seed": SEED,
    "gpus": [
        {},
        {"mig": [{"profile": "3g.40gb", "start": 4}, {"profile": "1g.10gb", "start": 0},
                 {"profile": "1g.10gb", "start": 1}]},
        {"mig": [{"profile": "2g.20gb", "start": 0}]},
        {},
    ],
}  # fmt: skip


def mig_assignment(gpu: int, profile: str, start: int, uuid: str | None = None) -> dict[str, Any]:
    return {"gpus": [{"index": gpu, "uuid": uuid or UUIDS[gpu], "mig": profile, "start": start}]}


@pytest.fixture
def pods() -> MemoryPods:
    return MemoryPods()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(DOC)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "dp").start()
    yield k
    k.stop()


@pytest.fixture
def agent(tmp_path: Path, backend: FakeBackend, pods: MemoryPods, kubelet: FakeKubelet) -> Iterator[Agent]:
    a = start_agent(tmp_path, backend, pods)
    yield a
    a.stop()


def test_every_profile_of_the_model_is_registered_and_lists_its_mig_uuids(
    agent: Agent, kubelet: FakeKubelet
) -> None:
    profiles = geometry(A100).profile_names
    names = [f"nvidia.com/mig-{p}" for p in profiles]
    kubelet.wait_registered([GPU, GPU_MILLI, *names])
    assert kubelet.endpoints[MIG_1G].request.endpoint == "tessellate-mig-1g.10gb.sock"
    one = kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    assert [d.ID for d in one] == [mig_uuid(1, 1), mig_uuid(1, 2)]  # sorted by start: 0, 1
    assert {d.health for d in one} == {"Healthy"} and one[0].topology.nodes[0].ID == 0
    assert [d.ID for d in kubelet.wait_devices(MIG_3G, lambda d: len(d) == 1)] == [mig_uuid(1, 0)]
    assert [d.ID for d in kubelet.wait_devices(MIG_2G, lambda d: len(d) == 1)] == [mig_uuid(2, 0)]
    assert kubelet.wait_devices("nvidia.com/mig-7g.80gb", lambda d: True) == []  # registered, empty
    whole = kubelet.wait_devices(GPU, lambda d: len(d) == 2)
    assert [d.ID for d in whole] == [UUIDS[0], UUIDS[3]]  # MIG GPUs are not whole GPUs
    assert len(kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 2000)) == 2000


def test_allocate_gives_the_assigned_instance_not_the_kubelets_pick(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    pods.add("small", "2026-01-01T00:00:00Z", mig_assignment(1, "1g.10gb", 1), [{MIG_1G: "1"}])
    available = kubelet.healthy_ids(MIG_1G)
    assert kubelet.preferred_allocation(MIG_1G, available, 1) == [mig_uuid(1, 2)]
    response = kubelet.allocate(MIG_1G, [mig_uuid(1, 1)])  # a kubelet that ignored the preference
    assert response.envs[VISIBLE_DEVICES] == mig_uuid(1, 2)
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in response.envs


def test_cdi_strategy_names_the_mig_device(
    tmp_path: Path, backend: FakeBackend, pods: MemoryPods, kubelet: FakeKubelet
) -> None:
    agent = start_agent(tmp_path, backend, pods, device_list_strategy="cdi")
    try:
        kubelet.wait_devices(MIG_3G, lambda d: len(d) == 1)
        pods.add("big", "2026-01-01T00:00:00Z", mig_assignment(1, "3g.40gb", 4), [{MIG_3G: "1"}])
        response = kubelet.allocate(MIG_3G, [mig_uuid(1, 0)])
        assert [d.name for d in response.cdi_devices] == [f"nvidia.com/gpu={mig_uuid(1, 0)}"]
        assert VISIBLE_DEVICES not in response.envs
    finally:
        agent.stop()


def test_two_containers_take_the_assigned_instances_in_order(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    assignment = {
        "gpus": [{"index": 1, "mig": "1g.10gb", "start": 1}, {"index": 1, "mig": "1g.10gb", "start": 0}]
    }
    pods.add("pair", "2026-01-01T00:00:00Z", assignment, [{MIG_1G: "1"}, {MIG_1G: "1"}])
    first = kubelet.allocate(MIG_1G, [mig_uuid(1, 1)])
    second = kubelet.allocate(MIG_1G, [mig_uuid(1, 2)])
    assert [first.envs[VISIBLE_DEVICES], second.envs[VISIBLE_DEVICES]] == [mig_uuid(1, 2), mig_uuid(1, 1)]


def test_a_pod_of_another_scheduler_gets_the_kubelets_pick(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    pods.add("foreign", "2026-01-01T00:00:00Z", None, [{MIG_1G: "1"}])
    assert kubelet.allocate(MIG_1G, [mig_uuid(1, 1)]).envs[VISIBLE_DEVICES] == mig_uuid(1, 1)


@pytest.mark.parametrize(
    ("assignment", "resource", "message"),
    [
        (mig_assignment(1, "1g.10gb", 2), MIG_1G,
         "names 1g.10gb at start 2 of GPU 1, which does not exist on this node "
         "(GPU 1 has 1g.10gb at start 0"),
        (mig_assignment(1, "3g.40gb", 4), MIG_1G,
         "the assignment names a 3g.40gb instance on GPU 1, "
         "but the container asks for nvidia.com/mig-1g.10gb"),
        (mig_assignment(1, "1g.10gb", 0, uuid=UUIDS[2]), MIG_1G,
         f"the assignment says GPU 1 is {UUIDS[2]}, but on this node GPU 1 is {UUIDS[1]}"),
        (mig_assignment(0, "1g.10gb", 0), MIG_1G, "but GPU 0 is not in MIG mode"),
        (mig_assignment(9, "1g.10gb", 0, uuid="GPU-x"), MIG_1G, "but this node has no GPU 9"),
        ({"gpus": [{"index": 0}]}, MIG_1G, "its assignment names no MIG instance"),
    ],
)  # fmt: skip
def test_allocate_refuses_an_instance_that_is_not_what_the_assignment_says(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods, assignment: dict, resource: str, message: str
) -> None:
    kubelet.wait_devices(resource, lambda d: len(d) == 2)
    pods.add("wrong", "2026-01-01T00:00:00Z", assignment, [{resource: "1"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(resource, [mig_uuid(1, 1)])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in refused.value.details()


def test_a_whole_gpu_request_with_a_mig_assignment_is_refused_not_given_the_parent(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_devices(GPU, lambda d: len(d) == 2)
    pods.add("confused", "2026-01-01T00:00:00Z", mig_assignment(1, "1g.10gb", 0), [{GPU: "1"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(GPU, [UUIDS[0]])
    assert "its assignment gives it MIG instances (1g.10gb at start 0 of GPU 1)" in refused.value.details()


def test_device_ids_of_another_profile_are_refused(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    pods.add("p", "2026-01-01T00:00:00Z", None, [{MIG_1G: "1"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(MIG_1G, [mig_uuid(1, 0)])  # the 3g.40gb instance
    assert f"MIG devices this node does not serve as {MIG_1G}: {mig_uuid(1, 0)}" in refused.value.details()


def test_mig_devices_follow_their_parents_health(
    agent: Agent, kubelet: FakeKubelet, backend: FakeBackend, pods: MemoryPods
) -> None:
    kubelet.wait_devices(MIG_1G, lambda d: len(d) == 2)
    backend.inject(HealthEvent(UUIDS[1], False, "Xid 79"))
    one = kubelet.wait_devices(MIG_1G, lambda d: all(x.health == "Unhealthy" for x in d))
    assert len(one) == 2
    assert [d.health for d in kubelet.wait_devices(MIG_2G, lambda d: len(d) == 1)] == ["Healthy"]
    pods.add("unlucky", "2026-01-01T00:00:00Z", mig_assignment(1, "1g.10gb", 0), [{MIG_1G: "1"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(MIG_1G, [mig_uuid(1, 1)])
    assert "of GPU 1, which is unhealthy: Xid 79" in refused.value.details()


def test_fractions_mode_serves_no_mig_resource(
    tmp_path: Path, backend: FakeBackend, pods: MemoryPods, kubelet: FakeKubelet
) -> None:
    agent = start_agent(tmp_path, backend, pods, mode="fractions")
    try:
        kubelet.wait_registered([GPU_MILLI])
        assert [s.resource.name for s in agent.servers] == [GPU_MILLI]
    finally:
        agent.stop()


def test_profiles_come_from_the_catalogue_and_from_instances_of_unknown_models() -> None:
    doc = {"memory_mib": 1, "gpus": [{"model": "NVIDIA Z9000", "mig": [{"profile": "2g.9gb", "start": 0}]},
                                     {"model": "Tesla V100-SXM2-16GB"}]}  # fmt: skip
    inventory = FakeBackend(doc).discover()
    assert mig_profiles(inventory) == ("2g.9gb",)
    assert mig_profiles(FakeBackend(DOC).discover()) == geometry(A100).profile_names
