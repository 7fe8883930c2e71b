"""The six FGD-paper policies, the filter's explanations, and fragmentation, on
hand-made clusters whose right answer follows from docs/fgd-protocol.md Sec. 3.

Every expected number is worked out in a comment next to the assertion.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from builders import (
    DEFAULT_TARGET,
    CountingInts,
    cluster,
    cpu_only,
    frac,
    occupy,
    one_type_target,
    place,
    placer,
    put,
    scores,
    where,
    whole,
)
from tessellate.placement import (
    PAPER_POLICIES,
    Fragmentation,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    TargetWorkload,
    Unschedulable,
    create_policy,
)
from tessellate.placement.fit import explain
from tessellate.placement.policies.fgd import quantised_gain

DETERMINISTIC = [p for p in PAPER_POLICIES if p != "random"]


def node_frag(target: TargetWorkload, state, node: str) -> float:
    """F(node) of one node as it is now."""
    frag, _ = Fragmentation(target, state).of_nodes(state, np.array([state.index[node]]))
    return float(frag[0])


# --------------------------------------------------------------------------------------
# Shared rules: tie-breaking, whole-GPU device choice, the single-feasible-node shortcut
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", DETERMINISTIC)
@pytest.mark.parametrize("request_", [cpu_only(2000), frac(300), whole(2)], ids=["cpu", "frac", "whole"])
def test_ties_go_to_the_lowest_node_index_not_the_smallest_name(policy, request_):
    # Identical nodes score identically under every deterministic policy; the node
    # listed first wins even though its name sorts last.
    state = cluster(("zz", 8000, 65536, 4, "T4"), ("aa", 8000, 65536, 4, "T4"), ("mm", 8000, 65536, 4, "T4"))
    node, _ = where(place(state, policy, request_))
    assert node == "zz"


@pytest.mark.parametrize("policy", PAPER_POLICIES)
def test_whole_gpu_pods_take_the_first_fully_free_gpus_in_index_order(policy):
    state = cluster(("n0", 8000, 65536, 6, "T4"))
    occupy(state, "n0", free=(1000, 500, 1000, 0, 1000, 1000))
    assert where(place(state, policy, whole(3))) == ("n0", (0, 2, 4))


@pytest.mark.parametrize("policy", PAPER_POLICIES)
def test_cpu_only_pods_get_no_gpu(policy):
    state = cluster(("n0", 8000, 65536, 2, "T4"))
    assert where(place(state, policy, cpu_only(500))) == ("n0", ())


def test_random_draws_nothing_when_a_single_node_is_feasible():
    # Sec. 3.3: exactly one feasible node -> that node, no scoring and no PreScore draw.
    state = cluster(("small", 1000, 1024), ("big", 8000, 65536))
    rng = CountingInts(seed=1)
    assert where(place(state, "random", cpu_only(4000), rng=rng)) == ("big", ())
    assert rng.calls == []


def test_random_gpu_choice_draws_once_per_candidate_gpu():
    # Sec. 3.4 `random`: reservoir over GPUs with left >= g, rand.Intn(c) for the c-th.
    state = cluster(("n0", 8000, 65536, 4, "T4"))
    occupy(state, "n0", free=(1000, 200, 1000, 500))  # candidates for 400m: GPUs 0, 2, 3
    rng = CountingInts(seed=1)
    place(state, "random", frac(400), rng=rng)
    assert rng.calls == [1, 2, 3]


# --------------------------------------------------------------------------------------
# 01 Random
# --------------------------------------------------------------------------------------


def test_random_picks_only_feasible_nodes_and_in_time_every_one_of_them():
    state = cluster(
        ("n0", 8000, 65536, 2, "T4"),
        ("tiny", 500, 65536, 2, "T4"),  # too little CPU
        ("n2", 8000, 65536, 2, "T4"),
        ("cpu", 8000, 65536),  # no GPU
        ("n4", 8000, 65536, 2, "V100M16"),
    )
    p = placer(state, "random", rng=NumpyInts(seed=7))
    seen = Counter(where(p.place(f"p{i}", whole(1, cpu=1000)))[0] for i in range(300))
    assert set(seen) == {"n0", "n2", "n4"}
    assert min(seen.values()) > 50  # uniform: ~100 each


def test_random_puts_a_fraction_only_on_gpus_that_hold_it_and_on_each_of_them():
    state = cluster(("n0", 8000, 65536, 4, "T4"))
    occupy(state, "n0", free=(1000, 200, 1000, 500))
    p = placer(state, "random", rng=NumpyInts(seed=3))
    seen = Counter(where(p.place(f"p{i}", frac(400)))[1] for i in range(300))
    assert set(seen) == {(0,), (2,), (3,)}


def test_random_with_the_same_seed_makes_the_same_choices():
    state = cluster(*[(f"n{i}", 8000, 65536, 4, "T4") for i in range(6)])

    def choices() -> list:
        p = placer(state, "random", rng=NumpyInts(seed=11))
        return [where(p.place(f"p{i}", frac(300))) for i in range(20)]

    assert choices() == choices()


# --------------------------------------------------------------------------------------
# 02 DotProd: d = ((cpuLeft/128000)*(cpu/128000) + (totLeft/8000)*(g*n/8000)) / 2,
#             score = trunc(100 * (1 - d)); the smallest dot product wins.
# --------------------------------------------------------------------------------------


def test_dotprod_scores_are_the_truncated_normalised_dot_product():
    state = cluster(("big", 128000, 65536, 8, "T4"), ("half", 64000, 65536, 4, "T4"))
    request = whole(2, cpu=64000)
    # big:  d = (1.0*0.5 + (8000/8000)*(2000/8000)) / 2 = (0.5 + 0.25) / 2 = 0.375   -> trunc(62.5)  = 62
    # half: d = (0.5*0.5 + (4000/8000)*(2000/8000)) / 2 = (0.25 + 0.125) / 2 = 0.1875 -> trunc(81.25) = 81
    assert scores(state, "dotprod", request) == [62, 81]
    assert where(place(state, "dotprod", request)) == ("half", (0, 1))


def test_dotprod_for_cpu_only_pods_looks_at_cpu_alone():
    state = cluster(("a", 96000, 65536, 8, "G2"), ("b", 32000, 65536, 1, "T4"))
    occupy(state, "b", cpu=16000)  # b has 16000m left
    # a: d = (96000/128000)*(32000/128000)/2 = 0.75*0.25/2 = 0.09375 -> trunc(90.625) = 90
    # b: d = (16000/128000)*(32000/128000)/2 = 0.125*0.25/2 = 0.015625 -> trunc(98.4375) = 98
    # (the GPU term is 0 for a CPU-only pod, so b's idle GPU does not matter)
    assert scores(state, "dotprod", cpu_only(32000)) == [90, 0]  # b cannot hold 32000m: score 0
    assert scores(state, "dotprod", cpu_only(16000)) == [95, 99]
    # 16000: a: 0.75*0.125/2 = 0.046875 -> 95.3125 -> 95; b: 0.125*0.125/2 = 0.0078125 -> 99.21875 -> 99
    assert where(place(state, "dotprod", cpu_only(16000))) == ("b", ())


def test_dotprod_puts_a_fraction_on_the_tightest_gpu_of_the_chosen_node():
    state = cluster(("n0", 8000, 65536, 4, "T4"))
    occupy(state, "n0", free=(1000, 600, 350, 1000))
    assert where(place(state, "dotprod", frac(300))) == ("n0", (2,))


# --------------------------------------------------------------------------------------
# 03 GpuClustering: base = 25*(8000 - totLeft)//8000, + 75 / 50 / 25 / 0
# --------------------------------------------------------------------------------------


@pytest.fixture
def clustering_cluster():
    state = cluster(
        ("share", 8000, 65536, 4, "T4"),
        ("one-gpu", 8000, 65536, 4, "T4"),
        ("idle", 8000, 65536, 4, "T4"),
        ("mixed", 8000, 65536, 4, "T4"),
    )
    occupy(state, "share", free=(500, 1000, 1000, 1000))  # one sharing pod
    occupy(state, "one-gpu", free=(0, 1000, 1000, 1000))  # one 1-GPU pod
    occupy(state, "mixed", free=(500, 0, 1000, 1000))  # a sharing pod and a 1-GPU pod
    return state


def test_clustering_scores_follow_affinity_tags(clustering_cluster):
    state = clustering_cluster
    # share:   totLeft 3500, base 25*4500//8000 = 14; has share tag, only tag  -> 14 + 75 = 89
    # one-gpu: totLeft 3000, base 25*5000//8000 = 15; no share tag, not empty -> 15
    # idle:    totLeft 4000, base 25*4000//8000 = 12; no GPU pods at all      -> 12 + 25 = 37
    # mixed:   totLeft 2500, base 25*5500//8000 = 17; has share tag, 2 tags   -> 17 + 50 = 67
    assert scores(state, "clustering", frac(200)) == [89, 15, 37, 67]
    # For a 1-GPU pod the tag is `1-gpu`:
    # share 14 (other tag only), one-gpu 15 + 75 = 90, idle 37, mixed 17 + 50 = 67
    assert scores(state, "clustering", whole(1)) == [14, 90, 37, 67]
    # A 2-GPU pod: nobody has the `2-gpu` tag -> share 14, one-gpu 15, idle 37, mixed 17
    assert scores(state, "clustering", whole(2)) == [14, 15, 37, 17]


def test_clustering_co_locates_pods_of_the_same_shape(clustering_cluster):
    state = clustering_cluster
    assert where(place(state, "clustering", frac(200))) == ("share", (0,))
    assert where(place(state, "clustering", whole(1))) == ("one-gpu", (1,))
    assert where(place(state, "clustering", whole(2))) == ("idle", (0, 1))


def test_clustering_ignores_cpu_only_pods(clustering_cluster):
    state = clustering_cluster
    assert scores(state, "clustering", cpu_only(100)) == [0, 0, 0, 0]
    assert where(place(state, "clustering", cpu_only(100))) == ("share", ())


# --------------------------------------------------------------------------------------
# 04 GpuPacking: partly used GPU > partly used node > idle node
# --------------------------------------------------------------------------------------


@pytest.fixture
def packing_cluster():
    state = cluster(
        ("idle", 8000, 65536, 4, "T4"),
        ("used-node", 8000, 65536, 4, "T4"),
        ("used-gpu", 8000, 65536, 4, "T4"),
    )
    occupy(state, "used-node", free=(0, 1000, 1000, 1000))
    occupy(state, "used-gpu", free=(1000, 1000, 500, 1000))
    return state


def test_packing_scores_each_case_as_the_spec_says(packing_cluster):
    # idle (case 3, free == G == 4):              max(33 - 4, 4) = 29
    # used-node (case 2): sorted left [0,1000,1000,1000], takes one 1000 -> u = 1: max(50 - 1, 33) = 49
    # used-gpu (case 1): sorted [500,1000,1000,1000], takes the 500 -> u = 0:
    #                    max(100 - (500*100//1000)//10, 50) = max(100 - 50//10, 50) = 95
    assert scores(packing_cluster, "packing", frac(300)) == [29, 49, 95]


def test_packing_prefers_a_partly_used_gpu_then_a_partly_used_node_then_an_idle_node(packing_cluster):
    state = packing_cluster
    assert where(place(state, "packing", frac(300))) == ("used-gpu", (2,))
    # The 500m GPU cannot hold 600m: used-gpu now looks like used-node (case 2, 49) -> tie, lowest index.
    assert where(place(state, "packing", frac(600))) == ("used-node", (1,))
    # Once only idle nodes remain, the idle node wins.
    assert where(place(state, "packing", whole(4))) == ("idle", (0, 1, 2, 3))


def test_packing_case_one_sums_the_taken_gpus_and_case_three_prefers_small_idle_nodes():
    state = cluster(
        ("eight", 96000, 65536, 8, "G2"),
        ("two", 96000, 65536, 2, "G2"),
        ("worn", 96000, 65536, 2, "G2"),
    )
    occupy(state, "worn", free=(250, 800))
    # eight: case 3: max(33 - 8, 8) = 25;   two: case 3: max(33 - 2, 2) = 31
    # worn, 200m: sorted [250, 800] takes 250 (u=0): 100 - (250*100//1000)//10 = 100 - 25//10 = 98
    assert scores(state, "packing", frac(200)) == [25, 31, 98]
    # worn, 300m: takes 800: 100 - (800*100//1000)//10 = 100 - 8 = 92
    assert scores(state, "packing", frac(300)) == [25, 31, 92]
    assert where(place(state, "packing", frac(300))) == ("worn", (1,))


def test_packing_ignores_cpu_only_pods(packing_cluster):
    assert scores(packing_cluster, "packing", cpu_only()) == [0, 0, 0]


# --------------------------------------------------------------------------------------
# 05 BestFit: s = ((cpuLeft - cpu)/128000)*0.5 + ((totLeft - g*n)/8000)*0.5,
#             raw = trunc((1 - s)*100), then min-max normalised.
# --------------------------------------------------------------------------------------


@pytest.fixture
def bestfit_cluster():
    return cluster(
        ("mid", 32000, 65536, 4, "T4"),
        ("small", 16000, 65536, 2, "T4"),
        ("large", 64000, 65536, 8, "T4"),
    )


def test_bestfit_raw_scores_measure_what_is_left_after_placement(bestfit_cluster):
    request = whole(1, cpu=4000)
    # mid:   (28000/128000)*0.5 + (3000/8000)*0.5 = 0.109375 + 0.1875 = 0.296875 -> trunc(70.3125) = 70
    # small: (12000/128000)*0.5 + (1000/8000)*0.5 = 0.046875 + 0.0625 = 0.109375 -> trunc(89.0625) = 89
    # large: (60000/128000)*0.5 + (7000/8000)*0.5 = 0.234375 + 0.4375 = 0.671875 -> trunc(32.8125) = 32
    assert scores(bestfit_cluster, "bestfit", request) == [70, 89, 32]


def test_bestfit_normalises_min_max_over_the_feasible_nodes(bestfit_cluster):
    p = placer(bestfit_cluster, "bestfit").policy
    # lo 32, hi 89: mid (70-32)*100//57 = 3800//57 = 66, small 100, large 0
    assert p.normalize(np.array([70, 89, 32])).tolist() == [66, 100, 0]
    assert p.normalize(np.array([40, 40])).tolist() == [0, 0]


def test_bestfit_picks_the_node_with_least_left_over(bestfit_cluster):
    assert where(place(bestfit_cluster, "bestfit", whole(1, cpu=4000))) == ("small", (0,))
    # small cannot hold 3 GPUs; mid is the tighter of the rest.
    assert where(place(bestfit_cluster, "bestfit", whole(3, cpu=4000))) == ("mid", (0, 1, 2))


def test_bestfit_takes_the_tightest_gpu_for_a_fraction():
    state = cluster(("n0", 8000, 65536, 4, "T4"))
    occupy(state, "n0", free=(1000, 700, 300, 400))
    assert where(place(state, "bestfit", frac(300))) == ("n0", (2,))
    assert where(place(state, "bestfit", frac(350))) == ("n0", (3,))


# --------------------------------------------------------------------------------------
# 06 FGD: score = trunc(100 * sigmoid((F(node) - F(node')) / 1000))
# --------------------------------------------------------------------------------------


def test_fgd_puts_fraction_on_gpu_that_keeps_whole_gpus_free():
    # Target: only 1-GPU tasks, so F(node) = free milli on partly used GPUs.
    target = one_type_target(whole(1))
    state = cluster(("idle", 8000, 65536, 4, "T4"), ("half", 8000, 65536, 4, "T4"))
    occupy(state, "half", free=(500, 1000, 1000, 1000))
    # idle, any GPU: F 0 -> 500, dF = +500: trunc(100*sig(-0.5)) = trunc(37.75) = 37
    # half, GPU 0:   F 500 -> 0, dF = -500: trunc(100*sig(0.5)) = trunc(62.25) = 62
    # half, GPU 1:   F 500 -> 1000:         37
    assert scores(state, "fgd", frac(500), target=target) == [37, 62]
    assert where(place(state, "fgd", frac(500), target=target)) == ("half", (0,))


def test_fgd_keeps_a_gpu_usable_for_the_typical_task_where_bestfit_takes_the_tightest():
    # Target: only 600m fractions. GPU0 has 700m free, GPU1 is idle; a 200m pod arrives.
    target = one_type_target(frac(600))
    state = cluster(("n0", 8000, 65536, 2, "T4"))
    occupy(state, "n0", free=(700, 1000))
    # GPU0: 700 -> 500 < 600 becomes fragment: F 0 -> 500, score 37
    # GPU1: 1000 -> 800, still fits a 600 task:  F 0 -> 0,   score 50
    assert where(place(state, "fgd", frac(200), target=target)) == ("n0", (1,))
    assert where(place(state, "bestfit", frac(200))) == ("n0", (0,))


@pytest.fixture
def mixed_target():
    # Two 1-GPU pods, one 500m fraction, one CPU-only pod -> weights 0.5, 0.25, 0.25 (Sec. 3.7).
    requests = [whole(1, cpu=2000), whole(1, cpu=2000), cpu_only(4000), frac(500, cpu=1000)]
    return TargetWorkload.from_requests(requests)


def test_fgd_node_choice_matches_hand_computed_fragmentation_delta(mixed_target):
    target = mixed_target
    assert target.types == ((2000, 1000, 1, ()), (4000, 0, 0, ()), (1000, 500, 1, ()))
    assert target.weights == (0.5, 0.25, 0.25)
    state = cluster(("idle", 8000, 65536, 2, "T4"), ("shared", 8000, 65536, 2, "T4"))
    occupy(state, "shared", free=(500, 1000), cpu=1000)  # 7000m CPU left
    # F = 0.5*F_whole + 0.25*F_cpu + 0.25*F_frac, where (Sec. 3.6)
    #   F_whole = free milli on GPUs with < 1000 left (all of it if no GPU is idle),
    #   F_cpu   = all free GPU milli (CPU-only tasks use no GPU),
    #   F_frac  = free milli on GPUs with < 500 left.
    # idle   [1000, 1000]: 0.5*0 + 0.25*2000 + 0.25*0 = 500
    # shared [500, 1000]:  0.5*500 + 0.25*1500 + 0.25*0 = 625
    assert node_frag(target, state, "idle") == 500
    assert node_frag(target, state, "shared") == 625
    # A 500m, 1000m-CPU pod:
    # idle -> [500, 1000] (either GPU): F = 625, dF = +125: trunc(100*sig(-0.125)) = trunc(46.88) = 46
    # shared GPU0 -> [0, 1000]:   F = 0.5*0 + 0.25*1000 + 0.25*0 = 250, dF = -375:
    #                             trunc(100*sig(0.375)) = trunc(59.27) = 59
    # shared GPU1 -> [500, 500]:  no idle GPU for F_whole: 0.5*1000 + 0.25*1000 + 0 = 750, dF = +125: 46
    assert scores(state, "fgd", frac(500, cpu=1000), target=target) == [46, 59]
    assert where(place(state, "fgd", frac(500, cpu=1000), target=target)) == ("shared", (0,))


def test_fgd_whole_gpu_pod_goes_where_it_adds_the_least_fragmentation(mixed_target):
    state = cluster(("idle", 8000, 65536, 2, "T4"), ("shared", 8000, 65536, 2, "T4"))
    occupy(state, "shared", free=(500, 1000), cpu=1000)
    # A 1-GPU, 2000m-CPU pod:
    # idle -> [0, 1000], cpu 6000:  F = 0 + 0.25*1000 + 0 = 250;     dF = 250 - 500 = -250: trunc(56.22) = 56
    # shared -> [500, 0], cpu 5000: F = 0.5*500 + 0.25*500 + 0 = 375; dF = 375 - 625 = -250: 56
    # A tie: the lowest index wins.
    assert scores(state, "fgd", whole(1, cpu=2000), target=mixed_target) == [56, 56]
    assert where(place(state, "fgd", whole(1, cpu=2000), target=mixed_target)) == ("idle", (0,))


def test_fgd_breaks_ties_between_gpus_in_index_order():
    target = one_type_target(whole(1))
    state = cluster(("n0", 8000, 65536, 4, "T4"))
    occupy(state, "n0", free=(1000, 300, 1000, 300))
    # GPU1 and GPU3 both drop F by 200 (score 54); GPU1 is first.
    assert where(place(state, "fgd", frac(300), target=target)) == ("n0", (1,))


def test_fgd_needs_a_target_workload():
    state = cluster(("n0", 8000, 65536, 1, "T4"))
    with pytest.raises(ValueError, match="target workload"):
        Placer(state, create_policy("fgd", PolicyContext(rng=NumpyInts(0))))


def test_fgd_quantised_gain_is_fifty_at_no_change_and_follows_the_sigmoid():
    before = np.array([0.0, 0.0, 1000.0, 0.0])
    after = np.array([0.0, 1000.0, 0.0, 8000.0])
    # dF 0 -> 50; +1000 -> trunc(26.89) = 26; -1000 -> trunc(73.11) = 73; +8000 -> trunc(0.0335) = 0
    assert quantised_gain(before, after).tolist() == [50, 26, 73, 0]


def test_fgd_quantised_gain_multiplies_the_sigmoid_by_100_like_the_artifact():
    # Spec Sec. 3.5.6 / the artifact: int64(sigmoid(x) * 100) with sigmoid = 1/(1+exp(-x)).
    # 100/(1+e) and (1/(1+e))*100 differ by one ulp near integer scores; at this dF the
    # spec's form gives 13 and the other gives 14.
    d_frag = 1815.2899666382492
    x = -d_frag / 1000.0
    expected = math.trunc((1.0 / (1.0 + math.exp(-x))) * 100.0)
    assert expected == 13
    assert quantised_gain(np.array([0.0]), np.array([d_frag])).tolist() == [expected]


# --------------------------------------------------------------------------------------
# The filter's explanation (kube-scheduler's FitError message)
# --------------------------------------------------------------------------------------


def test_unschedulable_message_counts_nodes_per_reason_like_kube_scheduler():
    state = cluster(
        ("low-cpu", 1000, 65536, 2, "T4"),
        ("one-gpu", 8000, 65536, 1, "T4"),
        ("busy", 8000, 65536, 2, "T4"),
    )
    occupy(state, "busy", free=(1000, 0))
    decision = place(state, "bestfit", whole(2, cpu=2000))
    assert isinstance(decision, Unschedulable)
    assert decision.message == "0/3 nodes are available: 1 Insufficient cpu, 2 Insufficient nvidia.com/gpu."


def test_unschedulable_reasons_sort_as_plain_strings_so_10_comes_before_2():
    state = cluster(
        *[(f"m{i}", 8000, 512) for i in range(10)],
        ("c0", 500, 65536),
        ("c1", 500, 65536),
    )
    message = explain(state, cpu_only(1000, mem=1024)).message
    assert message == "0/12 nodes are available: 10 Insufficient memory, 2 Insufficient cpu."


def test_unschedulable_names_gpu_model_mismatch_and_cpu_only_nodes():
    state = cluster(("cpu", 8000, 65536), ("t4", 8000, 65536, 2, "T4"), ("v100", 8000, 65536, 2, "V100M16"))
    message = explain(state, whole(1, models=("A10",))).message
    assert message == (
        "0/3 nodes are available: 1 node(s) had no GPU, 2 node(s) didn't match the requested GPU model."
    )


def test_a_node_rejecting_for_several_reasons_counts_under_each():
    state = cluster(("n0", 1000, 512, 1, "T4"), ("n1", 8000, 65536, 1, "T4"))
    occupy(state, "n1", free=(100,))
    message = explain(state, frac(200, cpu=2000, mem=1024)).message
    assert message == (
        "0/2 nodes are available: 1 Insufficient GPU share (no GPU with enough free milli-GPU), "
        "1 Insufficient cpu, 1 Insufficient memory."
    )


def test_unschedulable_reports_full_nodes_as_too_many_pods():
    state = cluster(("n0", 8000, 65536, 0, "", 1), ("n1", 8000, 65536, 0, "", 1))
    put(state, "n0", cpu_only(10))
    put(state, "n1", cpu_only(10))
    assert explain(state, cpu_only(10)).message == "0/2 nodes are available: 2 Too many pods."


def test_placer_returns_the_explanation_when_nothing_fits():
    state = cluster(("n0", 8000, 65536, 1, "T4"))
    decision = place(state, "fgd", whole(2))
    assert isinstance(decision, Unschedulable)
    assert decision.node_count == 1
    assert decision.reasons == Counter({"Insufficient nvidia.com/gpu": 1})


# --------------------------------------------------------------------------------------
# TargetWorkload.from_requests (Sec. 3.7)
# --------------------------------------------------------------------------------------


def test_target_keeps_the_most_popular_types_until_the_coverage_is_reached():
    a, b, c, d = cpu_only(1000), frac(500), whole(1), whole(2)
    target = TargetWorkload.from_requests([a] * 60 + [b] * 30 + [c] * 6 + [d] * 4)
    # cumulative 60, 90, 96 >= 0.95*100: d is dropped; weights (n/100)/0.96
    assert target.types == (a.shape, b.shape, c.shape)
    assert target.weights == pytest.approx((0.625, 0.3125, 0.0625))
    assert math.fsum(target.weights) == pytest.approx(1.0)


def test_target_stops_as_soon_as_the_cumulative_count_equals_the_coverage():
    a, b = cpu_only(1000), frac(500)
    target = TargetWorkload.from_requests([a] * 19 + [b])  # 19 >= 0.95 * 20
    assert target.types == (a.shape,)
    assert target.weights == (1.0,)


def test_target_orders_equal_counts_by_descending_cpu_gpu_milli_count_and_model_string():
    requests = [
        frac(300, cpu=1000),
        whole(2, cpu=1000),
        whole(1, cpu=1000, models=("A10",)),
        whole(1, cpu=1000, models=("V100M16", "V100M32")),
        whole(1, cpu=1000),
        cpu_only(8000),
        frac(700, cpu=1000),
    ]
    target = TargetWorkload.from_requests(requests, coverage=1.0)
    assert target.types == (
        (8000, 0, 0, ()),  # highest CPU first
        (1000, 1000, 2, ()),  # then highest milli, then most GPUs
        (1000, 1000, 1, ("V100M16", "V100M32")),  # then model string, descending
        (1000, 1000, 1, ("A10",)),
        (1000, 1000, 1, ()),  # "" sorts last
        (1000, 700, 1, ()),
        (1000, 300, 1, ()),
    )
    assert target.weights == tuple([1 / 7] * 7)


def test_target_treats_distinct_model_lists_as_distinct_types():
    one = whole(1, models=("V100M16", "V100M32"))
    dup = whole(1, models=("V100M16", "V100M32", "V100M32"))
    target = TargetWorkload.from_requests([one, dup, dup], coverage=1.0)
    assert target.types == (dup.shape, one.shape)
    assert target.weights == pytest.approx((2 / 3, 1 / 3))


def test_target_weights_sum_to_one():
    cpu_pods = [cpu_only(1000 * (i % 7 + 1)) for i in range(50)]
    gpu_pods = [frac(100 * (i % 9 + 1)) for i in range(33)]
    target = TargetWorkload.from_requests(cpu_pods + gpu_pods)
    assert len(target.types) < 16  # the 95% cut dropped something
    assert math.fsum(target.weights) == pytest.approx(1.0, rel=1e-12)
    assert all(w > 0 for w in target.weights)


def test_target_from_no_requests_is_an_error():
    with pytest.raises(ValueError):
        TargetWorkload.from_requests([])


# --------------------------------------------------------------------------------------
# Fragmentation of one node for one task type (Sec. 3.6)
# --------------------------------------------------------------------------------------


@pytest.fixture
def four_t4():
    state = cluster(("n0", 8000, 65536, 4, "T4"), ("cpu", 8000, 65536), ("a10", 8000, 65536, 1, "A10"))
    occupy(state, "n0", free=(1000, 300, 0, 600))  # 1900 idle
    return state


@pytest.mark.parametrize("cpu", [1000, 64000], ids=["cpu-fits", "cpu-short"])
def test_a_cpu_only_task_counts_all_idle_gpu_as_fragment(four_t4, cpu):
    assert node_frag(one_type_target(cpu_only(cpu)), four_t4, "n0") == 1900


def test_a_task_that_fits_counts_only_the_gpus_too_small_for_it(four_t4):
    # 500m: fragment = GPUs with < 500 left = 300 + 0
    assert node_frag(one_type_target(frac(500)), four_t4, "n0") == 300
    # 700m: only GPU0 fits; fragment = 300 + 0 + 600
    assert node_frag(one_type_target(frac(700)), four_t4, "n0") == 900
    # 1 whole GPU: fragment = 300 + 600
    assert node_frag(one_type_target(whole(1)), four_t4, "n0") == 900


def test_a_task_that_cannot_run_counts_all_idle_gpu(four_t4):
    assert node_frag(one_type_target(whole(2)), four_t4, "n0") == 1900  # only one idle GPU
    assert node_frag(one_type_target(frac(500, cpu=9000)), four_t4, "n0") == 1900  # CPU short


def test_a_model_the_task_may_not_use_counts_all_idle_gpu(four_t4):
    assert node_frag(one_type_target(frac(100, models=("A10",))), four_t4, "n0") == 1900
    assert node_frag(one_type_target(frac(100, models=("A10", "T4"))), four_t4, "n0") == 0
    assert node_frag(one_type_target(frac(100, models=("A10",))), four_t4, "a10") == 0


def test_a_cpu_only_node_has_no_fragment(four_t4):
    for request in [cpu_only(1000), frac(500), whole(1, models=("T4",))]:
        assert node_frag(one_type_target(request), four_t4, "cpu") == 0


def test_fragmentation_is_the_weighted_sum_over_types_and_idle_is_all_free_gpu(four_t4):
    target = TargetWorkload(
        types=(cpu_only(1000).shape, frac(500).shape, whole(2).shape), weights=(0.25, 0.5, 0.25)
    )
    fragmentation = Fragmentation(target, four_t4)
    frag, idle = fragmentation.of_nodes(four_t4, np.array([0]))
    # 0.25*1900 + 0.5*300 + 0.25*1900 = 475 + 150 + 475 = 1100
    assert frag.tolist() == [1100.0]
    assert idle.tolist() == [1900.0]


def test_default_target_is_one_whole_gpu():
    assert DEFAULT_TARGET.types == (Request(1000, 0, 1, 1000).shape,)
