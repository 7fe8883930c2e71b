"""Dynamic MIG against a real kube-apiserver: the agent reads `tessellate.dev/mig-plan` from its Node,
applies it on the fake backend and answers in `tessellate.dev/mig-plan-status`; the new instances
reach the (fake) kubelet and are handed to the pod the scheduler placed on them.

The agent runs with its DaemonSet's identity (RBAC + the admission policy of
manifests/agent/), so these tests also show that policy lets it answer plans,
and a separate test that it cannot write one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tessellate.agent.agent import Agent, AgentConfig
from tessellate.agent.devices import GPU, GPU_MILLI
from tessellate.agent.fake import FakeBackend, created_mig_uuid, fake_uuid
from tessellate.agent.fake_kubelet import FakeKubelet
from tessellate.agent.responses import VISIBLE_DEVICES
from tessellate.placement.mig import MigLayout

from integration import cluster
from integration.schedproc import wait_for
from integration.test_agent import (
    agent_kubeconfig,
    bind,
    create_gpu_node,
    gpu_pod,
    hgx_a100,
    node_capacity_writer,
)
from tessellate.kube import ApiError, KubeClient
from tessellate.wire.devices import DEVICES
from tessellate.wire.migplan import (
    APPLIED,
    FAILED,
    PLAN,
    PLAN_STATUS,
    GpuPlan,
    NodePlan,
    decode_status,
    encode_plan,
)

pytestmark = pytest.mark.integration

MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_1G = "nvidia.com/mig-1g.10gb"


@pytest.fixture
def node(admin: KubeClient) -> Iterator[str]:
    name = cluster.unique("mig-node")
    create_gpu_node(admin, name)
    yield name
    with contextlib.suppress(ApiError):
        admin.delete(f"/api/v1/nodes/{name}")


@pytest.fixture
def kubelet(tmp_path: Path, admin: KubeClient, node: str) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "dp", on_devices=node_capacity_writer(admin, node)).start()
    yield k
    k.stop()


@pytest.fixture
def agent(
    control_plane: cluster.ControlPlane, admin: KubeClient, node: str, kubelet: FakeKubelet, tmp_path: Path
) -> Iterator[Agent]:
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(yaml.safe_dump(hgx_a100(node)))
    api = KubeClient.from_kubeconfig(agent_kubeconfig(control_plane, admin, node, tmp_path))
    config = AgentConfig(
        node_name=node,
        mode="full",
        device_plugin_dir=kubelet.directory,
        poll_seconds=0.05,
        resync_seconds=30,
        mig_dynamic=True,
        mig_plan_poll_seconds=0.1,
    )
    a = Agent(config, FakeBackend(gpus), api)
    a.start()
    assert a.publisher is not None and a.publisher.published.wait(20), "the agent did not publish its node"
    kubelet.wait_registered([GPU, GPU_MILLI, MIG_3G, MIG_1G])
    yield a
    a.stop()
    api.close()


def uuids(node: str) -> list[str]:
    return [fake_uuid(node, i) for i in range(8)]


def publish_plan(admin: KubeClient, node: str, raw: str) -> None:
    admin.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {PLAN: raw}}})


def plan_status(admin: KubeClient, node: str, generation: int) -> dict:
    """The node's annotations once the agent answered `generation`."""
    found: dict = {}

    def answered() -> bool:
        annotations = admin.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
        raw = annotations.get(PLAN_STATUS)
        if raw and decode_status(raw).generation == generation:
            found.update(annotations)
            return True
        return False

    wait_for(answered, 20, f"{PLAN_STATUS} for generation {generation}", interval=0.1)
    return found


def test_a_plan_is_applied_published_and_served_to_the_pod_placed_on_it(
    agent: Agent,
    admin: KubeClient,
    scheduler_api: KubeClient,
    kubelet: FakeKubelet,
    node: str,
    namespace: str,
) -> None:
    devices = json.loads(admin.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"][DEVICES])
    assert devices["mig_dynamic"] is True
    kubelet.wait_devices(GPU, lambda d: len(d) == 8)
    layout = MigLayout.of("A100-80GB", ("3g.40gb", 4), ("1g.10gb", 0))
    publish_plan(admin, node, encode_plan(NodePlan(1, (GpuPlan(2, layout, uuids(node)[2]),))))

    annotations = plan_status(admin, node, 1)
    status = decode_status(annotations[PLAN_STATUS])
    assert (status.state, status.message) == (APPLIED, "") and status.time.endswith("Z")
    gpu2 = json.loads(annotations[DEVICES])["gpus"][2]  # written in the same PATCH as the status
    assert gpu2["mig"]["enabled"]
    assert sorted((i["profile"], i["start"]) for i in gpu2["mig"]["instances"]) == [
        ("1g.10gb", 0),
        ("3g.40gb", 4),
    ]

    big = created_mig_uuid(uuids(node)[2], "3g.40gb", 4)
    assert [d.ID for d in kubelet.wait_devices(MIG_3G, lambda d: len(d) == 1)] == [big]
    assert len(kubelet.wait_devices(GPU, lambda d: len(d) == 7)) == 7  # GPU 2 is a MIG GPU now
    wait_for(
        lambda: admin.get(f"/api/v1/nodes/{node}")["status"]["allocatable"].get(MIG_3G) == "1",
        20,
        "the kubelet's allocatable to show the new instance",
    )

    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("slice", namespace, node, {MIG_3G: "1"}))
    slice_gpu = {"index": 2, "uuid": uuids(node)[2], "mig": "3g.40gb", "start": 4}
    bind(scheduler_api, namespace, "slice", node, {"gpus": [slice_gpu]})
    assert kubelet.preferred_allocation(MIG_3G, [big], 1) == [big]
    assert kubelet.allocate(MIG_3G, [big]).envs[VISIBLE_DEVICES] == big


def test_plans_the_agent_cannot_apply_are_answered_failed_with_the_reason(
    agent: Agent, admin: KubeClient, scheduler_api: KubeClient, node: str, namespace: str
) -> None:
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("whole", namespace, node, {GPU: "1"}))
    bind(scheduler_api, namespace, "whole", node, {"gpus": [{"index": 5, "milli": 1000}]})
    layout = MigLayout.of("A100-80GB", ("7g.80gb", 0))
    publish_plan(admin, node, encode_plan(NodePlan(3, (GpuPlan(5, layout, uuids(node)[5]),))))
    status = decode_status(plan_status(admin, node, 3)[PLAN_STATUS])
    assert (status.state, status.message) == (
        FAILED,
        f"GPU 5 runs pod {namespace}/whole as a whole GPU; cannot enable MIG mode",
    )

    bad = {
        "version": 1,
        "generation": 4,
        "gpus": [{"index": 1, "instances": [{"profile": "3g.40gb", "start": 2}]}],
    }
    publish_plan(admin, node, json.dumps(bad))
    status = decode_status(plan_status(admin, node, 4)[PLAN_STATUS])
    assert (
        status.state == FAILED and "3g.40gb cannot start at memory slice 2 (allowed: 0, 4)" in status.message
    )
    devices = json.loads(admin.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"][DEVICES])
    assert not any(g["mig"]["enabled"] for g in devices["gpus"])


def test_the_agent_may_answer_a_plan_but_not_write_one(
    control_plane: cluster.ControlPlane, admin: KubeClient, node: str, tmp_path: Path
) -> None:
    original = '{"version":1,"generation":1,"gpus":[]}'
    publish_plan(admin, node, original)
    api = KubeClient.from_kubeconfig(agent_kubeconfig(control_plane, admin, node, tmp_path))
    path = f"/api/v1/nodes/{node}"
    messages: list[str] = []

    def plan_write_denied() -> bool:
        """The policy takes about a second to apply after its first `kubectl apply`."""
        try:
            api.patch(path, {"metadata": {"annotations": {PLAN: '{"version":1,"generation":2,"gpus":[]}'}}})
        except ApiError as exc:
            messages.append(exc.message)
            return True
        publish_plan(admin, node, original)  # it got through before the policy was in force: undo
        return False

    try:
        wait_for(plan_write_denied, 20, "the admission policy to deny the agent writing a plan")
        assert "the agent may not write tessellate.dev/mig-plan" in messages[-1]
        api.patch(path, {"metadata": {"annotations": {PLAN_STATUS: '{"generation":1,"state":"Applied"}'}}})
        for attempt in (
            lambda: api.patch(path, {"metadata": {"annotations": {PLAN: None}}}),  # removing it
            lambda: api.patch(f"{path}/status", {"metadata": {"annotations": {PLAN: "{}"}}}),  # via status
        ):
            with pytest.raises(ApiError) as denied:
                attempt()
            assert "the agent may not write tessellate.dev/mig-plan" in denied.value.message
        annotations = admin.get(path)["metadata"]["annotations"]
        assert annotations[PLAN] == original
        assert decode_status(annotations[PLAN_STATUS]).state == APPLIED
    finally:
        api.close()
