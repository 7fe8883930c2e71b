"""fgd-topo steers multi-GPU pods across node shapes; fgd-topo-relative only within one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
from tessellate.placement.topology import NodeTopology, best_bandwidth, dgx1_v100, nvswitch, pcie
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

TARGET = TargetWorkload.from_requests([p.request for p in generate(SyntheticConfig(seed=1, nodes=20)).pods])

PCIE_ONLY = pcie(8, 2, 2, nvlink_pairs=False, pcie_generation=3, kind="pcie-only-8")
BRIDGED = pcie(8, 2, 2, nvlink_pairs=True, kind="pcie-nvlink-bridged-8")
HGX = nvswitch(8, nvlink_generation=3, kind="hgx-a100-8")
SHAPES: tuple[NodeTopology | None, ...] = (PCIE_ONLY, BRIDGED, HGX, dgx1_v100(), None)


def whole(k: int) -> Request:
    return Request(cpu_milli=1000, memory_mib=1024, gpu_count=k, gpu_milli=MILLI_PER_GPU)


def node(name: str, topology: NodeTopology | None) -> NodeSpec:
    # one GPU model everywhere, so FGD cannot tell the nodes apart: only the wiring differs
    return NodeSpec(name, 96_000, 786_432, 8, "A100-80GB", topology=topology)


def placer(state: ClusterState, policy: str, weight: float = 0.5) -> Placer:
    context = PolicyContext(rng=NumpyInts(0), target=TARGET, topology_weight=weight)
    return Placer(state, create_policy(policy, context))


def pcie_then_nvswitch() -> ClusterState:
    return ClusterState([node("pcie", PCIE_ONLY), node("nvswitch", HGX)])


@pytest.mark.parametrize("k", [2, 4, 8])
def test_a_multi_gpu_pod_goes_to_the_nvswitch_node_under_fgd_topo(k):
    state = pcie_then_nvswitch()
    assert placer(state, "fgd-topo").place("job", whole(k)).node_name == "nvswitch"
    # plain FGD and the shape-relative score see two equal empty nodes: the first one wins
    assert placer(state, "fgd").place("job", whole(k)).node_name == "pcie"
    assert placer(state, "fgd-topo-relative").place("job", whole(k)).node_name == "pcie"


def test_single_gpus_and_fractions_are_placed_as_fgd_places_them():
    # FGD prefers the NVSwitch node (its GPUs are stranded behind a CPU hog); a topology
    # term would score both nodes 100 at weight 1 and hand the tie to the first node.
    state = pcie_then_nvswitch()
    state.allocate(Assignment("cpu-hog", 1, "nvswitch", Request(cpu_milli=90_000, memory_mib=1024), ()))
    nodes = np.arange(2)
    for request in (whole(1), Request(cpu_milli=1000, memory_mib=1024, gpu_count=1, gpu_milli=500)):
        fgd, topo = placer(state, "fgd"), placer(state, "fgd-topo", 1.0)
        np.testing.assert_array_equal(
            topo.policy.score(state, request, nodes), fgd.policy.score(state, request, nodes)
        )
        a, b = fgd.place("small", request), topo.place("small", request)
        assert (b.node_name, b.gpus) == (a.node_name, a.gpus)
        assert a.node_name == "nvswitch"


def test_the_weight_trades_packing_against_bandwidth():
    # "pcie" has 6 of its 96 cores left, so its GPUs are stranded for typical pods and FGD
    # wants a 2-GPU pod there (score 80 against 57); enough topology weight overrides that.
    state = pcie_then_nvswitch()
    state.allocate(Assignment("cpu-hog", 0, "pcie", Request(cpu_milli=90_000, memory_mib=1024), ()))
    assert placer(state, "fgd").place("job", whole(2)).node_name == "pcie"
    chosen = {w: placer(state, "fgd-topo", w).place("job", whole(2)).node_name for w in (0.0, 0.1, 0.5, 1.0)}
    assert chosen == {0.0: "pcie", 0.1: "pcie", 0.5: "nvswitch", 1.0: "nvswitch"}


def test_unknown_nodes_are_a_typical_node_between_fast_and_slow_wiring():
    state = ClusterState([node("pcie", PCIE_ONLY), node("unknown", None), node("nvswitch", HGX)])
    scores = placer(state, "fgd-topo", 1.0).policy.score(state, whole(4), np.arange(3))
    slow = best_bandwidth(PCIE_ONLY, 0xFF, 4) / 600.0
    assert scores.tolist() == [round(100 * slow), round(100 * (slow + 1.0) / 2), 100]


def test_a_cluster_without_known_wiring_is_scored_by_fgd():
    state = ClusterState([node("a", None), node("b", None)])
    state.allocate(Assignment("busy", 0, "a", whole(3), (0, 1, 2)))
    nodes = np.arange(2)
    for k in (2, 4):
        np.testing.assert_array_equal(
            placer(state, "fgd-topo").policy.score(state, whole(k), nodes),
            placer(state, "fgd").policy.score(state, whole(k), nodes),
        )


def fill(state: ClusterState, busy: list[list[int]]) -> None:
    for n, gpus in enumerate(busy):
        if gpus:
            state.allocate(Assignment(f"busy-{n}", n, state.names[n], whole(len(gpus)), tuple(gpus)))


clusters = st.lists(
    st.tuples(st.sampled_from(SHAPES), st.sets(st.integers(0, 7), max_size=7).map(sorted)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(clusters, st.integers(2, 8), st.sampled_from([0.1, 0.5, 0.9, 1.0]))
def test_vectorised_scores_equal_a_per_node_loop(cluster, k, weight):
    state = ClusterState([node(f"n{i}", t) for i, (t, _) in enumerate(cluster)])
    fill(state, [busy for _, busy in cluster])
    nodes = np.arange(len(cluster))
    got = placer(state, "fgd-topo", weight).policy.score(state, whole(k), nodes)
    fgd = placer(state, "fgd").policy.score(state, whole(k), nodes)
    known = [t for t, _ in cluster if t is not None]
    reference = max((best_bandwidth(t, 0xFF, k) for t in known), default=0.0)
    typical = np.mean([best_bandwidth(t, 0xFF, k) / reference for t in known]) if known else None
    for i, (t, busy) in enumerate(cluster):
        free = sum(1 << g for g in range(8) if g not in busy)
        if typical is None:
            want = fgd[i]
        else:
            if free.bit_count() < k:
                topo = 0.0
            elif t is None:
                topo = typical
            else:
                topo = best_bandwidth(t, free, k) / reference
            want = np.rint((1 - weight) * fgd[i] + weight * 100 * topo)
        assert got[i] == want, (i, t and t.kind, busy)


@settings(max_examples=25, deadline=None)
@given(clusters, st.lists(st.sampled_from([1, 2, 2, 4, 8]), min_size=1, max_size=8))
def test_weight_zero_places_exactly_as_fgd(cluster, sizes):
    picks = {}
    for policy in ("fgd", "fgd-topo"):
        state = ClusterState([node(f"n{i}", t) for i, (t, _) in enumerate(cluster)])
        fill(state, [busy for _, busy in cluster])
        run = placer(state, policy, 0.0)
        picks[policy] = []
        for i, k in enumerate(sizes):
            decision = run.place(f"p{i}", whole(k))
            if isinstance(decision, Assignment):
                state.allocate(decision)
                picks[policy].append((decision.node, decision.gpus))
            else:
                picks[policy].append(None)
    assert picks["fgd"] == picks["fgd-topo"]
