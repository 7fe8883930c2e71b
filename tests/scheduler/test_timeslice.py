"""Time-sliced GPUs (NVIDIA's `replicas`): N equal slices per physical GPU, in the core and
in the scheduler's reading of nodes and pods."""

from __future__ import annotations

import numpy as np
import pytest
from builders import frac, placer, whole
from hypothesis import given, settings
from hypothesis import strategies as st
from tessellate.placement import (
    ClusterState,
    Fragmentation,
    NodeSpec,
    OverCommitError,
    TargetWorkload,
    Unschedulable,
)
from tessellate.placement.model import Assignment
from tessellate.placement.timeslice import (
    REASON_SLICED_KIND,
    REASON_SLICED_MULTI,
    replica_request,
    slice_milli,
)
from tessellate.scheduler.cache import ClusterCache
from tessellate.scheduler.nodes import node_info
from tessellate.simulator.replay import run_inflation
from tessellate.simulator.trace import PodRecord, Trace
from test_scheduler_cache import bound, decide, pod


def sliced_cluster(replicas: int = 4, plain_gpus: int = 0) -> ClusterState:
    nodes = []
    if plain_gpus:
        nodes.append(NodeSpec("plain", 64000, 512000, plain_gpus, "A100-80GB"))
    nodes.append(NodeSpec("sliced", 64000, 512000, 2, "T4", gpu_replicas=replicas))
    return ClusterState(nodes)


def place_all(state: ClusterState, requests: list, policy: str = "fgd") -> list:
    p = placer(state, policy)
    out = []
    for k, request in enumerate(requests):
        decision = p.place(f"p{k}", request)
        if not isinstance(decision, Unschedulable):
            state.allocate(decision)
        out.append(decision)
    return out


def test_a_one_gpu_pod_takes_one_slice_and_a_gpu_holds_exactly_n() -> None:
    state = sliced_cluster(replicas=4)
    decisions = place_all(state, [whole(1)] * 9)
    placed = [d for d in decisions if not isinstance(d, Unschedulable)]
    assert len(placed) == 8  # 2 GPUs x 4 replicas
    assert all(d.request.gpu_milli == 250 and d.request.is_fraction for d in placed)
    per_gpu = np.bincount([d.gpus[0] for d in placed], minlength=2)
    assert per_gpu.tolist() == [4, 4]
    assert isinstance(decisions[-1], Unschedulable)
    assert state.gpu_left[state.index["sliced"]].tolist()[:2] == [0, 0]


def test_replicas_that_do_not_divide_1000_still_give_exactly_n_slices() -> None:
    state = sliced_cluster(replicas=3)
    placed = [d for d in place_all(state, [whole(1)] * 7) if not isinstance(d, Unschedulable)]
    assert slice_milli(3) == 333
    assert len(placed) == 6


def test_packing_fills_one_gpu_before_opening_the_next() -> None:
    state = sliced_cluster(replicas=4)
    decisions = place_all(state, [whole(1)] * 3, policy="bestfit")
    assert {d.gpus[0] for d in decisions} == {decisions[0].gpus[0]}


def test_ordinary_nodes_are_preferred_for_a_gpu_of_ones_own() -> None:
    state = sliced_cluster(replicas=4, plain_gpus=1)
    first, second = place_all(state, [whole(1), whole(1)])
    assert first.node_name == "plain" and first.request.gpu_milli == 1000
    assert second.node_name == "sliced" and second.request.gpu_milli == 250


def test_multi_replica_fraction_and_mig_requests_are_refused_with_a_reason() -> None:
    state = sliced_cluster(replicas=4)
    p = placer(state, "fgd")
    two = p.place("two", whole(2))
    assert isinstance(two, Unschedulable) and two.reasons == {REASON_SLICED_MULTI: 1}
    share = p.place("share", frac(300))
    assert isinstance(share, Unschedulable) and share.reasons == {REASON_SLICED_KIND: 1}
    assert replica_request(whole(2), 4) is None and replica_request(whole(2), 1) == whole(2)


def test_allocate_refuses_a_whole_gpu_on_a_sliced_node() -> None:
    state = sliced_cluster(replicas=4)
    node = state.index["sliced"]
    with pytest.raises(OverCommitError, match="time-sliced into 4 replicas"):
        state.allocate(Assignment("x", node, "sliced", whole(1), (0,)))
    with pytest.raises(OverCommitError, match="time-sliced"):
        state.allocate(Assignment("y", node, "sliced", frac(300), (0,)))


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(2, 7),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), min_size=1, max_size=60),
)
def test_slices_never_exceed_replicas_under_any_place_release_sequence(replicas: int, ops: list) -> None:
    state = sliced_cluster(replicas=replicas)
    p = placer(state, "fgd")
    live: list[str] = []
    for k, (add, pick) in enumerate(ops):
        if add or not live:
            decision = p.place(f"p{k}", whole(1))
            if isinstance(decision, Unschedulable):
                assert len(live) == 2 * replicas
                continue
            state.allocate(decision)
            live.append(decision.pod)
        else:
            state.release(live.pop(pick % len(live)))
        node = state.index["sliced"]
        held = np.bincount([state.live[x].gpus[0] for x in live], minlength=2)
        assert held.max(initial=0) <= replicas
        assert (state.gpu_left[node, :2] == 1000 - held * slice_milli(replicas)).all()


# -- the scheduler's view ------------------------------------------------------------


def ts_node(name: str, gpus: int, replicas: int, renamed: bool = False) -> dict:
    resource = "nvidia.com/gpu.shared" if renamed else "nvidia.com/gpu"
    product = "Tesla-T4-SHARED" if renamed else "Tesla-T4"
    return {
        "metadata": {
            "name": name,
            "labels": {
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.replicas": str(replicas),
                "nvidia.com/gpu.sharing-strategy": "time-slicing",
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", resource: str(gpus * replicas)}
        },
    }


def test_a_time_sliced_node_is_read_as_physical_gpus_with_replicas() -> None:
    info = node_info(ts_node("t", gpus=2, replicas=4))
    assert (info.spec.gpu_count, info.spec.gpu_replicas, info.replica_resource) == (2, 4, "nvidia.com/gpu")
    renamed = node_info(ts_node("r", gpus=3, replicas=2, renamed=True))
    assert (renamed.spec.gpu_count, renamed.spec.gpu_replicas) == (3, 2)
    assert renamed.replica_resource == "nvidia.com/gpu.shared"
    assert renamed.spec.gpu_model == "T4"  # the -SHARED suffix is not part of the model; the label maps to T4
    odd = ts_node("o", gpus=2, replicas=4)
    odd["metadata"]["labels"]["nvidia.com/gpu.replicas"] = "lots"
    info = node_info(odd)
    assert info.spec.gpu_replicas == 1 and "not a replica count" in (info.problem or "")


def test_scheduler_packs_replicas_and_survives_a_restart() -> None:
    cache = ClusterCache("fgd", seed=1)
    cache.upsert_node(ts_node("t", gpus=2, replicas=4))
    pods = [pod(f"p{k}", {"nvidia.com/gpu": "1", "cpu": "1"}) for k in range(9)]
    placed = [decide(cache, p) for p in pods]
    assert all(not isinstance(d, Unschedulable) for d in placed[:8])
    assert isinstance(placed[8], Unschedulable)
    assert "Insufficient GPU share" in placed[8].message
    assert {s.milli for d in placed[:8] for s in d.annotation.gpus} == {250}
    # A restarted scheduler reads the same slices back from the annotations.
    again = ClusterCache("fgd", seed=1)
    again.upsert_node(ts_node("t", gpus=2, replicas=4))
    for p, d in zip(pods[:8], placed[:8], strict=True):
        again.upsert_pod(bound(p, d))
    assert again.ensure_built()
    assert again.state.gpu_left[0, :2].tolist() == [0, 0]
    assert isinstance(decide(again, pod("late", {"nvidia.com/gpu": "1", "cpu": "1"})), Unschedulable)


def test_renamed_replicas_only_serve_pods_asking_for_gpu_shared() -> None:
    cache = ClusterCache("fgd", seed=1)
    cache.upsert_node(ts_node("r", gpus=1, replicas=2, renamed=True))
    plain = decide(cache, pod("plain", {"nvidia.com/gpu": "1", "cpu": "1"}))
    assert isinstance(plain, Unschedulable) and "1 Insufficient nvidia.com/gpu." in plain.message
    shared = decide(cache, pod("shared", {"nvidia.com/gpu.shared": "1", "cpu": "1"}))
    assert not isinstance(shared, Unschedulable) and shared.annotation.gpus[0].milli == 500


def test_other_schedulers_pods_are_charged_where_nvidias_plugin_spreads_replicas() -> None:
    cache = ClusterCache("fgd", seed=1)
    cache.upsert_node(ts_node("t", gpus=2, replicas=2))
    other = pod(
        "other", {"nvidia.com/gpu": "2", "cpu": "1"}, node_name="t", schedulerName="default-scheduler"
    )
    cache.upsert_pod(other)
    assert cache.ensure_built()
    assert cache.state.gpu_left[0, :2].tolist() == [500, 500]  # one replica on each GPU
    cache.delete_pod(other["metadata"]["uid"])
    assert cache.state.gpu_left[0, :2].tolist() == [1000, 1000]
    assert not cache.state.live


def test_the_simulator_counts_what_a_slice_holds_not_what_the_pod_asked() -> None:
    nodes = (NodeSpec("ts", 64000, 262144, 2, "T4", gpu_replicas=4),)
    pods = tuple(PodRecord(f"p{k}", whole(1)) for k in range(8))
    result = run_inflation(Trace("sliced", nodes, pods), "fgd", seed=1, tune=None)
    placed = int(result.series.placed.sum())
    assert placed == len(pods)
    assert int(result.series.used_milli[-1]) == placed * 250  # 8 slices of 250 milli: 2 physical GPUs


def test_free_slices_are_not_fragments_for_the_one_gpu_pods_that_take_them() -> None:
    """FGD's measure on a time-sliced node: a one-GPU pod takes a slice, so free slices serve it.

    Before slices were modelled in `Fragmentation`, a 250-milli free slice was too small
    for a 1000-milli type and every idle milli of the node counted as fragment.
    """
    nodes = (NodeSpec("ts", 64000, 262144, 2, "T4", gpu_replicas=4),)
    pods = tuple(PodRecord(f"p{k}", whole(1)) for k in range(7))
    result = run_inflation(Trace("sliced", nodes, pods), "fgd", seed=1, tune=None)
    assert int(result.series.placed.sum()) == 7
    assert np.all(result.series.frag_milli == 0.0)  # every step left whole slices free
    assert result.series.idle_milli[-1] == 250.0  # one slice left


def test_on_a_time_sliced_node_types_it_refuses_see_all_idle_as_fragment() -> None:
    sliced = ClusterState([NodeSpec("ts", 64000, 262144, 2, "T4", gpu_replicas=4)])
    target = TargetWorkload(
        types=(whole(1).shape, frac(500).shape, whole(2).shape), weights=(0.5, 0.25, 0.25)
    )
    frag, idle = Fragmentation(target, sliced).of_nodes(sliced, np.array([0]))
    # The one-GPU half of the workload fits in slices; fractions and 2-GPU pods do not go there.
    assert idle[0] == 2000.0
    assert frag[0] == pytest.approx(0.5 * 2000.0)
