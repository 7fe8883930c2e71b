"""Fuzzing the cache with what nodes and pod authors can write: random and mutated Node and
Pod objects (annotations as random JSON, odd quantities, duplicate and out-of-range indices,
huge numbers, wrong types) interleaved with valid pods. The cache must never raise, never
over-commit a GPU (checked here from the decisions and the raw objects, not from the
cache's own arrays), and every object it rejects must come with a specific reason."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tessellate.placement import Unschedulable
from tessellate.placement.topology import nvswitch
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.nodes import node_info

from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.devices import DEVICES
from tessellate.wire.topology import TOPOLOGY, to_inventory

QUANTITIES = st.one_of(
    st.sampled_from(["0", "1", "2", "4", "8", "-1", "1.5", "500m", "2Gi", "1e1", "99999999999", "1E"]),
    st.sampled_from(["1e400", "abc", "", " 3 ", "0x10", "NaN", "Infinity", "64", "65", "1000000"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from([True, None, [1], {"a": 1}]),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**66), 2**66), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
INDICES = st.one_of(st.integers(-3, 10), st.sampled_from([2**40, -(2**40), "1", 1.0, None, True]))


@st.composite
def device_annotations(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "mutated", "json", "junk"]))
    if kind == "junk":
        return draw(st.text(max_size=20))
    if kind == "json":
        return json.dumps(draw(JSON))
    gpus = [
        {
            "index": draw(INDICES) if kind == "mutated" else i,
            "health": draw(st.sampled_from(["Healthy", "Unhealthy", 3, None])),
            "memory_mib": draw(st.one_of(st.integers(-5, 2**70), st.just(81920))),
        }
        for i in range(draw(st.integers(0, 10)))
    ]
    return json.dumps({"gpus": gpus, "mig_dynamic": draw(st.sampled_from([False, True, "yes"]))})


@st.composite
def topology_annotations(draw: st.DrawFn) -> str:
    doc = to_inventory(nvswitch(8))
    for i, gpu in enumerate(doc["gpus"]):
        gpu["uuid"] = draw(st.sampled_from([f"GPU-{i}", "GPU-same", 7]))
        if draw(st.booleans()):
            gpu["index"] = draw(INDICES)
    return json.dumps(doc if draw(st.booleans()) else draw(JSON))


@st.composite
def nodes(draw: st.DrawFn, name: str) -> dict[str, Any]:
    allocatable: dict[str, Any] = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
    for key in draw(
        st.lists(
            st.sampled_from(
                [
                    "cpu",
                    "memory",
                    "pods",
                    "nvidia.com/gpu",
                    "tessellate.dev/gpu-milli",
                    "nvidia.com/gpu.shared",
                    "nvidia.com/mig-1g.10gb",
                    "example.com/fpga",
                ]
            ),
            max_size=4,
        )
    ):
        allocatable[key] = draw(QUANTITIES)
    if draw(st.booleans()):
        allocatable["tessellate.dev/gpu-milli"] = "8000"
    labels: dict[str, Any] = {"nvidia.com/gpu.product": draw(st.sampled_from(["NVIDIA-A100-SXM4-80GB", "x"]))}
    for key in draw(
        st.lists(st.sampled_from(["nvidia.com/gpu.replicas", "nvidia.com/gpu.count"]), max_size=2)
    ):
        labels[key] = str(draw(QUANTITIES))
    annotations = {}
    if draw(st.booleans()):
        annotations[DEVICES] = draw(device_annotations())
    if draw(st.booleans()):
        annotations[TOPOLOGY] = draw(topology_annotations())
    return {
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": draw(st.sampled_from([[], ["junk"], [{"key": "k", "effect": "NoSchedule"}]]))},
        "status": {"allocatable": allocatable},
    }


@st.composite
def assignments(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "json", "junk"]))
    if kind == "junk":
        return draw(st.text(max_size=20))
    if kind == "json":
        return json.dumps(draw(JSON))
    shares = [
        {"index": draw(INDICES), "milli": draw(st.sampled_from([1000, 500, 0, 2000]))}
        for _ in range(draw(st.integers(0, 3)))
    ]
    return json.dumps({"gpus": shares})


_uids = iter(range(10**9))


@st.composite
def bound_pods(draw: st.DrawFn, node_names: list[str]) -> dict[str, Any]:
    """Pods already on a node: any scheduler, any annotation, odd requests."""
    limits = {
        key: draw(QUANTITIES)
        for key in draw(
            st.lists(
                st.sampled_from(["nvidia.com/gpu", "tessellate.dev/gpu-milli", "cpu", "example.com/fpga"])
            )
        )
    }
    if draw(st.booleans()):
        limits = {"nvidia.com/gpu": str(draw(st.integers(1, 3))), "cpu": "1"}
    meta: dict[str, Any] = {"name": f"b{next(_uids)}", "namespace": "ns", "uid": f"u{next(_uids)}"}
    if draw(st.booleans()):
        meta["annotations"] = {ASSIGNMENT: draw(assignments())}
    return {
        "metadata": meta,
        "spec": {
            "schedulerName": draw(st.sampled_from(["tessellate", "default-scheduler"])),
            "nodeName": draw(st.sampled_from(node_names)),
            "priority": draw(st.sampled_from([0, 5])),
            "containers": [{"name": "c", "resources": {"limits": limits}}],
        },
        "status": {"phase": "Running"},
    }


def pending(limits: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p{next(_uids)}", "namespace": "ns", "uid": f"u{next(_uids)}"},
        "spec": {
            "schedulerName": "tessellate",
            "containers": [{"name": "c", "resources": {"limits": limits}}],
        },
        "status": {"phase": "Pending"},
    }


VALID_REQUESTS = st.sampled_from(
    [{"nvidia.com/gpu": str(k), "cpu": "1"} for k in (1, 2, 4, 8)]
    + [{"tessellate.dev/gpu-milli": str(m), "cpu": "1"} for m in (100, 250, 500, 900)]
    + [{"nvidia.com/gpu": "99999999999"}, {"cpu": "1E"}, {"tessellate.dev/gpu-milli": "1200"}]
)


def plain_count(raw: Any) -> int | None:
    """An independent, strict reading of a count (None: not a plain whole number)."""
    if not isinstance(raw, str) or not raw.isdigit():
        return None
    try:
        return int(Decimal(raw))
    except InvalidOperation:
        return None


def check_no_overcommit(
    decisions: list[Placed], objects: dict[str, dict], foreign: list[dict], stale: set[str]
) -> None:
    """Per GPU: at most 1000 milli, a whole GPU to one pod, a MIG instance to one pod. Per
    node (plain nodes whose object did not change since a decision there): our GPUs plus
    the foreign pods' whole GPUs fit the declared count."""
    milli: dict[tuple[str, int], int] = defaultdict(int)
    whole: dict[tuple[str, int], int] = defaultdict(int)
    instances: set[tuple[str, int, int | None]] = set()
    for placed in decisions:
        for share in placed.annotation.gpus:
            if share.mig is not None:
                key = (placed.node, share.index, share.start)
                assert key not in instances, f"MIG instance {key} given twice"
                instances.add(key)
                continue
            milli[(placed.node, share.index)] += share.milli
            whole[(placed.node, share.index)] += share.milli == 1000
    for (node, gpu), total in milli.items():
        assert total <= 1000, f"GPU {gpu} of {node} holds {total} milli"
        assert whole[(node, gpu)] <= 1 and (whole[(node, gpu)] == 0 or total == 1000)
    for node, obj in objects.items():
        labels = obj["metadata"]["labels"]
        allocatable = obj["status"]["allocatable"]
        capacity = plain_count(allocatable.get("nvidia.com/gpu"))
        plain = set(allocatable) <= {"cpu", "memory", "pods", "nvidia.com/gpu", "tessellate.dev/gpu-milli"}
        if node in stale or capacity is None or not plain or set(labels) != {"nvidia.com/gpu.product"}:
            continue  # time-sliced, MIG or odd: the per-GPU checks above still hold
        ours = {gpu for (n, gpu) in milli if n == node}
        if not ours:
            continue
        theirs = 0
        for pod in foreign:
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            if pod["spec"]["nodeName"] == node and set(limits) <= {"nvidia.com/gpu", "cpu"}:
                theirs += plain_count(limits.get("nvidia.com/gpu", "0")) or 0
        assert max(ours) < capacity, f"{node} has {capacity} GPUs, a decision used GPU {max(ours)}"
        assert len(ours) + theirs <= capacity, f"{node}: {len(ours)} ours + {theirs} foreign > {capacity}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_nodes_and_pods_never_crash_the_cache_nor_over_commit(data: st.DataObject) -> None:
    names = [f"n{i}" for i in range(data.draw(st.integers(1, 4)))]
    objects = {name: data.draw(nodes(name)) for name in names}
    problems: list[str] = []
    cache = ClusterCache("fgd", seed=1, on_problem=lambda p, rec: problems.append(p.message))
    for obj in objects.values():
        info = node_info(obj)
        assert info.quarantine is None or len(info.quarantine) > 20
        cache.upsert_node(obj)
    others = data.draw(st.lists(bound_pods(names), max_size=6))
    foreign = [p for p in others if p["spec"]["schedulerName"] != "tessellate"]
    for pod in others:
        rec, _ = cache.upsert_pod(pod)
        assert rec is not None
        assert rec.request is not None or (rec.request_error and len(rec.request_error) > 20)
    decisions: list[Placed] = []
    stale: set[str] = set()
    for _ in range(data.draw(st.integers(1, 12))):
        if data.draw(st.integers(0, 4)) == 0:  # a node changes under us: the cache rebuilds
            name = data.draw(st.sampled_from(names))
            objects[name] = data.draw(nodes(name))
            if any(d.node == name for d in decisions):
                stale.add(name)  # pods placed before the change may no longer fit its new count
            cache.upsert_node(objects[name])
        pod = pending(data.draw(VALID_REQUESTS))
        rec, _ = cache.upsert_pod(pod)
        assert rec is not None
        if rec.problem is not None:
            assert len(rec.problem) > 20
            continue
        result = cache.decide(rec)
        if isinstance(result, Unschedulable):
            assert result.reasons or result.node_count == 0, result.message
            continue
        decisions.append(result)
        pod["spec"]["nodeName"] = result.node
        pod["metadata"]["annotations"] = {ASSIGNMENT: result.annotation.encode()}
        cache.upsert_pod(pod)
    check_no_overcommit(decisions, objects, foreign, stale)
