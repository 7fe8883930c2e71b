"""The device plugins over real gRPC on unix sockets, driven by the fake kubelet.

Pods come from an in-memory source here (the API-server version of these
checks is tests/integration/test_agent.py), so these run in a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tessellate.agent.agent import Agent, AgentConfig
from tessellate.agent.claims import ALLOCATED, Claim
from tessellate.agent.devices import GPU, GPU_MILLI, milli_id
from tessellate.agent.discovery import HealthEvent
from tessellate.agent.fake import FakeBackend, fake_uuid
from tessellate.agent.fake_kubelet import FakeKubelet
from tessellate.agent.plugin import SocketPathError
from tessellate.agent.responses import MPS_MEMORY, MPS_PIPE, MPS_THREADS, VISIBLE_DEVICES, RuntimeOptions

from tessellate.wire.assignment import ASSIGNMENT

NODE = "node-a"
SEED = "node-a"
UUIDS = [fake_uuid(SEED, i) for i in range(4)]
GPUS_DOC = {
    "model": "NVIDIA A100-SXM4-80GB",
    "memory_mib": 81920,
    "gpus": 4,
    "numa": [0, 0, 1, 1],
    "nvswitch": 12,
    "nvlink_generation": 3,
    "uuid_seed": SEED,
}


class MemoryPods:
    """Pods bound to the node, kept in a list; `record` writes the annotation like KubePods."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        created: str,
        assignment: dict | None,
        containers: list[dict[str, str]],
        init: list[dict[str, str]] | None = None,
        scheduler: str = "tessellate",
    ) -> dict[str, Any]:
        annotations = {ASSIGNMENT: json.dumps(assignment)} if assignment is not None else {}
        pod = {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "creationTimestamp": created,
                "annotations": annotations,
            },
            "spec": {
                "nodeName": NODE,
                "schedulerName": scheduler,
                "containers": [
                    {"name": f"c{i}", "resources": {"limits": limits}} for i, limits in enumerate(containers)
                ],
                "initContainers": [
                    {"name": f"init{i}", "resources": {"limits": limits}}
                    for i, limits in enumerate(init or [])
                ],
            },
            "status": {"phase": "Pending"},
        }
        self.items.append(pod)
        return pod

    def pods(self) -> list[dict[str, Any]]:
        return json.loads(json.dumps(self.items))

    def record(self, claim: Claim) -> None:
        pod = next(p for p in self.items if p["metadata"]["uid"] == claim.uid)
        annotations = pod["metadata"]["annotations"]
        served = json.loads(annotations.get(ALLOCATED, "{}"))
        served[claim.container] = list(claim.uuids)
        annotations[ALLOCATED] = json.dumps(served)


@pytest.fixture
def pods() -> MemoryPods:
    return MemoryPods()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(dict(GPUS_DOC))


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "dp").start()
    yield k
    k.stop()


def start_agent(
    tmp_path: Path, backend: FakeBackend, pods: MemoryPods, mode: str = "full", **runtime: Any
) -> Agent:
    config = AgentConfig(
        node_name=NODE,
        mode=mode,
        device_plugin_dir=tmp_path / "dp",
        poll_seconds=0.05,
        runtime=RuntimeOptions(**runtime),
    )
    agent = Agent(config, backend, api=None, pods=pods)
    agent.start()
    return agent


@pytest.fixture
def agent(tmp_path: Path, backend: FakeBackend, pods: MemoryPods, kubelet: FakeKubelet) -> Iterator[Agent]:
    a = start_agent(tmp_path, backend, pods)
    yield a
    a.stop()


def test_registers_both_resources_and_streams_every_device(agent: Agent, kubelet: FakeKubelet) -> None:
    kubelet.wait_registered([GPU, GPU_MILLI])
    whole = kubelet.wait_devices(GPU, lambda d: len(d) == 4)
    milli = kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 4000)
    assert [d.ID for d in whole] == UUIDS
    assert {d.health for d in whole + milli} == {"Healthy"}
    assert [d.topology.nodes[0].ID for d in whole] == [0, 0, 1, 1]
    ids = [d.ID for d in milli]
    assert ids[0] == milli_id(UUIDS[0], 0)
    assert ids[-1] == milli_id(UUIDS[3], 999)
    assert max(len(i) for i in ids) <= 63
    registered = {r.resource_name: r for r in kubelet.registrations}
    assert registered[GPU].version == "v1beta1"
    assert registered[GPU_MILLI].endpoint == "tessellate-gpu-milli.sock"
    assert kubelet.endpoints[GPU].options.get_preferred_allocation_available


def test_allocate_hands_out_the_assigned_gpus_not_the_kubelets_pick(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_registered([GPU])
    pods.add("two", "2026-01-01T00:00:00Z", {"gpus": [{"index": 2}, {"index": 3}]}, [{GPU: "2"}])
    preferred = kubelet.preferred_allocation(GPU, UUIDS, 2)
    assert preferred == [UUIDS[2], UUIDS[3]]
    response = kubelet.allocate(GPU, UUIDS[:2])  # a kubelet that ignored the preference
    assert response.envs[VISIBLE_DEVICES] == f"{UUIDS[2]},{UUIDS[3]}"
    assert MPS_THREADS not in response.envs
    assert json.loads(pods.items[0]["metadata"]["annotations"][ALLOCATED]) == {"c0": UUIDS[2:4]}


def test_fraction_gets_its_gpu_and_mps_limits(tmp_path: Path, backend: FakeBackend, pods: MemoryPods) -> None:
    kubelet = FakeKubelet(tmp_path / "dp").start()
    agent = start_agent(tmp_path, backend, pods, mps_pipe_dir="/run/nvidia/mps")
    try:
        kubelet.wait_registered([GPU_MILLI])
        pods.add(
            "quarter",
            "2026-01-01T00:00:00Z",
            {"gpus": [{"index": 1, "milli": 250, "memoryMiB": 10240}]},
            [{GPU_MILLI: "250", "tessellate.dev/gpu-memory-mib": "10240"}],
        )
        available = kubelet.healthy_ids(GPU_MILLI) or [
            d.ID for d in kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 4000)
        ]
        preferred = kubelet.preferred_allocation(GPU_MILLI, available, 250)
        assert len(preferred) == 250 and {p.split("::")[0] for p in preferred} == {UUIDS[1]}
        response = kubelet.allocate(GPU_MILLI, available[:250])  # devices of GPU 0
        assert response.envs[VISIBLE_DEVICES] == UUIDS[1]
        assert response.envs[MPS_THREADS] == "25"
        assert response.envs[MPS_MEMORY] == "0=10240M"
        assert response.envs[MPS_PIPE] == "/run/nvidia/mps"
        assert [(m.host_path, m.container_path) for m in response.mounts] == [("/run/nvidia/mps",) * 2]
    finally:
        agent.stop()
        kubelet.stop()


def test_pods_are_served_oldest_first_and_each_container_once(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_registered([GPU])
    pods.add("newer", "2026-01-01T00:00:05Z", {"gpus": [{"index": 0}]}, [{GPU: "1"}])
    pods.add(
        "older", "2026-01-01T00:00:01Z", {"gpus": [{"index": 1}, {"index": 2}]}, [{GPU: "1"}, {GPU: "1"}]
    )
    first = kubelet.allocate(GPU, [UUIDS[3]])
    second = kubelet.allocate(GPU, [UUIDS[3]])
    third = kubelet.allocate(GPU, [UUIDS[3]])
    assert [r.envs[VISIBLE_DEVICES] for r in (first, second, third)] == [UUIDS[1], UUIDS[2], UUIDS[0]]
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(GPU, [UUIDS[3]])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no pod bound to this node is waiting for 1 nvidia.com/gpu" in refused.value.details()


def test_fraction_without_assignment_is_refused_with_the_reason(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_registered([GPU_MILLI])
    pods.add("foreign", "2026-01-01T00:00:00Z", None, [{GPU_MILLI: "100"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(GPU_MILLI, [milli_id(UUIDS[0], k) for k in range(100)])
    assert "has no tessellate.dev/assignment annotation" in refused.value.details()


def test_whole_gpu_pod_of_another_scheduler_gets_the_kubelets_pick(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_registered([GPU])
    pods.add("foreign", "2026-01-01T00:00:00Z", None, [{GPU: "1"}])
    assert kubelet.allocate(GPU, [UUIDS[3]]).envs[VISIBLE_DEVICES] == UUIDS[3]


def test_reregisters_after_a_kubelet_restart(agent: Agent, kubelet: FakeKubelet) -> None:
    kubelet.wait_registered([GPU, GPU_MILLI])
    kubelet.restart()  # deletes our sockets too, like a real kubelet
    kubelet.wait_registered([GPU, GPU_MILLI], count=2)
    assert len(kubelet.wait_devices(GPU, lambda d: len(d) == 4)) == 4
    assert (kubelet.directory / "tessellate-gpu.sock").is_socket()


def test_a_gpu_with_a_critical_xid_is_reported_unhealthy_and_refused(
    agent: Agent, kubelet: FakeKubelet, backend: FakeBackend, pods: MemoryPods
) -> None:
    kubelet.wait_devices(GPU, lambda d: len(d) == 4)
    backend.inject(HealthEvent(UUIDS[2], False, "Xid 79"))
    whole = kubelet.wait_devices(GPU, lambda d: any(x.health == "Unhealthy" for x in d))
    assert [d.ID for d in whole if d.health == "Unhealthy"] == [UUIDS[2]]
    milli = kubelet.wait_devices(GPU_MILLI, lambda d: any(x.health == "Unhealthy" for x in d))
    assert {d.ID.split("::")[0] for d in milli if d.health == "Unhealthy"} == {UUIDS[2]}
    assert sum(d.health == "Unhealthy" for d in milli) == 1000
    pods.add("unlucky", "2026-01-01T00:00:00Z", {"gpus": [{"index": 2}]}, [{GPU: "1"}])
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(GPU, [UUIDS[0]])
    assert "unhealthy: Xid 79" in refused.value.details()
    backend.inject(HealthEvent(UUIDS[2], True, "recovered"))
    kubelet.wait_devices(GPU, lambda d: all(x.health == "Healthy" for x in d))


def test_discovery_failure_marks_every_device_unhealthy(
    tmp_path: Path, pods: MemoryPods, kubelet: FakeKubelet
) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(json.dumps(GPUS_DOC))
    backend = FakeBackend(path)
    config = AgentConfig(
        node_name=NODE,
        mode="full",
        device_plugin_dir=tmp_path / "dp",
        poll_seconds=0.05,
        rediscover_seconds=0.1,
    )
    agent = Agent(config, backend, api=None, pods=pods)
    agent.start()
    try:
        kubelet.wait_devices(GPU, lambda d: len(d) == 4 and all(x.health == "Healthy" for x in d))
        path.write_text(json.dumps({**GPUS_DOC, "fail": "NVML: driver not loaded"}))
        kubelet.wait_devices(GPU, lambda d: all(x.health == "Unhealthy" for x in d))
        kubelet.wait_devices(GPU_MILLI, lambda d: all(x.health == "Unhealthy" for x in d))
        path.write_text(json.dumps(GPUS_DOC))
        kubelet.wait_devices(GPU, lambda d: all(x.health == "Healthy" for x in d))
    finally:
        agent.stop()


class UnreachablePods(MemoryPods):
    def pods(self) -> list[dict[str, Any]]:
        raise ConnectionRefusedError(111, "Connection refused")


def test_allocate_without_the_api_server_fails_unavailable_not_with_a_guess(
    tmp_path: Path, backend: FakeBackend, kubelet: FakeKubelet
) -> None:
    agent = start_agent(tmp_path, backend, UnreachablePods())
    try:
        kubelet.wait_registered([GPU])
        assert kubelet.preferred_allocation(GPU, UUIDS, 1) == [UUIDS[0]]  # no pods: no preference
        with pytest.raises(grpc.RpcError) as failed:
            kubelet.allocate(GPU, [UUIDS[0]])
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot read this node's pods" in failed.value.details()
    finally:
        agent.stop()


def test_fractions_mode_serves_only_gpu_milli(
    tmp_path: Path, backend: FakeBackend, kubelet: FakeKubelet
) -> None:
    config = AgentConfig(node_name=NODE, device_plugin_dir=tmp_path / "dp", poll_seconds=0.05)
    agent = Agent(config, backend, api=None, pods=MemoryPods())
    agent.start()
    try:
        kubelet.wait_registered([GPU_MILLI])
        assert [s.resource.name for s in agent.servers] == [GPU_MILLI]
        assert sorted(p.name for p in kubelet.directory.iterdir()) == [
            "kubelet.sock",
            "tessellate-gpu-milli.sock",
        ]
    finally:
        agent.stop()
    assert not (kubelet.directory / "tessellate-gpu-milli.sock").exists()  # cleaned up on stop


def test_a_device_plugin_dir_too_deep_for_a_socket_is_refused_with_what_to_do(
    tmp_path: Path, backend: FakeBackend
) -> None:
    deep = tmp_path / ("d" * 100)
    config = AgentConfig(node_name=NODE, mode="full", device_plugin_dir=deep, poll_seconds=0.05)
    agent = Agent(config, backend, api=None, pods=MemoryPods())
    with pytest.raises(SocketPathError, match=r"bytes long and unix sockets allow 107; use a shorter"):
        agent.start()
    agent.stop()
    assert list(deep.iterdir()) == []


def test_a_foreign_pod_with_a_forged_assignment_never_gets_the_victims_gpu(
    agent: Agent, kubelet: FakeKubelet, pods: MemoryPods
) -> None:
    kubelet.wait_registered([GPU])
    pods.add("victim", "2026-01-01T00:00:00Z", {"gpus": [{"index": 2}]}, [{GPU: "1"}])
    assert kubelet.allocate(GPU, [UUIDS[0]]).envs[VISIBLE_DEVICES] == UUIDS[2]
    forged = {"gpus": [{"index": 2, "uuid": UUIDS[2]}]}
    pods.add("attacker", "2026-01-01T00:00:05Z", forged, [{GPU: "1"}], scheduler="default-scheduler")
    assert kubelet.preferred_allocation(GPU, UUIDS[2:], 1) == [UUIDS[3]]  # a free GPU, not the victim's
    given = kubelet.allocate(GPU, [UUIDS[2]]).envs[VISIBLE_DEVICES]  # a kubelet that ignored it
    assert given != UUIDS[2] and given in UUIDS
    recorded = json.loads(pods.items[1]["metadata"]["annotations"][ALLOCATED])
    assert recorded == {"c0": [given]}


def test_the_agent_trusts_assignments_of_its_configured_scheduler_name_only(
    tmp_path: Path, backend: FakeBackend, pods: MemoryPods, kubelet: FakeKubelet
) -> None:
    config = AgentConfig(node_name=NODE, mode="full", device_plugin_dir=tmp_path / "dp", poll_seconds=0.05,
                         scheduler_name="gpu-sched")  # fmt: skip
    agent = Agent(config, backend, api=None, pods=pods)
    agent.start()
    try:
        kubelet.wait_registered([GPU])
        pods.add(
            "mine", "2026-01-01T00:00:00Z", {"gpus": [{"index": 3}]}, [{GPU: "1"}], scheduler="gpu-sched"
        )
        pods.add("default", "2026-01-01T00:00:01Z", {"gpus": [{"index": 1}]}, [{GPU: "1"}])
        assert kubelet.allocate(GPU, [UUIDS[0]]).envs[VISIBLE_DEVICES] == UUIDS[3]
        assert kubelet.allocate(GPU, [UUIDS[0]]).envs[VISIBLE_DEVICES] == UUIDS[0]  # "tessellate" is foreign
    finally:
        agent.stop()
    with pytest.raises(ValueError, match="--scheduler-name must not be empty"):
        AgentConfig(node_name=NODE, scheduler_name="")
