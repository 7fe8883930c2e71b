"""GPU fractions bounded by GPU memory and by a sharer limit, besides milli-GPU.

Hand-made clusters for the placement core's filter, GPU choice, explanation and
over-commit checks; a hypothesis property over random fraction sequences; and the
scheduler's reading of pods, nodes and its config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builders import frac, placer, put, where, whole
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tessellate.placement import (
    MILLI_PER_GPU,
    PAPER_POLICIES,
    Assignment,
    ClusterState,
    InvalidRequestError,
    MigSpec,
    NodeSpec,
    OverCommitError,
    Request,
    Unschedulable,
)
from tessellate.placement.fit import REASON_GPU_SHARE, REASON_GPU_SHARE_MEMORY, REASON_GPU_SHARERS
from tessellate.placement.state import UNBOUNDED
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.config import ConfigError, load_config
from tessellate.scheduler.nodes import node_info

from tessellate.wire.podspec import pod_request

GIB = 1024
A100 = "A100-80GB"


def gpu_node(name: str, gpus: int = 2, memory: int = 80 * GIB, sharers: int = 0, **extra) -> NodeSpec:
    return NodeSpec(name, 64000, 512000, gpus, A100, gpu_memory_mib=memory, max_sharers=sharers, **extra)


def mem_frac(milli: int, memory: int, cpu: int = 1000) -> Request:
    return Request(cpu_milli=cpu, gpu_count=1, gpu_milli=milli, gpu_memory_mib=memory)


def commit(state: ClusterState, policy: str, request: Request, pod: str) -> Assignment:
    decision = placer(state, policy).place(pod, request)
    assert isinstance(decision, Assignment), decision
    state.allocate(decision)
    return decision


# -- requests and node specs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu_count": 1, "gpu_milli": MILLI_PER_GPU}, "only bounds a GPU fraction"),
        ({"gpu_count": 2, "gpu_milli": MILLI_PER_GPU}, "only bounds a GPU fraction"),
        ({}, "only bounds a GPU fraction"),
        ({"mig_profile": "1g.10gb", "mig_count": 1}, "only bounds a GPU fraction"),
    ],
)
def test_gpu_memory_without_a_fraction_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Request(cpu_milli=0, gpu_memory_mib=1024, **kwargs)


def test_negative_gpu_memory_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="negative GPU memory"):
        mem_frac(300, -1)
    with pytest.raises(ValueError, match="negative GPU memory"):
        gpu_node("n", memory=-1)
    with pytest.raises(ValueError, match="sharer limit"):
        gpu_node("n", sharers=-2)


def test_memory_splits_the_score_key_but_not_the_shape() -> None:
    assert mem_frac(300, 0).score_key == frac(300).shape
    assert mem_frac(300, 4096).shape == frac(300).shape
    assert mem_frac(300, 4096).score_key != frac(300).score_key


# -- filter and GPU choice ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", PAPER_POLICIES)
def test_a_40gib_fraction_skips_a_gpu_with_30gib_free_even_though_it_has_the_milli(policy: str) -> None:
    state = ClusterState([gpu_node("n")])
    put(state, "n", mem_frac(300, 50 * GIB, cpu=0), gpus=(0,))  # GPU 0: 700m and 30 GiB free
    assert where(placer(state, policy).place("p", mem_frac(300, 40 * GIB))) == ("n", (1,))
    assert where(placer(state, "bestfit").place("p", frac(300))) == ("n", (0,))  # milli alone: tightest


def test_fgd_still_weighs_a_gpu_whose_equal_share_twin_lacks_memory() -> None:
    state = ClusterState([gpu_node("n", gpus=3)])
    put(state, "n", mem_frac(500, 70 * GIB, cpu=0), gpus=(0,))  # 500m, 10 GiB free
    put(state, "n", mem_frac(500, 1 * GIB, cpu=0), gpus=(1,))  # 500m, 79 GiB free: GPU 0's twin
    # FGD (target: whole GPUs) keeps GPU 2 whole by packing onto the half-used GPU 1.
    assert where(placer(state, "fgd").place("p", mem_frac(400, 40 * GIB))) == ("n", (1,))


@pytest.mark.parametrize("policy", PAPER_POLICIES)
def test_the_sharer_limit_stops_the_fifth_sharer(policy: str) -> None:
    state = ClusterState([gpu_node("n", gpus=1, sharers=4)])
    for i in range(4):
        commit(state, policy, frac(100), f"p{i}")
    refused = placer(state, policy).place("p4", frac(100))
    assert isinstance(refused, Unschedulable)
    assert refused.message == f"0/1 nodes are available: 1 {REASON_GPU_SHARERS}."
    with pytest.raises(OverCommitError, match=r"GPU 0 already has 4 sharers \(limit 4\)"):
        state.allocate(Assignment("p4", 0, "n", frac(100), (0,)))


def test_a_full_gpu_sends_the_next_sharer_to_another_gpu() -> None:
    state = ClusterState([gpu_node("n", gpus=2, sharers=2)])
    for i in range(2):
        put(state, "n", frac(100), gpus=(0,), pod=f"p{i}")
    assert where(placer(state, "bestfit").place("p2", frac(100))) == ("n", (1,))


def test_reasons_name_the_bound_each_node_is_short_of() -> None:
    state = ClusterState(
        [gpu_node("milli", gpus=1), gpu_node("memory", gpus=1), gpu_node("slots", 1, sharers=1)]
    )
    put(state, "milli", mem_frac(900, 1 * GIB), gpus=(0,))
    put(state, "memory", mem_frac(100, 70 * GIB), gpus=(0,))
    put(state, "slots", mem_frac(100, 1 * GIB), gpus=(0,))
    refused = placer(state, "fgd").place("p", mem_frac(300, 20 * GIB))
    assert isinstance(refused, Unschedulable)
    assert refused.message == (
        f"0/3 nodes are available: 1 {REASON_GPU_SHARERS}, 1 {REASON_GPU_SHARE_MEMORY}, 1 {REASON_GPU_SHARE}."
    )


def test_over_committing_gpu_memory_is_refused_with_what_is_free() -> None:
    state = ClusterState([gpu_node("n", gpus=1)])
    put(state, "n", mem_frac(100, 60 * GIB), gpus=(0,))
    with pytest.raises(OverCommitError, match=r"GPU 0 has 20480MiB GPU memory free, needs 40960MiB"):
        state.allocate(Assignment("q", 0, "n", mem_frac(100, 40 * GIB), (0,)))


def test_unknown_gpu_memory_never_limits_a_fraction() -> None:
    state = ClusterState([gpu_node("n", gpus=1, memory=0)])
    assert state.fraction_room(mem_frac(300, 10**9)) is None
    commit(state, "fgd", mem_frac(300, 10**9), "p")
    assert state.gpu_mem_left[0, 0] == UNBOUNDED - 10**9


def test_unbounded_clusters_keep_the_milli_only_fast_path() -> None:
    state = ClusterState([gpu_node("n", memory=0)])
    assert not state.gpu_memory_known and not state.sharers_limited
    assert state.fraction_room(frac(300)) is None
    bounded = ClusterState([gpu_node("n")])
    assert bounded.fraction_room(frac(300)) is None  # memory known, but this fraction asks none
    assert bounded.fraction_room(mem_frac(300, GIB)) is not None


@pytest.mark.parametrize("policy", PAPER_POLICIES)
def test_a_fraction_never_lands_on_a_whole_gpu_allocation(policy: str) -> None:
    state = ClusterState([gpu_node("n", gpus=2)])
    put(state, "n", whole(1, cpu=0), gpus=(0,))
    for i in range(3):
        assert commit(state, policy, frac(300, cpu=0), f"p{i}").gpus == (1,)
    with pytest.raises(OverCommitError, match="GPU 0 has 0m free"):
        state.allocate(Assignment("q", 0, "n", frac(1), (0,)))


def test_a_fraction_never_lands_on_a_gpu_in_mig_mode() -> None:
    state = ClusterState([gpu_node("n", gpus=2, mig=MigSpec(dynamic=True))])
    state.allocate(
        placer(state, "bestfit").place("m", Request(cpu_milli=0, mig_profile="1g.10gb", mig_count=1))
    )
    mig_gpu = state.live["m"].mig[0].gpu
    other = 1 - mig_gpu
    for i in range(3):
        assert commit(state, "bestfit", frac(300, cpu=0), f"p{i}").gpus == (other,)
    with pytest.raises(OverCommitError, match=f"GPU {mig_gpu} has 0m free"):
        state.allocate(Assignment("q", 0, "n", frac(1), (mig_gpu,)))


# -- property: random fraction sequences ----------------------------------------------------------

BOUNDS = ("gpu_mem_left", "gpu_sharers")
TRACKED = ("cpu_left", "mem_left", "pod_count", "gpu_left", "affinity", *BOUNDS)


def _snapshot(state: ClusterState) -> dict:
    snap = {name: getattr(state, name).copy() for name in TRACKED}
    snap["live"] = dict(state.live)
    return snap


def _assert_same(state: ClusterState, snap: dict) -> None:
    assert state.live == snap["live"]
    for name in TRACKED:
        assert np.array_equal(getattr(state, name), snap[name]), name


def _assert_bounds_hold(state: ClusterState) -> None:
    """Sharers and GPU memory are never over-committed and equal what the live pods explain."""
    memory = np.where(
        state.gpu_exists, np.array([n.gpu_memory_mib or UNBOUNDED for n in state.nodes])[:, None], 0
    )
    sharers = np.zeros_like(state.gpu_sharers)
    for a in state.live.values():
        if a.request.is_fraction:
            memory[a.node, a.gpus[0]] -= a.request.gpu_memory_mib
            sharers[a.node, a.gpus[0]] += 1
    assert np.array_equal(state.gpu_mem_left, memory)
    assert np.array_equal(state.gpu_sharers, sharers)
    assert (state.gpu_mem_left >= 0).all()
    assert (state.gpu_sharers <= state.sharer_cap).all()


@st.composite
def bounded_clusters(draw) -> ClusterState:
    specs = [
        NodeSpec(
            f"n{i}",
            64000,
            512000,
            draw(st.integers(1, 4)),
            A100,
            gpu_memory_mib=draw(st.sampled_from([0, 16 * GIB, 40 * GIB])),
            max_sharers=draw(st.sampled_from([0, 1, 2, 4])),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    return ClusterState(specs)


fractions = st.builds(
    mem_frac,
    milli=st.sampled_from([50, 100, 250, 500, 900]),
    memory=st.sampled_from([0, GIB, 8 * GIB, 20 * GIB, 40 * GIB]),
    cpu=st.just(0),
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["place", "force", "release"]),
        fractions,
        st.integers(0, 3),
        st.integers(0, 3),
        st.sampled_from(PAPER_POLICIES),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=bounded_clusters(), ops=steps)
def test_random_fraction_sequences_never_over_commit_and_undo_exactly(state: ClusterState, ops: list) -> None:
    for i, (op, request, node, gpu, policy, undo) in enumerate(ops):
        pod = f"p{i}"
        before = _snapshot(state)
        if op == "release":
            if state.live:
                state.release(sorted(state.live)[node % len(state.live)])
            continue
        if op == "place":
            decision = placer(state, policy).place(pod, request)
            if isinstance(decision, Unschedulable):
                continue
            state.allocate(decision)  # the filter's choice must always be accepted
        else:
            n = node % len(state)
            try:
                state.allocate(Assignment(pod, n, state.names[n], request, (gpu,)))
            except OverCommitError:
                _assert_same(state, before)  # a refused allocate writes nothing
                continue
        _assert_bounds_hold(state)
        if undo:
            state.release(pod)
            _assert_same(state, before)
    _assert_bounds_hold(state)


# -- the scheduler --------------------------------------------------------------------------------


def _node(labels: dict | None = None, annotations: dict | None = None, gpus: int = 1) -> dict:
    return {
        "metadata": {
            "name": "g",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", **(labels or {})},
            "annotations": annotations or {},
        },
        "spec": {},
        "status": {
            "allocatable": {
                "cpu": "64",
                "memory": "512Gi",
                "pods": "110",
                "nvidia.com/gpu": str(gpus),
                "tessellate.dev/gpu-milli": str(1000 * gpus),  # the node agent runs here
            }
        },
    }


def _pod(name: str, milli: int, memory: int) -> dict:
    limits = {
        "cpu": "1",
        "tessellate.dev/gpu-milli": str(milli),
        "tessellate.dev/gpu-memory-mib": str(memory),
    }
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {
            "schedulerName": "tessellate",
            "containers": [{"name": "c", "resources": {"limits": limits}}],
        },
        "status": {"phase": "Pending"},
    }


def test_a_pods_gpu_memory_becomes_the_requests_bound() -> None:
    assert pod_request(_pod("a", 300, 4096)).request.gpu_memory_mib == 4096


def test_node_gpu_memory_comes_from_the_agent_then_the_label_then_the_catalogue() -> None:
    devices = {"gpus": [{"index": 0, "memory_mib": 40000}, {"index": 1, "memory_mib": 40960}]}
    annotated = _node(
        {"nvidia.com/gpu.memory": "81920"}, {"tessellate.dev/gpu-devices": json.dumps(devices)}, 2
    )
    assert node_info(annotated).spec.gpu_memory_mib == 40000  # the smallest GPU
    assert node_info(_node({"nvidia.com/gpu.memory": "81000"})).spec.gpu_memory_mib == 81000
    assert node_info(_node()).spec.gpu_memory_mib == 80 * GIB
    unknown = _node({"nvidia.com/gpu.product": "Mystery-GPU"})
    assert node_info(unknown).spec.gpu_memory_mib == 0


def test_the_scheduler_cache_honours_a_pods_gpu_memory() -> None:
    cache = ClusterCache("fgd", seed=1)
    cache.upsert_node(_node())  # one 80 GiB A100 (from the catalogue)
    results = []
    for name, memory in (("a", 60 * GIB), ("b", 30 * GIB), ("c", 20 * GIB)):
        rec, _ = cache.upsert_pod(_pod(name, 200, memory))
        assert rec is not None
        results.append(cache.decide(rec))
    a, b, c = results
    assert isinstance(a, Placed) and a.annotation.gpus[0].memory_mib == 60 * GIB
    assert isinstance(b, Unschedulable)
    assert b.message == f"0/1 nodes are available: 1 {REASON_GPU_SHARE_MEMORY}."
    assert isinstance(c, Placed)


def test_the_scheduler_cache_applies_max_gpu_sharers() -> None:
    cache = ClusterCache("bestfit", seed=1, max_sharers=2)
    cache.upsert_node(_node())
    decisions = []
    for name in ("a", "b", "c"):
        rec, _ = cache.upsert_pod(_pod(name, 100, 0))
        assert rec is not None
        decisions.append(cache.decide(rec))
    assert [isinstance(d, Placed) for d in decisions] == [True, True, False]
    assert decisions[2].message == f"0/1 nodes are available: 1 {REASON_GPU_SHARERS}."  # type: ignore[union-attr]


def test_max_gpu_sharers_is_read_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("maxGpuSharers: 4\n")
    assert load_config(path).maxGpuSharers == 4
    assert load_config(None).maxGpuSharers == 0
    for bad, message in (("-1", "must be 0 \\(unlimited\\) or positive"), ("2.5", "expected a whole number")):
        path.write_text(f"maxGpuSharers: {bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
