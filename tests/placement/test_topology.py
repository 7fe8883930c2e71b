"""Intra-node topology: graphs, bandwidths, the GPU-set choice and its brute-force proof."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tessellate.placement import topology as topo
from tessellate.placement.topology import (
    NodeTopology,
    TopologyError,
    TopologyIndex,
    best_bandwidth,
    best_gpu_set,
    dgx1_v100,
    free_masks,
    numa_nodes,
    nvswitch,
    pcie,
    scores_for_nodes,
    topology_score,
)

from tessellate.wire.topology import from_inventory, to_inventory


def mask(*gpus: int) -> int:
    return sum(1 << g for g in gpus)


def all_but(count: int, *busy: int) -> int:
    return mask(*(g for g in range(count) if g not in busy))


def dgx_a100_nps4() -> NodeTopology:
    """DGX A100 as captured in the reference (4.3): NUMA ids 3,1,7,5 in pairs, two sockets."""
    numa = [3, 3, 1, 1, 7, 7, 5, 5]
    return from_inventory(
        {
            "version": 1,
            "kind": "dgx-a100-nps4",
            "nvlink_generation": 3,
            "pcie_generation": 4,
            "gpus": [
                {"index": i, "numa": n, "socket": i // 4, "pcie_switch": i // 2} for i, n in enumerate(numa)
            ],
            "links": [[i, j, "nvswitch", 12] for i, j in itertools.combinations(range(8), 2)],
        }
    )


EIGHT_GPU_SHAPES = {
    "dgx1-v100": dgx1_v100,
    "hgx-a100": lambda: nvswitch(8, nvlink_generation=3),
    "hgx-h100": lambda: nvswitch(8, nvlink_generation=4),
    "dgx-a100-nps4": dgx_a100_nps4,
    "pcie-bridged-pairs": lambda: pcie(8, gpus_per_switch=4, switches_per_socket=1, nvlink_pairs=True),
    "pcie-2-per-switch": lambda: pcie(8, gpus_per_switch=2, switches_per_socket=2, nvlink_pairs=False),
}


# --------------------------------------------------------------------------- brute force


class BruteForce:
    """The definition of `best_gpu_set`, written the slow and obvious way."""

    def __init__(self, t: NodeTopology):
        self.bw = t.bandwidth
        self.numa = t.numa
        self.g = t.gpu_count
        self._best: dict[tuple[tuple[int, ...], int], tuple[float, int]] = {}

    def quality(self, gpus: tuple[int, ...]) -> tuple[float, int]:
        pairs = [self.bw[i, j] for i, j in itertools.combinations(gpus, 2)]
        return (min(pairs, default=float("inf")), -len({int(self.numa[i]) for i in gpus}))

    def best_quality(self, gpus: tuple[int, ...], m: int) -> tuple[float, int]:
        key = (gpus, m)
        if key not in self._best:
            self._best[key] = max(self.quality(c) for c in itertools.combinations(gpus, m))
        return self._best[key]

    def choose(self, free: int, k: int) -> tuple[int, ...] | None:
        gpus = [i for i in range(self.g) if free >> i & 1]
        if k > len(gpus):
            return None
        best, best_key = None, None
        for chosen in itertools.combinations(gpus, k):  # lexicographic: the first maximum wins ties
            rest = tuple(i for i in gpus if i not in chosen)
            profile = tuple(self.best_quality(rest, m) for m in range(len(rest), 1, -1))
            key = (self.quality(chosen), profile)
            if best_key is None or key > best_key:
                best, best_key = chosen, key
        return best


# --------------------------------------------------------------------------- known answers


def test_dgx1_cube_mesh_picks_a_fully_nvlinked_quad_rather_than_one_crossing_sockets():
    t = dgx1_v100()
    assert best_gpu_set(t, all_but(8), 4) == (0, 1, 2, 3)
    # GPU 0 busy: first-free would take 1,2,3,4 (3-4 and 1-4 have no NVLink); the other quad is whole.
    assert best_gpu_set(t, all_but(8, 0), 4) == (4, 5, 6, 7)
    assert topology_score(t, all_but(8, 0), 4) == 1.0
    # No whole quad left: the best set has to cross sockets and the score says so.
    crossing = all_but(8, 0, 7)
    assert topology_score(t, crossing, 4) == pytest.approx(t.bandwidth[1, 4] / t.bandwidth[0, 1])


def test_dgx1_pair_uses_a_double_nvlink_and_keeps_the_other_quad_whole():
    t = dgx1_v100()
    chosen = best_gpu_set(t, all_but(8, 0), 2)
    assert chosen == (1, 2)
    assert t.bandwidth[chosen] == 100.0  # NV2 on NVLink 2: 2 x 50 GB/s
    assert best_gpu_set(t, all_but(8, 0, 1, 2), 4) == (4, 5, 6, 7)


def test_pcie_server_with_nvlink_bridges_picks_a_bridged_pair():
    t = pcie(8, gpus_per_switch=4, switches_per_socket=1, nvlink_pairs=True)
    assert best_gpu_set(t, mask(1, 2, 3, 5), 2) == (2, 3)  # first-free: 1,2 over PCIe
    assert t.graph().edges[2, 3]["link"] == "nvlink"
    assert topology_score(t, mask(1, 2, 3, 5), 2) == 1.0
    assert topology_score(t, mask(1, 2, 5), 2) == pytest.approx(63.0 / 600.0)


def test_pcie_server_without_bridges_prefers_gpus_behind_one_switch():
    t = pcie(8, gpus_per_switch=2, switches_per_socket=2, nvlink_pairs=False)
    assert best_gpu_set(t, mask(1, 2, 3), 2) == (2, 3)
    assert best_gpu_set(t, mask(3, 4, 5), 2) == (4, 5)


def test_on_nvswitch_every_set_is_equal_and_the_fewest_numa_nodes_win():
    t = nvswitch(8, nvlink_generation=4)
    assert np.all(t.bandwidth[~np.eye(8, dtype=bool)] == 900.0)  # NV18 x 50 GB/s
    assert best_gpu_set(t, mask(3, 4, 5), 2) == (4, 5)  # first-free 3,4 spans both NUMA nodes
    assert topology_score(t, mask(3, 4), 2) == 1.0  # bandwidth alone cannot tell them apart


def test_one_gpu_leaves_an_intact_numa_quad_for_the_next_four_gpu_pod():
    t = nvswitch(8, nvlink_generation=3)
    assert best_gpu_set(t, all_but(8, 7), 1) == (4,)
    assert best_gpu_set(t, all_but(8, 7), 2) == (4, 5)


def test_too_few_free_gpus_is_none_and_scores_zero():
    t = dgx1_v100()
    assert best_gpu_set(t, mask(0, 1, 2), 4) is None
    assert best_gpu_set(t, all_but(8), 9) is None
    assert topology_score(t, mask(0, 1, 2), 4) == 0.0
    assert best_gpu_set(t, mask(0, 1, 2), 0) == ()


def test_free_mask_may_be_a_bool_row_padded_with_missing_gpus():
    t = pcie(4, gpus_per_switch=2, switches_per_socket=1, nvlink_pairs=True)
    row = np.array([True, False, True, True, False, False, False, False])
    assert best_gpu_set(t, row, 2) == (2, 3)
    with pytest.raises(ValueError, match="does not have"):
        best_gpu_set(t, np.array([True] * 5), 1)
    with pytest.raises(ValueError, match="non-negative"):
        best_gpu_set(t, row, -1)


def test_numa_nodes_lists_the_distinct_nodes_a_set_spans():
    t = dgx_a100_nps4()
    assert numa_nodes(t, (0, 1, 2)) == (1, 3)
    assert numa_nodes(t, (6,)) == (5,)
    assert numa_nodes(t, ()) == ()
    with pytest.raises(ValueError, match="not on a 8-GPU"):
        numa_nodes(t, (8,))


def test_cross_numa_on_one_socket_beats_cross_socket_over_pcie():
    t = pcie(4, gpus_per_switch=1, switches_per_socket=2, nvlink_pairs=False)
    same_socket = from_inventory(
        {
            "version": 1,
            "pcie_generation": 4,
            "gpus": [{"index": i, "numa": i, "socket": 0} for i in range(2)],
        }
    )
    assert t.graph().edges[0, 1]["link"] == "host-bridge"
    assert t.graph().edges[0, 2]["link"] == "cross-socket"
    assert same_socket.graph().edges[0, 1]["link"] == "cross-numa"
    assert t.bandwidth[0, 1] > same_socket.bandwidth[0, 1] > t.bandwidth[0, 2]


# --------------------------------------------------------------------------- the graph


def test_dgx1_graph_follows_the_reference_link_matrix():
    t = dgx1_v100()
    g = t.graph()
    assert sorted(g.nodes) == list(range(8))
    assert g.nodes[5]["numa"] == 1
    assert g.edges[0, 3] == {"bandwidth": 100.0, "link": "nvlink", "count": 2}
    assert g.edges[0, 1]["count"] == 1
    assert g.edges[0, 5]["link"] == "cross-socket"
    nvlinked = [(a, b) for a, b, d in g.edges(data=True) if d["link"] == "nvlink"]
    assert len(nvlinked) == 16
    assert sum(g.edges[e]["count"] for e in nvlinked) == 24  # 6 links per GPU
    dense = np.array([[g.edges[i, j]["bandwidth"] if i != j else 0.0 for j in range(8)] for i in range(8)])
    np.testing.assert_array_equal(t.bandwidth, dense)
    assert not t.bandwidth.flags.writeable


def test_identical_nodes_share_one_topology_object():
    assert nvswitch(8, nvlink_generation=3) is nvswitch(8, nvlink_generation=3)
    t = dgx1_v100()
    assert from_inventory(to_inventory(t)) is t
    assert pickle.loads(pickle.dumps(t)) is t
    assert copy.deepcopy(t) is t


# --------------------------------------------------------------------------- inventory JSON


@pytest.mark.parametrize("name", sorted(EIGHT_GPU_SHAPES))
def test_inventory_round_trips(name):
    t = EIGHT_GPU_SHAPES[name]()
    doc = to_inventory(t)
    assert from_inventory(doc) == t
    assert from_inventory(to_inventory(from_inventory(doc))) == t


def test_inventory_accepts_a_symmetric_matrix_dump_and_ignores_uuids():
    doc = {
        "version": 1,
        "nvlink_generation": 2,
        "pcie_generation": 3,
        "gpus": [{"index": 1, "numa": 0, "uuid": "GPU-b"}, {"index": 0, "numa": 0, "uuid": "GPU-a"}],
        "links": [[0, 1, "nvlink", 2], [1, 0, "nvlink", 2]],
    }
    t = from_inventory(doc)
    assert t.kind == "custom"
    assert t.bandwidth[0, 1] == 100.0
    assert t.gpus[0].socket == 0  # socket defaults to the NUMA id
    assert to_inventory(t)["links"] == [[0, 1, "nvlink", 2]]


def good_doc() -> dict:
    return {
        "version": 1,
        "kind": "test",
        "nvlink_generation": 3,
        "pcie_generation": 4,
        "gpus": [{"index": i, "numa": i // 2, "pcie_switch": i // 2} for i in range(4)],
        "links": [[0, 1, "nvlink", 12], [2, 3, "nvlink", 12]],
    }


def _set(path, value):
    def edit(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


BAD_INPUT = {
    "unknown link type": (_set(("links", 0, 2), "nvlnk"), r"links\[0\]: unknown link type 'nvlnk'"),
    "link index out of range": (_set(("links", 1, 1), 4), r"links\[1\]: GPU index 4 out of range 0..3"),
    "gpu index out of range": (_set(("gpus", 3, "index"), 7), r"gpus\[3\]: GPU index 7 out of range 0..3"),
    "duplicate gpu index": (_set(("gpus", 3, "index"), 0), r"gpus\[3\]: duplicate GPU index 0"),
    "duplicate link": (
        lambda d: d["links"].append([0, 1, "nvlink", 12]),
        r"links\[2\]: duplicate entry for GPUs 0-1",
    ),
    "asymmetric link": (
        lambda d: d["links"].append([1, 0, "nvlink", 6]),
        r"links\[2\]: asymmetric entries: GPUs 1-0 listed as nvlink x6 but 0-1 as nvlink x12",
    ),
    "self link": (_set(("links", 0, 1), 0), r"links\[0\]: GPU 0 linked to itself"),
    "zero links": (_set(("links", 0, 3), 0), r"links\[0\] link count must be at least 1"),
    "short link entry": (_set(("links", 0), [0, 1, "nvlink"]), r"links\[0\]: expected \[i, j, type, count\]"),
    "float index": (_set(("gpus", 0, "index"), 0.0), r"gpus\[0\].index must be an integer"),
    "bool numa": (_set(("gpus", 0, "numa"), True), r"gpus\[0\].numa must be an integer"),
    "unknown gpu key": (_set(("gpus", 0, "nvlinks"), 3), r"gpus\[0\]: unknown key\(s\) nvlinks"),
    "unknown top key": (_set(("matrix",), []), r"topology: unknown key\(s\) matrix"),
    "missing numa": (lambda d: d["gpus"][2].pop("numa"), r"gpus\[2\]: missing numa"),
    "wrong version": (_set(("version",), 2), r"unsupported topology version 2"),
    "no pcie generation": (lambda d: d.pop("pcie_generation"), r"pcie_generation is required"),
    "unknown pcie generation": (_set(("pcie_generation",), 2), r"unknown PCIe generation 2"),
    "links without generation": (lambda d: d.pop("nvlink_generation"), r"no nvlink_generation"),
    "too many nvlinks": (
        lambda d: d["links"].append([0, 2, "nvlink", 1]),
        r"GPU 0 has 13 NVLinks but NVLink 3 GPUs have at most 12",
    ),
    "switch spans numa": (
        _set(("gpus", 1, "pcie_switch"), 1),
        r"PCIe switch 1 spans NUMA nodes 0 and 1 \(GPU 2\)",
    ),
    "numa spans sockets": (_set(("gpus", 1, "socket"), 1), r"NUMA node 0 spans sockets 0 and 1"),
    "no gpus": (_set(("gpus",), []), r"gpus must be a non-empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_inventory_rejects_bad_input_with_a_specific_message(case):
    edit, message = BAD_INPUT[case]
    doc = good_doc()
    from_inventory(doc)  # the unedited document is fine
    edit(doc)
    with pytest.raises(TopologyError, match=message):
        from_inventory(doc)


def test_inventory_must_be_an_object():
    with pytest.raises(TopologyError, match="must be a JSON object, got list"):
        from_inventory([])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- proof by brute force


@pytest.mark.parametrize("name", sorted(EIGHT_GPU_SHAPES))
def test_best_gpu_set_equals_brute_force_for_every_free_mask_and_size(name):
    t = EIGHT_GPU_SHAPES[name]()
    brute = BruteForce(t)
    empty_best = {k: brute.quality(brute.choose(0xFF, k))[0] for k in range(2, 9)}
    for free in range(256):
        for k in range(1, 9):
            expected = brute.choose(free, k)
            assert best_gpu_set(t, free, k) == expected, (name, bin(free), k)
            if expected is None:
                want = 0.0
            elif k == 1:
                want = 1.0
            else:
                want = brute.quality(expected)[0] / empty_best[k]
            assert topology_score(t, free, k) == pytest.approx(want), (name, bin(free), k)
            gbps = 0.0 if expected is None else brute.quality(expected)[0]  # inf for k = 1
            assert best_bandwidth(t, free, k) == gbps, (name, bin(free), k)


def test_memoised_path_for_large_nodes_agrees_with_the_precomputed_table(monkeypatch):
    t = dgx1_v100()
    eager = t._tables
    monkeypatch.setattr(topo, "EAGER_GPUS", 0)
    lazy = topo._Tables(t.bandwidth, t.numa)
    assert not lazy._known.any()
    for free in range(256):
        for k in range(9):
            assert lazy.choose(free, k) == eager.choose(free, k), (bin(free), k)


def test_sixteen_gpu_nvswitch_node_keeps_a_pod_inside_one_numa_half():
    t = nvswitch(16, nvlink_generation=2)
    assert t.bandwidth[0, 15] == 300.0  # NV6 x 50 GB/s, DGX-2 (reference 4.2)
    assert best_gpu_set(t, all_but(16, 0), 8) == tuple(range(8, 16))
    assert topology_score(t, all_but(16, 0), 8) == 1.0


@st.composite
def small_topologies(draw) -> NodeTopology:
    """Random 2..6-GPU hosts: NUMA/socket/switch layout plus a random NVLink count matrix."""
    g = draw(st.integers(2, 6))
    gpus = []
    for i in range(g):
        numa = draw(st.integers(0, 2))
        switch = draw(st.one_of(st.none(), st.integers(0, 1)))
        gpus.append(
            {
                "index": i,
                "numa": numa,
                "socket": numa // 2,
                "pcie_switch": None if switch is None else numa * 2 + switch,
            }
        )
    links = []
    for i, j in itertools.combinations(range(g), 2):
        count = draw(st.integers(0, 3))
        if count:
            links.append([i, j, draw(st.sampled_from(["nvlink", "nvswitch"])), count])
    doc = {
        "version": 1,
        "nvlink_generation": draw(st.sampled_from([4, 5])) if links else None,  # 18 links: room for 5 x 3
        "pcie_generation": draw(st.integers(3, 6)),
        "gpus": draw(st.permutations(gpus)),
        "links": links,
    }
    return from_inventory(doc)


@settings(max_examples=60, deadline=None)
@given(small_topologies())
def test_best_gpu_set_equals_brute_force_on_random_small_topologies(t):
    brute = BruteForce(t)
    full = (1 << t.gpu_count) - 1
    for free in range(full + 1):
        for k in range(t.gpu_count + 1):
            chosen = best_gpu_set(t, free, k)
            assert chosen == brute.choose(free, k)
            score = topology_score(t, free, k)
            assert 0.0 <= score <= 1.0
            assert best_bandwidth(t, free, k) == (0.0 if chosen is None else brute.quality(chosen)[0])
            if chosen is not None:
                assert set(chosen) <= {i for i in range(t.gpu_count) if free >> i & 1}
                assert len(chosen) == k
        assert topology_score(t, full, t.gpu_count) == 1.0
    assert from_inventory(to_inventory(t)) is t


# --------------------------------------------------------------------------- many nodes at once


def test_scores_for_nodes_matches_the_per_node_score_including_unknown_nodes():
    shapes = [dgx1_v100(), None, nvswitch(4, nvlink_generation=4), EIGHT_GPU_SHAPES["pcie-bridged-pairs"]()]
    rng = np.random.default_rng(7)
    nodes = [shapes[i % len(shapes)] for i in range(40)]
    index = TopologyIndex(nodes, unknown_score=0.5)
    assert len(index) == 40
    width = [8, 8, 4, 8]
    free = np.zeros((40, 8), dtype=bool)
    for n in range(40):
        free[n, : width[n % 4]] = rng.random(width[n % 4]) < 0.6
    masks = free_masks(free)
    assert masks[0] == sum(1 << g for g in range(8) if free[0, g])
    for k in range(0, 10):
        got = scores_for_nodes(index, masks, k)
        for n, t in enumerate(nodes):
            if t is None:
                want = 0.5 if free[n].sum() >= k else 0.0
            else:
                want = topology_score(t, int(masks[n]), k) if k <= t.gpu_count else 0.0
            assert got[n] == pytest.approx(want), (n, k)
    subset = np.array([3, 0, 2])
    np.testing.assert_array_equal(
        scores_for_nodes(index, masks[subset], 2, nodes=subset), scores_for_nodes(index, masks, 2)[subset]
    )


def test_index_shares_tables_between_identical_nodes():
    index = TopologyIndex([nvswitch(8)] * 1000 + [dgx1_v100()] * 1000)
    assert index.tables.shape == (3, 256, 9)
    assert set(np.unique(index.ids)) == {1, 2}


# --------------------------------------------------------------------------- scores across node shapes


def best_bottleneck(t: NodeTopology, free: int, k: int) -> float:
    """The definition of `best_bandwidth`, the slow way: the best slowest pair of any k free GPUs."""
    gpus = [i for i in range(t.gpu_count) if free >> i & 1]
    if k > len(gpus):
        return 0.0
    return max(
        (min((t.bandwidth[i, j] for i, j in itertools.combinations(c, 2)), default=float("inf")))
        for c in itertools.combinations(gpus, k)
    )


def cluster_scores_by_loop(nodes: list, masks: list[int], k: int) -> list[float]:
    """`relative_to="cluster"` scores node by node, straight from the definition."""
    known = [t for t in nodes if t is not None]
    fits = [t for t in known if t.gpu_count >= k]
    reference = max((best_bottleneck(t, (1 << t.gpu_count) - 1, k) for t in fits), default=0.0)

    def absolute(t: NodeTopology, free: int) -> float:
        if k > t.gpu_count or free.bit_count() < k:
            return 0.0
        return 1.0 if k <= 1 else best_bottleneck(t, free, k) / reference

    empty = [absolute(t, (1 << t.gpu_count) - 1) for t in fits]
    typical = sum(empty) / len(empty) if empty and k >= 2 else 1.0
    return [
        (typical if free.bit_count() >= k else 0.0) if t is None else absolute(t, free)
        for t, free in zip(nodes, masks, strict=True)
    ]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(small_topologies(), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 63)), min_size=1, max_size=10),
    st.integers(0, 7),
)
def test_cluster_relative_scores_equal_a_per_node_loop(shapes, picks, k):
    nodes = [None if pick >= len(shapes) else shapes[pick] for pick, _ in picks]
    masks = [
        free & ((1 << (6 if t is None else t.gpu_count)) - 1)
        for t, (_, free) in zip(nodes, picks, strict=True)
    ]
    index = TopologyIndex(nodes, max_gpus=6, relative_to="cluster")
    got = scores_for_nodes(index, np.array(masks, dtype=np.int64), k)
    assert got.tolist() == pytest.approx(cluster_scores_by_loop(nodes, masks, k))
    assert ((got >= 0.0) & (got <= 1.0 + 1e-12)).all()


def test_cluster_relative_scores_rank_an_nvswitch_node_above_pcie_for_the_same_k():
    nvs, pcie_only = nvswitch(8, nvlink_generation=3), pcie(8, 2, 2, nvlink_pairs=False, pcie_generation=3)
    shape = TopologyIndex([nvs, pcie_only])
    cluster = TopologyIndex([nvs, pcie_only], relative_to="cluster")
    full = np.array([0xFF, 0xFF])
    for k in (2, 4, 8):
        assert scores_for_nodes(shape, full, k).tolist() == [1.0, 1.0]  # blind across shapes
        assert scores_for_nodes(cluster, full, k).tolist() == pytest.approx(
            [1.0, best_bandwidth(pcie_only, 0xFF, k) / 600.0]
        )
    # 4 GPUs on one socket behind 2 PCIe switches: host-bridge class, 3/4 of PCIe 3 x16
    assert scores_for_nodes(cluster, full, 4)[1] == pytest.approx(31.5 * 0.75 / 600)
    assert cluster.reference[4] == 600.0
    # one GPU: nothing to connect, so every node that has it free scores 1.0
    assert scores_for_nodes(cluster, np.array([0x01, 0x00]), 1).tolist() == [1.0, 0.0]


def test_unknown_nodes_score_as_a_typical_known_node_and_do_not_change_as_they_fill():
    nvs, dgx = nvswitch(8, nvlink_generation=3), dgx1_v100()
    nodes = [nvs, dgx, dgx, dgx, None]
    index = TopologyIndex(nodes, relative_to="cluster")
    dgx_empty = best_bandwidth(dgx, 0xFF, 4) / 600.0
    assert index.unknown[4] == pytest.approx((1.0 + 3 * dgx_empty) / 4)  # weighted by node count
    unknown = [scores_for_nodes(index, np.array([free]), 4, nodes=np.array([4]))[0] for free in (0xFF, 0x0F)]
    assert unknown == pytest.approx([index.unknown[4]] * 2)
    assert scores_for_nodes(index, np.array([0x07]), 4, nodes=np.array([4]))[0] == 0.0  # 3 free < 4
    # with one known shape, an unknown node counts as an empty node of it, as under "shape"
    assert TopologyIndex([dgx, None], relative_to="cluster").unknown.tolist() == [1.0] * 9
    # an explicit unknown_score still wins
    assert TopologyIndex(nodes, unknown_score=0.25, relative_to="cluster").unknown[4] == 0.25


def test_cluster_reference_skips_shapes_too_small_for_k_and_unknown_k_is_neutral():
    small, large = nvswitch(4, nvlink_generation=4), pcie(8, 4, 1, nvlink_pairs=False)
    index = TopologyIndex([small, large, None], relative_to="cluster")
    assert index.reference[4] == 900.0 and index.reference[8] == 63.0 * 0.25  # 8 GPUs span 2 sockets
    got = scores_for_nodes(index, np.array([0x0F, 0xFF, 0xFF]), 8)
    assert got.tolist() == [0.0, 1.0, 1.0]  # only the PCIe node has 8 GPUs; unknown = typical = it


def test_index_rejects_an_unknown_reference():
    with pytest.raises(ValueError, match="relative_to"):
        TopologyIndex([dgx1_v100()], relative_to="node")
