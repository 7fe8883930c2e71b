"""The scheduler's cache, constraints and queue, without an API server."""

from __future__ import annotations

import json

import pytest
from tessellate.placement import Unschedulable
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.constraints import REASON_AFFINITY, REASON_UNSCHEDULABLE
from tessellate.scheduler.plugins.node_health import REASON_OVERCOMMITTED
from tessellate.scheduler.queue import SchedulingQueue

from tessellate.wire.assignment import ASSIGNMENT

_uid = iter(range(10**6))


def node(name: str, gpus: int = 8, cpu: str = "64", labels: dict | None = None, **spec) -> dict:
    alloc = {"cpu": cpu, "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    alloc["tessellate.dev/gpu-milli"] = str(1000 * gpus)  # as on a node running the agent
    return {
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", **(labels or {})},
        },
        "spec": spec,
        "status": {"allocatable": alloc},
    }


def pod(name: str, limits: dict, node_name: str = "", annotation: str | None = None, **spec) -> dict:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}-{next(_uid)}", "resourceVersion": "1"}
    if annotation is not None:
        meta["annotations"] = {ASSIGNMENT: annotation}
    return {
        "metadata": meta,
        "spec": {
            "schedulerName": "tessellate",
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"limits": limits}}],
            **spec,
        },
        "status": {"phase": "Pending"},
    }


def gpus(n: int) -> dict:
    return {"nvidia.com/gpu": str(n), "cpu": "1"}


def cache_with(*nodes: dict, policy: str = "fgd") -> ClusterCache:
    cache = ClusterCache(policy, seed=1)
    for n in nodes:
        cache.upsert_node(n)
    return cache


def decide(cache: ClusterCache, p: dict) -> Placed | Unschedulable:
    rec, _ = cache.upsert_pod(p)
    assert rec is not None
    return cache.decide(rec)


def bound(p: dict, placed: Placed) -> dict:
    """The pod as the API server returns it after our Binding."""
    p = json.loads(json.dumps(p))
    p["spec"]["nodeName"] = placed.node
    p["metadata"]["annotations"] = {ASSIGNMENT: placed.annotation.encode()}
    return p


def charged(cache: ClusterCache, node_name: str) -> list[int]:
    assert cache.state is not None
    return [int(x) for x in cache.state.gpu_left[cache.state.index[node_name]]]


def test_an_assumed_decision_is_never_offered_again() -> None:
    cache = cache_with(node("n1", gpus=2))
    first = decide(cache, pod("a", gpus(2)))
    second = decide(cache, pod("b", gpus(1)))
    assert isinstance(first, Placed)
    assert isinstance(second, Unschedulable)
    assert "1 Insufficient nvidia.com/gpu" in second.message


def test_forget_gives_the_gpus_back() -> None:
    cache = cache_with(node("n1", gpus=2))
    placed = decide(cache, pod("a", gpus(2)))
    assert isinstance(placed, Placed)
    cache.forget(placed.uid)
    assert charged(cache, "n1") == [1000, 1000]


def test_bind_confirmation_keeps_the_charge_once() -> None:
    cache = cache_with(node("n1", gpus=4))
    p = pod("a", gpus(2))
    placed = decide(cache, p)
    assert isinstance(placed, Placed)
    cache.upsert_pod(bound(p, placed))
    cache.upsert_pod(bound(p, placed))  # a later update of the same bound pod
    assert sum(charged(cache, "n1")) == 2000
    assert not cache.assumed


def test_restart_rebuilds_from_annotations() -> None:
    first = cache_with(node("n1", gpus=4))
    pods = []
    for name, n in (("a", 1), ("b", 2)):
        p = pod(name, gpus(n))
        placed = decide(first, p)
        assert isinstance(placed, Placed)
        pods.append(bound(p, placed))
    restarted = cache_with(node("n1", gpus=4))
    restarted.replace_pods(pods)
    restarted.ensure_built()
    assert charged(restarted, "n1") == charged(first, "n1")
    assert isinstance(decide(restarted, pod("c", gpus(2))), Unschedulable)


def test_pods_of_other_schedulers_are_charged_first_free() -> None:
    cache = cache_with(node("n1", gpus=4))
    other = pod("other", gpus(3), node_name="n1")
    other["spec"]["schedulerName"] = "default-scheduler"
    cache.replace_pods([other])
    cache.ensure_built()
    assert charged(cache, "n1") == [0, 0, 0, 1000]


def test_malformed_annotation_is_reported_and_counted_conservatively() -> None:
    problems = []
    cache = ClusterCache("fgd", on_problem=lambda problem, rec: problems.append(problem.message))
    cache.upsert_node(node("n1", gpus=2))
    cache.replace_pods([pod("x", gpus(1), node_name="n1", annotation="{oops")])
    cache.ensure_built()
    assert charged(cache, "n1") == [0, 1000]
    assert problems and "does not parse" in problems[0]


def test_conflicting_annotations_make_the_node_take_no_new_pods() -> None:
    cache = cache_with(node("n1", gpus=2), node("n2", gpus=2))
    same = '{"gpus":[{"index":0,"milli":1000}]}'
    cache.replace_pods([pod("x", gpus(1), "n1", same), pod("y", gpus(1), "n1", same)])
    cache.ensure_built()
    result = decide(cache, pod("z", {"tessellate.dev/gpu-milli": "100"}))
    assert isinstance(result, Placed) and result.node == "n2"
    result = decide(cache, pod("w", gpus(2)))
    assert isinstance(result, Unschedulable)
    assert f"1 {REASON_OVERCOMMITTED}" in result.message


def test_fractions_share_a_gpu_and_never_exceed_it() -> None:
    cache = cache_with(node("n1", gpus=1))
    shares = [decide(cache, pod(f"f{i}", {"tessellate.dev/gpu-milli": "300"})) for i in range(4)]
    assert [isinstance(s, Placed) for s in shares] == [True, True, True, False]
    assert charged(cache, "n1") == [100]


def test_node_change_rebuilds_and_keeps_in_flight_decisions() -> None:
    cache = cache_with(node("n1", gpus=2))
    placed = decide(cache, pod("a", gpus(2)))
    assert isinstance(placed, Placed)
    cache.upsert_node(node("n2", gpus=2))
    cache.ensure_built()
    assert charged(cache, "n1") == [0, 0]
    assert "a" in placed.key


def test_taints_affinity_and_cordon_filter_with_kube_scheduler_reasons() -> None:
    cache = cache_with(
        node("tainted", taints=[{"key": "gpu", "value": "reserved", "effect": "NoSchedule"}]),
        node("cordoned", unschedulable=True),
        node("other-model", labels={"nvidia.com/gpu.product": "Tesla-T4"}),
        node("good"),
    )
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-A100-SXM4-80GB"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    placed = decide(cache, pod("a", gpus(8), affinity=affinity))
    assert isinstance(placed, Placed) and placed.node == "good"
    result = decide(cache, pod("b", gpus(8), affinity=affinity))
    assert isinstance(result, Unschedulable)
    assert result.message == (
        "0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's node "
        "affinity/selector, 1 node(s) had untolerated taint {gpu: reserved}, 1 node(s) were unschedulable."
    )
    tolerated = decide(
        cache,
        pod(
            "c",
            gpus(1),
            tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            nodeSelector={"kubernetes.io/hostname": "x"},
        ),
    )
    assert isinstance(tolerated, Unschedulable)
    assert tolerated.reasons[REASON_AFFINITY] == 3 and tolerated.reasons[REASON_UNSCHEDULABLE] == 1


def test_bad_affinity_operator_is_an_invalid_request() -> None:
    from tessellate.wire.podspec import PodRequestError

    cache = cache_with(node("n1"))
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]
            }
        }
    }
    with pytest.raises(PodRequestError, match="unknown node selector operator 'Near'"):
        decide(cache, pod("a", gpus(1), affinity=affinity))


def test_mig_requests_count_against_node_allocatable() -> None:
    n = node("mig")
    n["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] = "2"
    cache = cache_with(n, node("plain"))
    results = [decide(cache, pod(f"m{i}", {"nvidia.com/mig-3g.40gb": "1"})) for i in range(3)]
    assert [getattr(r, "node", None) for r in results] == ["mig", "mig", None]
    assert "2 Insufficient nvidia.com/mig-3g.40gb" in results[2].message


def test_queue_orders_by_priority_then_arrival_and_backs_off() -> None:
    now = [0.0]
    q = SchedulingQueue(initial_backoff=1, max_backoff=4, unschedulable_timeout=100, clock=lambda: now[0])
    q.add("low", "ns/low", 0)
    q.add("high", "ns/high", 10)
    q.add("low2", "ns/low2", 0)
    assert [q.pop(0).uid for _ in range(3)] == ["high", "low", "low2"]
    q.unschedulable("low")
    assert q.pop(0) is None  # parked until something changes
    q.move_all_to_active()
    assert q.pop(0) is None  # ...and still backing off for 1 s
    now[0] = 1.5
    assert q.pop(0).uid == "low"
    q.unschedulable("low", invalid=True)
    q.move_all_to_active()
    now[0] = 1000
    assert q.pop(0) is None  # invalid pods wait for their own update
    q.add("low", "ns/low", 0)
    assert q.pop(0).uid == "low"


def test_a_cluster_change_during_an_attempt_is_not_lost_when_the_attempt_fails() -> None:
    """The pod was decided against the old state; capacity freed before it was marked
    unschedulable must still wake it, or it would sleep until the periodic flush."""
    now = [0.0]
    q = SchedulingQueue(initial_backoff=1, max_backoff=4, unschedulable_timeout=100, clock=lambda: now[0])
    q.add("p", "ns/p", 0)
    assert q.pop(0).uid == "p"
    q.move_all_to_active()  # a pod left while "p" was being decided
    q.unschedulable("p")
    now[0] = 1.5  # its backoff, then a retry: no other event needed
    assert q.pop(0).uid == "p"
    q.unschedulable("p")  # nothing changed during this attempt: parked
    now[0] = 50
    assert q.pop(0) is None


def test_required_pod_affinity_is_refused_loudly_not_ignored() -> None:
    from tessellate.scheduler.podrecord import PodRecord

    spec_affinity = {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "x"}]}
    }
    rec = PodRecord.parse(pod("a", gpus(1), affinity=spec_affinity))
    assert (
        rec.problem is not None
        and "topologyKey 'x' is not supported (only kubernetes.io/hostname)" in rec.problem
    )
    together = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "x"}]}}
    rec = PodRecord.parse(pod("c", gpus(1), affinity=together))
    assert rec.problem is not None and "podAffinity is not implemented" in rec.problem
    soft = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}}
    assert PodRecord.parse(pod("b", gpus(1), affinity=soft)).problem is None


def with_topology(n: dict, inventory: dict | str) -> dict:
    text = inventory if isinstance(inventory, str) else json.dumps(inventory)
    n["metadata"]["annotations"] = {"tessellate.dev/gpu-topology": text}
    return n


def test_multi_gpu_pods_get_the_best_connected_set_and_its_numa_nodes() -> None:
    from tessellate.placement.topology import dgx1_v100

    from tessellate.wire.topology import to_inventory

    cache = cache_with(with_topology(node("dgx1"), to_inventory(dgx1_v100())))
    one = decide(cache, pod("one", gpus(1)))
    assert isinstance(one, Placed)
    four = decide(cache, pod("four", gpus(4)))
    assert isinstance(four, Placed)
    chosen = set(four.annotation.indices)
    assert one.annotation.indices[0] not in chosen
    # the hybrid cube-mesh's fully NVLinked quads are {0,1,2,3} and {4,5,6,7}
    assert chosen in ({0, 1, 2, 3}, {4, 5, 6, 7})
    assert json.loads(four.annotation.encode())["numa"] == list(four.annotation.numa)
    assert four.annotation.numa


def test_a_broken_topology_annotation_is_reported_and_ignored() -> None:
    cache = ClusterCache("fgd", seed=1)
    cache.upsert_node(with_topology(node("n1"), '{"version": 1, "gpus": "nope"}'))
    info = cache.nodes["n1"]
    assert info.spec.topology is None
    assert info.problem is not None and "not a valid topology" in info.problem
    assert isinstance(decide(cache, pod("a", gpus(2))), Placed)


def test_gpus_the_agent_reports_unhealthy_are_never_assigned() -> None:
    from tessellate.placement.topology import nvswitch

    from tessellate.wire.topology import to_inventory

    n = with_topology(node("n1", gpus=7), to_inventory(nvswitch(8)))  # the kubelet dropped one GPU
    devices = {"gpus": [{"index": i, "health": "Unhealthy" if i == 2 else "Healthy"} for i in range(8)]}
    n["metadata"]["annotations"]["tessellate.dev/gpu-devices"] = json.dumps(devices)
    cache = cache_with(n)
    assert cache.nodes["n1"].spec.gpu_count == 8 and cache.nodes["n1"].unhealthy_gpus == (2,)
    placed = [decide(cache, pod(f"p{i}", gpus(1))) for i in range(8)]
    indices = sorted(p.annotation.indices[0] for p in placed if isinstance(p, Placed))
    assert indices == [0, 1, 3, 4, 5, 6, 7]
    assert isinstance(placed[-1], Unschedulable)


def test_fractions_only_go_to_nodes_where_the_agent_serves_them() -> None:
    without = node("plain")
    del without["status"]["allocatable"]["tessellate.dev/gpu-milli"]
    cache = cache_with(without, node("agent"))
    placed = decide(cache, pod("f", {"tessellate.dev/gpu-milli": "300"}))
    assert isinstance(placed, Placed) and placed.node == "agent"
    cache = cache_with(without)
    refused = decide(cache, pod("g", {"tessellate.dev/gpu-milli": "300"}))
    assert isinstance(refused, Unschedulable)
    assert "1 Insufficient tessellate.dev/gpu-milli (no Tessellate node agent)" in refused.message
    assert isinstance(decide(cache, pod("w", gpus(1))), Placed)  # whole GPUs need no agent
