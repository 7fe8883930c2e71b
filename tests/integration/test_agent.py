"""The node agent against a real kube-apiserver, with the fake kubelet on real unix sockets.

The agent runs in this process as its DaemonSet would: with the RBAC of
manifests/agent/ and a ServiceAccount token bound to an agent pod on its node,
so the ValidatingAdmissionPolicy that keeps it to its own node is in force.
Pods are created in the API server and bound the way the scheduler binds them
(a Binding carrying the tessellate.dev/assignment annotation), as the scheduler's
ServiceAccount: manifests/admission-policy.yaml refuses that annotation from anyone else.

The helpers at the top are shared with test_agent_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tessellate.agent.agent import Agent, AgentConfig
from tessellate.agent.claims import ALLOCATED
from tessellate.agent.devices import GPU, GPU_MEMORY, GPU_MILLI
from tessellate.agent.fake import FakeBackend, fake_uuid
from tessellate.agent.fake_kubelet import FakeKubelet
from tessellate.agent.proto import deviceplugin_pb2 as pb
from tessellate.agent.responses import MPS_MEMORY, MPS_THREADS, VISIBLE_DEVICES
from tessellate.placement.topology import nvswitch
from tessellate.scheduler.nodes import node_info

from integration import cluster, rbac
from integration.schedproc import wait_for
from tessellate.kube import ApiError, KubeClient
from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.devices import DEVICES
from tessellate.wire.topology import TOPOLOGY, from_inventory

pytestmark = pytest.mark.integration

AGENT_MANIFESTS = cluster.REPO / "manifests" / "agent"
AGENT_NS = "tessellate-agent"
AGENT_SA = "tessellate-agent"
TEST_TAINT = {"key": "tessellate.dev/agent-test", "value": "true", "effect": "NoSchedule"}
"""Keeps other tests' pods (and schedulers) off the nodes these tests own."""
TOLERATION = {"key": TEST_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
A100 = "NVIDIA A100-SXM4-80GB"
A100_MIB = 81920


# ---------------------------------------------------------------------------------------------
# Helpers (also used by test_agent_e2e.py)


def hgx_a100(seed: str) -> dict[str, Any]:
    """An HGX A100 8-GPU baseboard: NVSwitch fabric, GPUs 0-3 on NUMA 0, 4-7 on NUMA 1."""
    return {
        "driver_version": "550.54.15",
        "nvlink_generation": 3,
        "pcie_generation": 4,
        "model": A100,
        "memory_mib": A100_MIB,
        "gpus": 8,
        "numa": [0, 0, 0, 0, 1, 1, 1, 1],
        "nvswitch": 12,
        "uuid_seed": seed,
    }


def create_gpu_node(admin: KubeClient, name: str, gpus: int = 8) -> None:
    node, status = cluster.gpu_node(
        name, gpus=gpus, labels={"nvidia.com/gpu.present": "true"}, taints=[TEST_TAINT]
    )
    cluster.create_node(admin, node, status)


def apply_agent_manifests(cp: cluster.ControlPlane) -> None:
    cp.kubectl("apply", "-k", str(AGENT_MANIFESTS))


def agent_kubeconfig(cp: cluster.ControlPlane, admin: KubeClient, node: str, tmp_path: Path) -> str:
    """A kubeconfig holding only the agent's token, bound to an agent pod on `node`.

    The pod stands in for the DaemonSet's pod on that node (no kubelet runs it);
    binding the token to it is what puts the node name into the token.
    """
    apply_agent_manifests(cp)
    pod_name = f"agent-{node}"
    try:
        admin.post(
            f"/api/v1/namespaces/{AGENT_NS}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": AGENT_NS},
                "spec": {
                    "serviceAccountName": AGENT_SA,
                    "nodeName": node,
                    "containers": [{"name": "agent", "image": "tessellate:0.1.0"}],
                },
            },
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
    token = cp.kubectl(
        "create", "token", AGENT_SA, "-n", AGENT_NS, "--bound-object-kind", "Pod",
        "--bound-object-name", pod_name, "--duration", "1h",
    ).stdout.strip()  # fmt: skip
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": rbac._admin_cluster_entry(cp)}],
        "users": [{"name": AGENT_SA, "user": {"token": token}}],
        "contexts": [{"name": AGENT_SA, "context": {"cluster": "test", "user": AGENT_SA}}],
        "current-context": AGENT_SA,
    }
    path = tmp_path / f"agent-{node}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


def node_capacity_writer(admin: KubeClient, node: str) -> Callable[[str, list[pb.Device]], None]:
    """What the kubelet does with ListAndWatch: capacity = devices, allocatable = healthy ones."""

    def write(resource: str, devices: list[pb.Device]) -> None:
        healthy = sum(d.health == "Healthy" for d in devices)
        body = {
            "status": {"capacity": {resource: str(len(devices))}, "allocatable": {resource: str(healthy)}}
        }
        try:
            admin.patch(f"/api/v1/nodes/{node}/status", body)
        except ApiError as exc:
            if exc.status != 404:  # a last update racing the test's teardown, which deleted the node
                raise

    return write


def gpu_pod(name: str, namespace: str, node: str, limits: dict[str, str]) -> dict[str, Any]:
    return cluster.pod(
        name,
        namespace,
        limits=limits,
        tolerations=[TOLERATION],
        nodeSelector={"kubernetes.io/hostname": node},
    )


def bind(scheduler: KubeClient, namespace: str, pod: str, node: str, assignment: dict[str, Any]) -> None:
    """Bind a pod the way the scheduler does: the assignment rides on the Binding. `scheduler`
    must be the scheduler's ServiceAccount (the `scheduler_api` fixture): only it may write it."""
    scheduler.post(
        f"/api/v1/namespaces/{namespace}/pods/{pod}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod, "annotations": {ASSIGNMENT: json.dumps(assignment)}},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
    )


def other_ids(kubelet: FakeKubelet, resource: str, avoid: set[str], count: int) -> list[str]:
    """Device IDs a kubelet that ignored our preference might pick: none of the assigned GPUs'."""
    ids = [d for d in kubelet.healthy_ids(resource) if d.split("::")[0] not in avoid]
    return ids[:count]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def node(admin: KubeClient) -> Iterator[str]:
    name = cluster.unique("agent-node")
    create_gpu_node(admin, name)
    yield name
    with contextlib.suppress(ApiError):
        admin.delete(f"/api/v1/nodes/{name}")


@pytest.fixture
def gpus_file(tmp_path: Path, node: str) -> Path:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(hgx_a100(node)))
    return path


@pytest.fixture
def kubelet(tmp_path: Path, admin: KubeClient, node: str) -> Iterator[FakeKubelet]:
    k = FakeKubelet(tmp_path / "dp", on_devices=node_capacity_writer(admin, node)).start()
    yield k
    k.stop()


@pytest.fixture
def agent(
    control_plane: cluster.ControlPlane,
    admin: KubeClient,
    node: str,
    gpus_file: Path,
    kubelet: FakeKubelet,
    tmp_path: Path,
) -> Iterator[Agent]:
    api = KubeClient.from_kubeconfig(agent_kubeconfig(control_plane, admin, node, tmp_path))
    config = AgentConfig(
        node_name=node,
        mode="full",
        device_plugin_dir=kubelet.directory,
        poll_seconds=0.05,
        rediscover_seconds=0.2,
        resync_seconds=30,
    )
    a = Agent(config, FakeBackend(gpus_file), api)
    a.start()
    assert a.publisher is not None
    assert a.publisher.published.wait(20), "the agent did not publish its node"
    kubelet.wait_registered([s.resource.name for s in a.servers])  # MIG profiles too: A100s
    yield a
    a.stop()
    api.close()


def uuids(node: str) -> list[str]:
    return [fake_uuid(node, i) for i in range(8)]


# ---------------------------------------------------------------------------------------------
# Tests


def test_agent_publishes_topology_uuids_and_gpu_memory_on_its_node(
    agent: Agent, admin: KubeClient, node: str
) -> None:
    obj = admin.get(f"/api/v1/nodes/{node}")
    annotations = obj["metadata"]["annotations"]
    topology = json.loads(annotations[TOPOLOGY])
    assert from_inventory(topology).links == nvswitch(8, nvlink_generation=3).links
    assert [g["uuid"] for g in topology["gpus"]] == uuids(node)
    assert [g["numa"] for g in topology["gpus"]] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert node_info(obj).gpu_uuids == tuple(uuids(node))  # what the scheduler reads
    devices = json.loads(annotations[DEVICES])
    assert "mig_dynamic" not in devices  # no --mig-dynamic: the scheduler must not send it plans
    assert {(g["model"], g["memory_mib"], g["health"]) for g in devices["gpus"]} == {
        (A100, A100_MIB, "Healthy")
    }
    assert obj["status"]["capacity"][GPU_MEMORY] == str(8 * A100_MIB)
    assert obj["status"]["allocatable"][GPU_MEMORY] == str(8 * A100_MIB)


def test_allocate_returns_the_assigned_uuids_of_a_bound_pod(
    agent: Agent,
    admin: KubeClient,
    scheduler_api: KubeClient,
    kubelet: FakeKubelet,
    node: str,
    namespace: str,
) -> None:
    kubelet.wait_devices(GPU, lambda d: len(d) == 8)
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("pair", namespace, node, {GPU: "2"}))
    bind(
        scheduler_api,
        namespace,
        "pair",
        node,
        {"gpus": [{"index": 5, "milli": 1000}, {"index": 6, "milli": 1000}]},
    )
    wanted = uuids(node)[5:7]
    assert kubelet.preferred_allocation(GPU, kubelet.healthy_ids(GPU), 2) == wanted
    response = kubelet.allocate(GPU, other_ids(kubelet, GPU, set(wanted), 2))
    assert response.envs[VISIBLE_DEVICES] == ",".join(wanted)
    pod = admin.get(f"/api/v1/namespaces/{namespace}/pods/pair")
    assert json.loads(pod["metadata"]["annotations"][ALLOCATED]) == {"main": wanted}


def test_fraction_gets_the_assigned_gpu_and_mps_limits(
    agent: Agent,
    admin: KubeClient,
    scheduler_api: KubeClient,
    kubelet: FakeKubelet,
    node: str,
    namespace: str,
) -> None:
    kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 8000)
    limits = {GPU_MILLI: "250", GPU_MEMORY: "10240"}
    admin.post(f"/api/v1/namespaces/{namespace}/pods", gpu_pod("quarter", namespace, node, limits))
    bind(
        scheduler_api, namespace, "quarter", node, {"gpus": [{"index": 3, "milli": 250, "memoryMiB": 10240}]}
    )
    target = uuids(node)[3]
    preferred = kubelet.preferred_allocation(GPU_MILLI, kubelet.healthy_ids(GPU_MILLI), 250)
    assert {d.split("::")[0] for d in preferred} == {target} and len(preferred) == 250
    response = kubelet.allocate(GPU_MILLI, other_ids(kubelet, GPU_MILLI, {target}, 250))
    assert response.envs[VISIBLE_DEVICES] == target
    assert response.envs[MPS_THREADS] == "25"
    assert response.envs[MPS_MEMORY] == "0=10240M"


def test_reregisters_when_the_kubelet_socket_is_recreated(agent: Agent, kubelet: FakeKubelet) -> None:
    resources = [s.resource.name for s in agent.servers]
    assert {GPU, GPU_MILLI, "nvidia.com/mig-3g.40gb"} <= set(resources)
    kubelet.restart()
    kubelet.wait_registered(resources, count=2)
    names = [r.resource_name for r in kubelet.registrations]
    assert {names.count(r) for r in resources} == {2}
    assert len(kubelet.wait_devices(GPU_MILLI, lambda d: len(d) == 8000)) == 8000


def test_an_unhealthy_gpu_reaches_the_kubelet_and_the_node(
    agent: Agent, admin: KubeClient, kubelet: FakeKubelet, node: str, gpus_file: Path
) -> None:
    kubelet.wait_devices(GPU, lambda d: len(d) == 8)
    doc = hgx_a100(node)
    doc["gpus"] = [{} for _ in range(8)]
    doc["gpus"][4] = {"health": "Unhealthy", "reason": "Xid 79"}
    gpus_file.write_text(yaml.safe_dump(doc))
    whole = kubelet.wait_devices(GPU, lambda d: any(x.health == "Unhealthy" for x in d))
    assert [d.ID for d in whole if d.health == "Unhealthy"] == [uuids(node)[4]]

    def node_shows_it() -> bool:
        # The agent writes the memory, the fake kubelet the GPU count: two writers, any order.
        allocatable = admin.get(f"/api/v1/nodes/{node}")["status"]["allocatable"]
        return allocatable.get(GPU_MEMORY) == str(7 * A100_MIB) and allocatable.get(GPU) == "7"

    wait_for(node_shows_it, 20, "GPU memory and GPU count to drop by one GPU")
    obj = admin.get(f"/api/v1/nodes/{node}")
    assert obj["status"]["allocatable"][GPU] == "7"  # written by the fake kubelet from the stream
    health = [g["health"] for g in json.loads(obj["metadata"]["annotations"][DEVICES])["gpus"]]
    assert health == ["Healthy"] * 4 + ["Unhealthy"] + ["Healthy"] * 3


# ---------------------------------------------------------------------------------------------
# manifests/agent: it applies, and its RBAC + admission policy keep the agent to its node


@pytest.fixture(scope="module")
def agent_docs(control_plane: cluster.ControlPlane) -> list[dict[str, Any]]:
    out = control_plane.kubectl("kustomize", str(AGENT_MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_agent_manifests_apply_without_pod_security_warnings(control_plane: cluster.ControlPlane) -> None:
    # A server-side dry run does not create the namespace, so on a control plane where nothing
    # applied the manifests yet the namespaced objects would fail: apply for real first.
    apply_agent_manifests(control_plane)
    result = control_plane.kubectl("apply", "-k", str(AGENT_MANIFESTS), "--dry-run=server")
    assert "Warning" not in result.stderr, result.stderr


def test_daemonset_runs_the_agent_with_the_device_plugin_dir_and_node_name(
    agent_docs: list[dict[str, Any]],
) -> None:
    (ds,) = [d for d in agent_docs if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] + container["args"][:2] == ["tessellate", "agent", "run"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert (
        mounts["device-plugins"]
        == volumes["device-plugins"]["hostPath"]["path"]
        == "/var/lib/kubelet/device-plugins"
    )
    assert spec["serviceAccountName"] == AGENT_SA
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_cluster_role_has_only_what_the_agent_uses(agent_docs: list[dict[str, Any]]) -> None:
    (role,) = [d for d in agent_docs if d["kind"] == "ClusterRole"]
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {
        ("nodes", "get"),
        ("nodes", "patch"),
        ("nodes/status", "patch"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "patch"),
    }


@pytest.fixture(scope="module")
def two_nodes(admin: KubeClient) -> Iterator[tuple[str, str]]:
    names = (cluster.unique("own"), cluster.unique("other"))
    for name in names:
        create_gpu_node(admin, name, gpus=1)
    yield names
    for name in names:
        with contextlib.suppress(ApiError):
            admin.delete(f"/api/v1/nodes/{name}")


@pytest.fixture(scope="module")
def rbac_ns(admin: KubeClient, two_nodes: tuple[str, str]) -> str:
    ns = cluster.make_namespace(admin, "agent-rbac")
    for node in two_nodes:
        admin.post(f"/api/v1/namespaces/{ns}/pods", gpu_pod(f"on-{node}", ns, node, {}))
        admin.post(
            f"/api/v1/namespaces/{ns}/pods/on-{node}/binding",
            {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"on-{node}"},
             "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
        )  # fmt: skip
    return ns


@pytest.fixture(scope="module")
def own_agent(
    control_plane: cluster.ControlPlane,
    admin: KubeClient,
    two_nodes: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KubeClient]:
    path = agent_kubeconfig(control_plane, admin, two_nodes[0], tmp_path_factory.mktemp("agent-rbac"))
    api = KubeClient.from_kubeconfig(path)
    yield api
    api.close()


def denied(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_agent_token_carries_its_node_and_writes_its_own_node_and_pods(
    own_agent: KubeClient, two_nodes: tuple[str, str], rbac_ns: str
) -> None:
    own, _ = two_nodes
    review = own_agent.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [own]
    own_agent.patch(f"/api/v1/nodes/{own}", {"metadata": {"annotations": {TOPOLOGY: "{}"}}})
    own_agent.patch(f"/api/v1/nodes/{own}/status", {"status": {"capacity": {GPU_MEMORY: "1"}}})
    own_agent.patch(
        f"/api/v1/namespaces/{rbac_ns}/pods/on-{own}", {"metadata": {"annotations": {ALLOCATED: "{}"}}}
    )
    listed, _ = own_agent.list_all("/api/v1/pods", fieldSelector=f"spec.nodeName={own}")
    assert [p["metadata"]["name"] for p in listed if p["metadata"]["namespace"] == rbac_ns] == [f"on-{own}"]


def test_admission_policy_denies_the_agent_other_nodes_and_their_pods(
    own_agent: KubeClient, two_nodes: tuple[str, str], rbac_ns: str
) -> None:
    own, other = two_nodes
    error = denied(
        lambda: own_agent.patch(f"/api/v1/nodes/{other}", {"metadata": {"annotations": {"x": "1"}}})
    )
    assert f"may not write node {other}" in error.message
    error = denied(
        lambda: own_agent.patch(f"/api/v1/nodes/{other}/status", {"status": {"capacity": {GPU_MEMORY: "1"}}})
    )
    assert f"may not write node {other}" in error.message
    error = denied(
        lambda: own_agent.patch(
            f"/api/v1/namespaces/{rbac_ns}/pods/on-{other}", {"metadata": {"annotations": {"x": "1"}}}
        )
    )
    assert "may not write pods on other nodes" in error.message
    error = denied(lambda: own_agent.patch(f"/api/v1/nodes/{own}", {"metadata": {"labels": {"x": "1"}}}))
    assert "not its spec or labels" in error.message
    error = denied(  # the status subresource keeps metadata changes, so labels are checked there too
        lambda: own_agent.patch(f"/api/v1/nodes/{own}/status", {"metadata": {"labels": {"x": "1"}}})
    )
    assert "not its spec or labels" in error.message
    error = denied(lambda: own_agent.patch(f"/api/v1/nodes/{own}", {"spec": {"unschedulable": True}}))
    assert "not its spec or labels" in error.message


def test_rbac_denies_the_agent_everything_else(
    own_agent: KubeClient, two_nodes: tuple[str, str], rbac_ns: str
) -> None:
    own, _ = two_nodes
    assert denied(lambda: own_agent.delete(f"/api/v1/namespaces/{rbac_ns}/pods/on-{own}")).status == 403
    assert denied(lambda: own_agent.get("/api/v1/secrets")).status == 403
    assert denied(lambda: own_agent.get("/api/v1/nodes")).status == 403  # get its node, never list all
    assert (
        denied(
            lambda: own_agent.post(f"/api/v1/namespaces/{rbac_ns}/pods", gpu_pod("x", rbac_ns, own, {}))
        ).status
        == 403
    )


def test_a_token_without_a_node_may_write_nothing(
    control_plane: cluster.ControlPlane, two_nodes: tuple[str, str], tmp_path: Path
) -> None:
    apply_agent_manifests(control_plane)
    token = control_plane.kubectl("create", "token", AGENT_SA, "-n", AGENT_NS).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": rbac._admin_cluster_entry(control_plane)}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "test", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "unbound.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    api = KubeClient.from_kubeconfig(str(path))
    try:
        error = denied(
            lambda: api.patch(f"/api/v1/nodes/{two_nodes[0]}", {"metadata": {"annotations": {"x": "1"}}})
        )
        assert "names no node" in error.message
    finally:
        api.close()
