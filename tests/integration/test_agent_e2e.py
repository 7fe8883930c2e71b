"""End to end: `tessellate scheduler` + `tessellate agent run` (fake NVML) + a real API server.

Both run as real processes. The fake kubelet in this process plays the node's
kubelet: it receives the agent's registration, writes node capacity from the
device stream, and admits each pod the scheduler bound (GetPreferredAllocation,
then Allocate). To show that the agent follows the scheduler and not the
kubelet, Allocate is called with device IDs of *other* GPUs than the assigned
ones, as a kubelet that ignored the preference would.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tessellate.agent.devices import GPU, GPU_MEMORY, GPU_MILLI
from tessellate.agent.fake import fake_uuid
from tessellate.agent.fake_kubelet import FakeKubelet
from tessellate.agent.responses import MPS_MEMORY, MPS_THREADS, VISIBLE_DEVICES
from tessellate.placement.mig import MigInstance, geometry

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, wait_for
from integration.test_agent import (
    agent_kubeconfig,
    create_gpu_node,
    gpu_pod,
    hgx_a100,
    node_capacity_writer,
    other_ids,
)
from tessellate.kube import ApiError, KubeClient
from tessellate.wire.assignment import ASSIGNMENT, GpuAssignment, decode
from tessellate.wire.devices import DEVICES
from tessellate.wire.migplan import PLAN, PLAN_STATUS, decode_plan, decode_status
from tessellate.wire.topology import TOPOLOGY

pytestmark = pytest.mark.integration

MIG_DYNAMIC = rbac.MANIFESTS / "mig-dynamic"


class AgentProcess:
    """`tessellate agent run` as a subprocess, logging to a file."""

    def __init__(
        self, kubeconfig: str, node: str, gpus: Path, plugin_dir: Path, log: Path, extra: tuple[str, ...] = ()
    ):
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tessellate.agent_cli", "run",
                "--kubeconfig", kubeconfig, "--node-name", node, "--fake", str(gpus),
                "--device-plugin-dir", str(plugin_dir), "--mode", "full", "--kubelet-poll", "100ms",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def gpu_node(admin: KubeClient) -> Iterator[str]:
    name = cluster.unique("e2e-hgx")
    create_gpu_node(admin, name)
    yield name
    with contextlib.suppress(ApiError):
        admin.delete(f"/api/v1/nodes/{name}")


@pytest.fixture(params=[()], ids=["full"])
def stack(
    request: pytest.FixtureRequest,
    control_plane: cluster.ControlPlane,
    admin: KubeClient,
    gpu_node: str,
    tmp_path: Path,
) -> Iterator[FakeKubelet]:
    """Fake kubelet, agent process and scheduler process, ready to place and admit pods
    (`request.param`: extra agent flags)."""
    kubelet = FakeKubelet(tmp_path / "dp", on_devices=node_capacity_writer(admin, gpu_node)).start()
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(yaml.safe_dump(hgx_a100(gpu_node)))
    kubeconfig = agent_kubeconfig(control_plane, admin, gpu_node, tmp_path)
    agent = AgentProcess(kubeconfig, gpu_node, gpus, kubelet.directory, tmp_path / "agent.log", request.param)
    sched = None
    mig_dynamic = "--mig-dynamic" in request.param
    try:
        kubelet.wait_registered([GPU, GPU_MILLI], timeout=60)
        kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 8000, timeout=30)

        def published() -> bool:
            node = admin.get(f"/api/v1/nodes/{gpu_node}")
            return TOPOLOGY in (node["metadata"].get("annotations") or {})

        wait_for(published, 30, "the agent's topology annotation")
        # As its ServiceAccount: only it may bind with an assignment (manifests/admission-policy.yaml).
        # With --mig-dynamic it also writes MIG plans, which manifests/mig-dynamic/ lets it do.
        kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
        if mig_dynamic:
            control_plane.kubectl("apply", "-k", str(MIG_DYNAMIC))
        sched = SchedulerProcess(kubeconfig, tmp_path, leaderElection={"leaderElect": False})
        sched.start()
        yield kubelet
        # Every path the test took must be a designed one, not a crash the loop survived.
        assert "Traceback" not in sched.log(), sched.log()[-4000:]
    except BaseException:
        print(agent.log()[-4000:])
        raise
    finally:
        if sched is not None:
            sched.stop()
        if mig_dynamic:
            # The base manifests' tests expect the scheduler NOT to patch nodes: take the grant back.
            control_plane.kubectl("delete", "-k", str(MIG_DYNAMIC), "--ignore-not-found", "--wait")
        assert agent.stop() == 0, agent.log()[-4000:]
        kubelet.stop()


def bound_assignment(admin: KubeClient, namespace: str, name: str) -> GpuAssignment:
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"

    def bound() -> bool:
        return bool(admin.get(path)["spec"].get("nodeName"))

    wait_for(bound, 60, f"pod {name} to be bound")
    pod: dict[str, Any] = admin.get(path)
    return decode(pod["metadata"]["annotations"][ASSIGNMENT])


def test_two_gpu_pod_gets_exactly_the_gpus_the_scheduler_chose(
    stack: FakeKubelet, admin: KubeClient, gpu_node: str, namespace: str
) -> None:
    kubelet = stack
    uuids = [fake_uuid(gpu_node, i) for i in range(8)]
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("first", namespace, gpu_node, {GPU: "1"}))
    first = bound_assignment(admin, namespace, "first")
    kubelet.allocate(GPU, [uuids[first.gpus[0].index]])

    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("pair", namespace, gpu_node, {GPU: "2"}))
    pair = bound_assignment(admin, namespace, "pair")
    chosen = [uuids[g.index] for g in pair.gpus]
    assert [g.uuid for g in pair.gpus] == chosen, "the scheduler took the UUIDs from the agent's annotation"
    assert not set(pair.indices) & set(first.indices)
    assert kubelet.preferred_allocation(GPU, kubelet.healthy_ids(GPU), 2) == chosen
    response = kubelet.allocate(GPU, other_ids(kubelet, GPU, set(chosen), 2))
    assert response.envs[VISIBLE_DEVICES] == ",".join(chosen)


def test_quarter_gpu_pod_gets_its_gpu_uuid_and_mps_limits(
    stack: FakeKubelet, admin: KubeClient, gpu_node: str, namespace: str
) -> None:
    kubelet = stack
    limits = {GPU_MILLI: "250", GPU_MEMORY: "10240"}
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("quarter", namespace, gpu_node, limits))
    assignment = bound_assignment(admin, namespace, "quarter")
    (share,) = assignment.gpus
    assert share.milli == 250
    target = fake_uuid(gpu_node, share.index)
    assert share.uuid == target
    preferred = kubelet.preferred_allocation(GPU_MILLI, kubelet.healthy_ids(GPU_MILLI), 250)
    assert {d.split("::")[0] for d in preferred} == {target}
    response = kubelet.allocate(GPU_MILLI, other_ids(kubelet, GPU_MILLI, {target}, 250))
    assert response.envs[VISIBLE_DEVICES] == target
    assert response.envs[MPS_THREADS] == "25"
    assert response.envs[MPS_MEMORY] == "0=10240M"
    recorded = admin.get(f"/api/v1/namespaces/{namespace}/pods/quarter")["metadata"]["annotations"]
    assert json.loads(recorded["tessellate.dev/allocated"]) == {"main": [target]}


@pytest.mark.parametrize("stack", [("--mig-dynamic",)], ids=["mig-dynamic"], indirect=True)
def test_a_mig_pod_waits_for_the_agent_to_create_its_instance_then_gets_it(
    stack: FakeKubelet, admin: KubeClient, gpu_node: str, namespace: str
) -> None:
    """No GPU is in MIG mode: the scheduler plans an instance, the agent creates it, the kubelet
    advertises it, and only then is the pod bound, to exactly that instance."""
    kubelet = stack
    resource = "nvidia.com/mig-1g.10gb"
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("small", namespace, gpu_node, {resource: "1"}))
    assignment = bound_assignment(admin, namespace, "small")
    (share,) = assignment.gpus
    assert share.mig == "1g.10gb" and share.uuid == fake_uuid(gpu_node, share.index)

    annotations = admin.get(f"/api/v1/nodes/{gpu_node}")["metadata"]["annotations"]
    plan = decode_plan(annotations[PLAN], geometry("A100-80GB"))
    status = decode_status(annotations[PLAN_STATUS])
    assert status.applied and status.generation == plan.generation
    wanted = plan.gpu(share.index)
    assert wanted is not None and MigInstance("1g.10gb", share.start) in wanted.layout.instances
    devices = {g["index"]: g for g in json.loads(annotations[DEVICES])["gpus"]}
    created = [
        m
        for m in devices[share.index]["mig"]["instances"]
        if (m["profile"], m["start"]) == ("1g.10gb", share.start)
    ]
    assert len(created) == 1, devices[share.index]
    reasons = [e.get("reason") for e in cluster.events_for(admin, namespace, "small")]
    assert "WaitingForMIG" in reasons and "Scheduled" in reasons

    assert kubelet.healthy_ids(resource) == [created[0]["uuid"]]
    response = kubelet.allocate(resource, [created[0]["uuid"]])
    assert response.envs[VISIBLE_DEVICES] == created[0]["uuid"]


@pytest.mark.parametrize("stack", [("--mig-dynamic",)], ids=["mig-dynamic"], indirect=True)
def test_mig_pods_arriving_together_get_distinct_new_instances(
    stack: FakeKubelet, admin: KubeClient, gpu_node: str, namespace: str
) -> None:
    """Several pods planned on one node before the agent answers: each plan generation carries
    every pending instance, so none is lost and no instance is handed out twice."""
    kubelet = stack
    resource = "nvidia.com/mig-2g.20gb"
    names = [f"m{i}" for i in range(4)]
    for name in names:
        admin.post(
            f"/api/v1/namespaces/{namespace}/pods", gpu_pod(name, namespace, gpu_node, {resource: "1"})
        )
    shares = [bound_assignment(admin, namespace, name).gpus[0] for name in names]
    assert len({(s.index, s.start) for s in shares}) == len(names)
    devices = json.loads(admin.get(f"/api/v1/nodes/{gpu_node}")["metadata"]["annotations"][DEVICES])["gpus"]
    uuid_of = {
        (g["index"], m["start"]): m["uuid"]
        for g in devices
        for m in g["mig"]["instances"]
        if m["profile"] == "2g.20gb"
    }
    assert {(s.index, s.start) for s in shares} <= set(uuid_of)
    assert len(kubelet.healthy_ids(resource)) == len(uuid_of)
