"""Topology scenarios, the interconnect metric and the topology-aware FGD policy."""

from __future__ import annotations

import pytest
from paths import SHARED
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    NodeSpec,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    TargetWorkload,
)
from tessellate.placement.policies import create_policy
from tessellate.placement.topology import best_bandwidth, dgx1_v100
from tessellate.simulator.interconnect import interconnect_quality
from tessellate.simulator.scenarios import mixed_topology_nodes, scenario_trace, spot_nvswitch_nodes
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate


def whole(k: int) -> Request:
    return Request(cpu_milli=1000, memory_mib=1024, gpu_count=k, gpu_milli=MILLI_PER_GPU)


def dgx1(name: str) -> NodeSpec:
    return NodeSpec(name, 96_000, 786_432, 8, "V100M32", topology=dgx1_v100())


@pytest.mark.skipif(not (SHARED / "traces" / "spot-gpu-2026").exists(), reason="needs ../shared")
def test_spot_nodes_are_the_8_gpu_nvswitch_boards() -> None:
    nodes = spot_nvswitch_nodes()
    assert len(nodes) == 432 + 22 + 219  # A100, A800 and H800 rows with 8 GPUs
    assert {n.gpu_model for n in nodes} == {"A100-80GB", "A800-80GB", "H800-80GB"}
    assert all(n.topology is not None and n.topology.gpu_count == 8 for n in nodes)
    # A800 and H800 are export variants: NVLink capped at 400 GB/s, against the A100's 600.
    pair = {n.gpu_model: best_bandwidth(n.topology, 0xFF, 2) for n in nodes}
    assert pair == {"A100-80GB": 600.0, "A800-80GB": 400.0, "H800-80GB": 400.0}


def test_mixed_cluster_has_every_wiring() -> None:
    kinds = {n.topology.kind for n in mixed_topology_nodes(200, seed=3)}
    assert len(kinds) == 4


def test_scenario_pods_include_training_jobs_and_no_model_constraints() -> None:
    trace = scenario_trace("mixed-topology", seed=2)
    sizes = {p.request.gpu_count for p in trace.pods}
    assert {2, 4, 8} <= sizes
    assert not any(p.request.gpu_models for p in trace.pods)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_trace("nope")


def test_interconnect_quality_judges_sets_by_the_real_wiring() -> None:
    state = ClusterState([dgx1("a"), dgx1("b")])
    state.allocate(Assignment("quad", 0, "a", whole(4), (0, 1, 2, 3)))  # a fully NVLinked quad
    state.allocate(Assignment("split", 1, "b", whole(2), (1, 4)))  # no NVLink between 1 and 4
    q = interconnect_quality(state)
    assert (q.multi_gpu_pods, q.on_best) == (2, 1)
    assert q.mean_ratio < 1 and q.mean_bandwidth > 0
    blind = interconnect_quality(state, {"a": None, "b": None})
    assert blind.multi_gpu_pods == 0


def fgd_placer(state: ClusterState, name: str, weight: float) -> Placer:
    target = TargetWorkload.from_requests(
        [p.request for p in generate(SyntheticConfig(seed=1, nodes=20)).pods]
    )
    context = PolicyContext(rng=NumpyInts(0), target=target, topology_weight=weight)
    return Placer(state, create_policy(name, context))


def test_fgd_topo_with_weight_zero_is_fgd() -> None:
    nodes = [dgx1(f"n{i}") for i in range(3)]
    requests = [whole(k) for k in (2, 4, 1, 2, 2, 1, 4)]
    chosen = {}
    for name, weight in (("fgd", 0.5), ("fgd-topo", 0.0)):
        state = ClusterState(nodes)
        placer = fgd_placer(state, name, weight)
        picks = []
        for i, r in enumerate(requests):
            d = placer.place(f"p{i}", r)
            state.allocate(d)
            picks.append((d.node, d.gpus))
        chosen[name] = picks
    assert chosen["fgd"] == chosen["fgd-topo"]


def test_fgd_topo_prefers_the_node_that_still_has_an_nvlinked_quad() -> None:
    state = ClusterState([dgx1("broken"), dgx1("intact")])
    # "broken": one GPU busy in each quad, so no fully NVLinked 4-set is left.
    state.allocate(Assignment("b0", 0, "broken", whole(1), (0,)))
    state.allocate(Assignment("b1", 0, "broken", whole(1), (4,)))
    # "intact": two busy GPUs in one quad; the other quad is free.
    state.allocate(Assignment("i0", 1, "intact", whole(2), (0, 1)))
    decision = fgd_placer(state, "fgd-topo", 1.0).place("job", whole(4))
    assert decision.node_name == "intact"
    assert set(decision.gpus) == {4, 5, 6, 7}
