"""The live scheduler against a real kube-apiserver (no kubelets: pods stay Pending once bound)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from tessellate.scheduler.leader import parse_micro_time

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, check_no_overcommit, wait_for
from tessellate.kube import ApiError, KubeClient

pytestmark = pytest.mark.integration

MODEL_AFFINITY_ABSENT = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-B200"]}
                    ]
                }
            ]
        }
    }
}

# Impossible pods: what is wrong, and a phrase their event and condition must contain.
IMPOSSIBLE = [
    ({"limits": {"nvidia.com/gpu": "16"}}, "Insufficient nvidia.com/gpu"),
    ({"limits": {"tessellate.dev/gpu-milli": "1500"}}, "must be 1..999"),
    ({"limits": {"nvidia.com/mig-9g.99gb": "1"}}, "unknown MIG profile '9g.99gb'"),
    ({"limits": {"nvidia.com/gpu": "1", "cpu": "500"}}, "Insufficient cpu"),
    (
        {"limits": {"nvidia.com/gpu": "1"}, "affinity": MODEL_AFFINITY_ABSENT},
        "didn't match Pod's node affinity",
    ),
]


def node_group(
    api: KubeClient, prefix: str, count: int, gpus: int = 8
) -> tuple[dict[str, int], dict[str, str]]:
    """`count` fresh GPU nodes labelled as one group: (GPUs per node name, the group's nodeSelector).

    Tests share one API server, so each test's pods select its own nodes.
    """
    group = cluster.unique(prefix)
    selector = {"group": group}
    names = {}
    for i in range(count):
        node, status = cluster.gpu_node(f"{group}-{i:03d}", gpus=gpus, labels=selector)
        cluster.create_node(api, node, status)
        names[node["metadata"]["name"]] = gpus
    return names, selector


def mixed_pods(
    namespace: str, count: int, seed: int, selector: dict[str, str], scheduler: str = "tessellate"
) -> list[dict]:
    """Two 8-GPU jobs first, then fractions and 1, 2, 4 whole GPUs: ~0.6 GPU per pod.

    The 8-GPU jobs come first because a whole free node is the one thing that may
    legitimately not exist late in a busy stream (FGD protects shapes in its target
    workload, and 8-GPU pods are too rare to be in it).
    """
    rng = random.Random(seed)
    pods = [
        cluster.pod(
            f"job8-{i}",
            namespace,
            limits={"nvidia.com/gpu": "8", "cpu": "8"},
            nodeSelector=selector,
            scheduler=scheduler,
        )
        for i in range(2)
    ]
    for i in range(count - 2):
        roll = rng.random()
        if roll < 0.72:
            limits = {"tessellate.dev/gpu-milli": str(rng.choice([100, 200, 250, 300, 500]))}
        elif roll < 0.92:
            limits = {"nvidia.com/gpu": "1"}
        elif roll < 0.97:
            limits = {"nvidia.com/gpu": "2"}
        else:
            limits = {"nvidia.com/gpu": "4"}
        limits.update(cpu=str(rng.choice([1, 2, 4])), memory=f"{rng.choice([4, 8, 16])}Gi")
        pods.append(
            cluster.pod(f"p-{i:04d}", namespace, limits=limits, nodeSelector=selector, scheduler=scheduler)
        )
    return pods


def test_mixed_workload_under_the_manifests_rbac(
    control_plane: cluster.ControlPlane, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    """50 nodes x 8 GPUs, 500 mixed pods: all feasible bound, none over-committed, the rest explained."""
    nodes, selector = node_group(admin, "mix", 50)
    # A name of its own: the API server is shared with other tests, whose leftover pending pods
    # a scheduler named `tessellate` would also place (and count in its metrics).
    name = cluster.unique("mix-sched")
    feasible = mixed_pods(namespace, 490, seed=7, selector=selector, scheduler=name)
    impossible = []
    for i, (extra, _) in enumerate(IMPOSSIBLE * 2):
        extra = dict(extra)
        limits = extra.pop("limits")
        p = cluster.pod(
            f"bad-{i:02d}", namespace, limits=limits, nodeSelector=selector, scheduler=name, **extra
        )
        impossible.append(p)
    cluster.create_pods(admin, feasible + impossible)

    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    sched = SchedulerProcess(
        kubeconfig,
        tmp_path,
        schedulerName=name,
        leaderElection={
            "leaderElect": True,
            "leaseDuration": "4s",
            "renewDeadline": "3s",
            "retryPeriod": "0.5s",
        },
    )
    sched.start()
    try:
        wait_for(lambda: bound_count(admin, namespace) >= len(feasible), 120, "all 490 feasible pods to bind")
        time.sleep(1.0)  # would anything else (wrongly) get bound?
        pods = cluster.list_pods(admin, namespace)
        by_name = {p["metadata"]["name"]: p for p in pods}
        assert all(by_name[p["metadata"]["name"]]["spec"].get("nodeName") for p in feasible)
        assert check_no_overcommit(pods, nodes) == len(feasible)
        for i, (_, phrase) in enumerate(IMPOSSIBLE * 2):
            name = f"bad-{i:02d}"
            p = by_name[name]
            assert not p["spec"].get("nodeName"), name
            cond = next(c for c in p["status"]["conditions"] if c["type"] == "PodScheduled")
            assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
            assert phrase in cond["message"], (name, cond["message"])
            events = cluster.events_for(admin, namespace, name)
            assert any(e["reason"] == "FailedScheduling" and phrase in e["message"] for e in events), name
        scheduled = [e for e in cluster.events_for(admin, namespace, "p-0000") if e["reason"] == "Scheduled"]
        assert scheduled and "Successfully assigned" in scheduled[0]["message"]
        metrics = sched.metrics()
        attempts = [
            line for line in metrics.splitlines() if line.startswith("tessellate_schedule_attempts_total")
        ]
        assert 'tessellate_schedule_attempts_total{result="scheduled"} 490.0' in metrics, attempts
        assert "tessellate_gpu_allocation_ratio" in metrics
        assert "forbidden" not in sched.log().lower(), sched.log()[-3000:]
    finally:
        sched.stop()


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    """Pods keep arriving while the scheduler binds; kill -9 lands mid-stream, a restart finishes.

    The stream is paced (a few seconds long) so the kill is guaranteed to interrupt it:
    a scheduler fast enough to bind a pre-created batch before the test's poll sees
    40 binds must not turn this test into a no-op.
    """
    nodes, selector = node_group(admin, "k9", 30)
    pods = mixed_pods(namespace, 250, seed=11, selector=selector)
    head, stream = pods[:60], pods[60:]
    cluster.create_pods(admin, head)
    settings = {"leaderElection": {"leaderElect": False}, "schedulerName": "tessellate"}
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)  # only it may write assignments
    first = SchedulerProcess(kubeconfig, tmp_path, "first", **settings).start()
    wait_for(lambda: bound_count(admin, namespace) >= 1, 60, "the first bind", interval=0.02)

    def arrive() -> None:
        for start in range(0, len(stream), 10):
            cluster.create_pods(admin, stream[start : start + 10])
            time.sleep(0.25)

    arrivals = threading.Thread(target=arrive, daemon=True)
    arrivals.start()
    wait_for(lambda: bound_count(admin, namespace) >= 40, 60, "40 binds", interval=0.02)
    first.kill9()
    arrivals.join(60)
    assert not arrivals.is_alive()
    partial = bound_count(admin, namespace)
    assert 40 <= partial < len(pods), f"kill -9 did not land mid-stream ({partial} of {len(pods)} bound)"
    second = SchedulerProcess(kubeconfig, tmp_path, "second", **settings).start()
    try:
        wait_for(
            lambda: bound_count(admin, namespace) == len(pods), 120, "every pod to bind after the restart"
        )
        check_no_overcommit(cluster.list_pods(admin, namespace), nodes)
    finally:
        second.stop()


def lease_spec(api: KubeClient, name: str) -> dict:
    try:
        return (
            api.get(f"/apis/coordination.k8s.io/v1/namespaces/{rbac.NAMESPACE}/leases/{name}").get("spec")
            or {}
        )
    except ApiError as exc:
        if exc.is_not_found:
            return {}
        raise


def delete_lease(api: KubeClient, path: str) -> None:
    try:
        api.delete(path)
    except ApiError as exc:
        if not exc.is_not_found:
            raise


def lease_holder(api: KubeClient, name: str) -> str | None:
    return lease_spec(api, name).get("holderIdentity") or None


def test_two_replicas_one_leads_and_the_other_takes_over_after_kill_9(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    nodes, selector = node_group(admin, "ha", 20)
    # As the scheduler's ServiceAccount (only it may write assignments), whose Role covers one
    # Lease: start from none, so no earlier test's holder is waited for.
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    lease = "tessellate-scheduler"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{rbac.NAMESPACE}/leases/{lease}"
    delete_lease(admin, lease_path)
    le = {
        "leaderElect": True,
        "leaseDuration": "4s",
        "renewDeadline": "3s",
        "retryPeriod": "0.5s",
        "resourceName": lease,
        "resourceNamespace": rbac.NAMESPACE,
    }
    replicas = {
        name: SchedulerProcess(kubeconfig, tmp_path, name, leaderElection=le).start() for name in ("a", "b")
    }
    try:
        wait_for(lambda: lease_holder(admin, lease) is not None, 30, "a leader")
        pods = mixed_pods(namespace, 160, seed=5, selector=selector)
        cluster.create_pods(admin, pods[:80])
        wait_for(lambda: bound_count(admin, namespace) >= 80, 60, "the first half to bind")
        holder = lease_holder(admin, lease)
        leader = next(r for r in replicas.values() if r.identity == holder)
        standby = next(r for r in replicas.values() if r is not leader)
        assert "leading:" in leader.log() and "leading:" not in standby.log()
        leader.kill9()
        last_renew = lease_spec(admin, lease)["renewTime"]
        cluster.create_pods(admin, pods[80:])
        wait_for(lambda: lease_holder(admin, lease) == standby.identity, 30, "the standby to take the lease")
        acquired = lease_spec(admin, lease)["acquireTime"]
        gap = (parse_micro_time(acquired) - parse_micro_time(last_renew)).total_seconds()
        # client-go's rule: wait a whole lease after the last renew seen, polling every retry (jittered x2.2).
        assert 4 - 0.1 <= gap <= 4 + 2.2 * 0.5 + 1.0, (
            f"took over {gap:.2f}s after the dead leader's last renew"
        )
        wait_for(lambda: bound_count(admin, namespace) == len(pods), 60, "every pod to bind after failover")
        check_no_overcommit(cluster.list_pods(admin, namespace), nodes)
    finally:
        for r in replicas.values():
            r.stop()
        delete_lease(admin, lease_path)


def test_bad_assignment_annotation_gets_an_event_and_the_scheduler_keeps_going(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    nodes, selector = node_group(admin, "bad", 1, gpus=2)
    node = next(iter(nodes))
    # One of ours (the scheduler trusts assignments only on its own pods), bound before it starts.
    broken = cluster.pod("broken", namespace, limits={"nvidia.com/gpu": "1"}, nodeSelector=selector)
    cluster.create_pods(admin, [broken])
    # Only the scheduler's ServiceAccount may bind with an assignment (manifests/admission-policy.yaml):
    # a broken one it wrote stands for a bug in an older version, or one written before the policy.
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    sa = KubeClient.from_kubeconfig(kubeconfig)
    try:
        sa.post(
            f"/api/v1/namespaces/{namespace}/pods/broken/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": "broken", "annotations": {"tessellate.dev/assignment": "{not json"}},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
        )
    finally:
        sa.close()
    sched = SchedulerProcess(kubeconfig, tmp_path, leaderElection={"leaderElect": False}).start()
    try:
        cluster.create_pods(
            admin,
            [
                cluster.pod(f"ok-{i}", namespace, limits={"nvidia.com/gpu": "1"}, nodeSelector=selector)
                for i in range(2)
            ],
        )
        wait_for(lambda: bound_count(admin, namespace) == 2, 30, "one of the new pods to bind")
        wait_for(
            lambda: any(
                e["reason"] == "InvalidAssignment" for e in cluster.events_for(admin, namespace, "broken")
            ),
            15,
            "an InvalidAssignment event",
        )
        event = next(
            e for e in cluster.events_for(admin, namespace, "broken") if e["reason"] == "InvalidAssignment"
        )
        assert "does not parse" in event["message"]
        # The broken pod still holds a GPU, so only one of the two new pods fits on the 2-GPU node.
        pods = {p["metadata"]["name"]: p for p in cluster.list_pods(admin, namespace)}
        assert sum(1 for n in ("ok-0", "ok-1") if pods[n]["spec"].get("nodeName")) == 1
        assert sched.proc is not None and sched.proc.poll() is None
    finally:
        sched.stop()
