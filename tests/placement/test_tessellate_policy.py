"""The `tessellate` policy: FGD's integer score first, ties settled by hostable capacity."""

from __future__ import annotations

import numpy as np
import pytest
from tessellate.placement import (
    Assignment,
    ClusterState,
    NumpyInts,
    Placer,
    PolicyContext,
    TargetWorkload,
    create_policy,
)
from tessellate.placement.policies.tessellate import _PRIMARY, QUANTUM, HostableCapacity

from tests.builders import cluster, cpu_only, frac, occupy, one_type_target, placer, scores, where, whole

MIX = TargetWorkload(
    types=(
        whole(1, cpu=6000).shape,
        whole(2, cpu=12000).shape,
        frac(500, cpu=2000).shape,
        frac(250, cpu=1000).shape,
        cpu_only(4000).shape,
    ),
    weights=(0.4, 0.1, 0.25, 0.15, 0.1),
)


def random_cluster(rng: np.random.Generator, nodes: int = 12):
    shapes = [(16000, 65536, 2, "T4"), (64000, 262144, 8, "G2"), (32000, 131072, 4, "V100"), (8000, 32768)]
    return cluster(*((f"n{i}", *shapes[rng.integers(len(shapes))]) for i in range(nodes)))


def random_request(rng: np.random.Generator):
    kind = rng.integers(4)
    cpu = int(rng.integers(1, 16)) * 1000
    if kind == 0:
        return cpu_only(cpu)
    if kind == 1:
        return frac(int(rng.integers(1, 100)) * 10, cpu=cpu)
    if kind == 2:
        return whole(int(rng.choice([1, 2, 4])), cpu=cpu)
    return whole(1, cpu=cpu, models=("T4",))


def fill(
    state: ClusterState, policy: str, requests, target: TargetWorkload = MIX, prefix: str = "pod"
) -> list[tuple[str, tuple[int, ...]] | None]:
    """Place and commit each request in turn; None where it did not fit anywhere."""
    p = placer(state, policy, target=target)
    out: list[tuple[str, tuple[int, ...]] | None] = []
    for i, request in enumerate(requests):
        fits_somewhere = bool(p.fits(request).any())
        decision = p.place(f"{prefix}-{i}", request)
        assert isinstance(decision, Assignment) == fits_somewhere
        if isinstance(decision, Assignment):
            state.allocate(decision)  # refuses (raises) an infeasible node or GPU
            out.append(where(decision))
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_only_feasible_placements_and_placed_whenever_possible(seed: int) -> None:
    rng = np.random.default_rng(seed)
    state = random_cluster(rng)
    placed = fill(state, "tessellate", [random_request(rng) for _ in range(300)])
    assert any(p is not None for p in placed) and any(p is None for p in placed)
    assert (state.cpu_left >= 0).all() and (state.gpu_left >= 0).all()


def test_deterministic() -> None:
    requests = [random_request(np.random.default_rng(7)) for _ in range(200)]
    runs = [fill(random_cluster(np.random.default_rng(3)), "tessellate", requests) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("seed", range(4))
def test_fgd_integer_score_comes_first(seed: int) -> None:
    """Wherever FGD's integer scores differ, tessellate ranks the nodes the same way."""
    rng = np.random.default_rng(seed)
    state = random_cluster(rng, nodes=20)
    fill(state, "fgd", [random_request(rng) for _ in range(60)])
    for _ in range(20):
        request = random_request(rng)
        feasible = np.flatnonzero(placer(state, "fgd", target=MIX).fits(request))
        if feasible.size == 0:
            continue
        fgd = placer(state, "fgd", target=MIX).policy.score(state, request, feasible)
        ours = placer(state, "tessellate", target=MIX).policy.score(state, request, feasible)
        assert ((ours + _PRIMARY // 2) // _PRIMARY == fgd).all()


def test_fgd_tie_broken_towards_the_node_that_keeps_cpu_for_its_gpus() -> None:
    """Both nodes still fit one more typical pod after this one, so FGD's F (does one fit?)
    does not change on either: FGD ties and takes n0, whose 16 cores then feed only 2 of its
    3 free GPUs. Tessellate sees that n0 would host 2 more typical pods, n1 3 more."""
    state = cluster(("n0", 16000, 65536, 4, "T4"), ("n1", 64000, 262144, 4, "T4"))
    typical = whole(1, cpu=4000)
    target = one_type_target(typical)
    pod = whole(1, cpu=6000)
    assert len(set(scores(state, "fgd", pod, target=target))) == 1
    assert where(placer(state, "fgd", target=target).place("p", pod))[0] == "n0"
    assert where(placer(state, "tessellate", target=target).place("p", pod))[0] == "n1"

    def typical_pods_hosted_after(policy: str) -> int:
        s = cluster(("n0", 16000, 65536, 4, "T4"), ("n1", 64000, 262144, 4, "T4"))
        fill(s, policy, [pod], target)
        return sum(p is not None for p in fill(s, policy, [typical] * 10, target, "typical"))

    assert typical_pods_hosted_after("fgd") == 6
    assert typical_pods_hosted_after("tessellate") == 7


def test_fraction_goes_where_fgd_puts_it_even_where_fgd_ties() -> None:
    """A 100 pod on GPU0 (900 free) or GPU1 (1000 free), 300-milli pods typical: FGD's F does
    not move either way, FGD ties and takes GPU0 (800 + 1000 then host 2 + 3 more 300s,
    where GPU1 would leave 3 + 3). Tessellate still takes GPU0: fractions follow FGD."""
    typical = frac(300, cpu=0)
    target = one_type_target(typical)
    pod = frac(100, cpu=0)
    state = cluster(("n0", 64000, 65536, 2, "T4"))
    occupy(state, "n0", free=(900, 1000))
    assert where(placer(state, "fgd", target=target).place("p", pod)) == ("n0", (0,))
    assert where(placer(state, "tessellate", target=target).place("p", pod)) == ("n0", (0,))


@pytest.mark.parametrize("seed", range(3))
def test_fraction_placements_equal_fgds(seed: int) -> None:
    """On a stream of fractions alone both policies make the same choice, node and GPU."""
    rng = np.random.default_rng(seed)
    requests = [frac(int(rng.integers(1, 100)) * 10, cpu=int(rng.integers(1, 16)) * 1000) for _ in range(150)]
    runs = {p: fill(random_cluster(np.random.default_rng(seed)), p, requests) for p in ("fgd", "tessellate")}
    assert runs["fgd"] == runs["tessellate"]
    assert any(r is None for r in runs["fgd"]) and any(r is not None for r in runs["fgd"])


def test_value_counts_cpu_and_gpu_remainders() -> None:
    state = cluster(("g", 16000, 65536, 4, "T4"), ("v", 64000, 65536, 2, "V100"))
    workload = TargetWorkload(
        types=(whole(1, cpu=6000).shape, frac(300, cpu=1000, models=("V100",)).shape), weights=(0.5, 0.5)
    )
    capacity = HostableCapacity(workload, state)
    value = capacity.value(state.cpu_left, state.gpu_left, state.model_id)
    # g: 4 free GPUs but CPU for 2 whole-GPU pods; no V100 for the fraction type.
    # v: 2 whole-GPU pods; 3 + 3 copies of the 300 fraction (100 left on each GPU).
    assert value.tolist() == pytest.approx([0.5 * 2 * 1000, 0.5 * 2 * 1000 + 0.5 * 6 * 300])


def test_uses_the_expected_workload_when_given() -> None:
    state = cluster(("n0", 16000, 65536, 4, "T4"))
    rare = TargetWorkload(types=(whole(4, cpu=16000).shape,), weights=(1.0,))
    policy = create_policy(
        "tessellate", PolicyContext(rng=NumpyInts(0), target=one_type_target(whole(1)), expected=rare)
    )
    Placer(state, policy)
    assert policy.capacity.value(state.cpu_left, state.gpu_left, state.model_id).tolist() == [4000.0]
    with pytest.raises(ValueError, match="target workload"):
        Placer(state, create_policy("tessellate", PolicyContext(rng=NumpyInts(0))))


@pytest.mark.parametrize(("rare_weight", "chosen"), [(0.02, "n0"), (0.1, "n1")])
def test_value_losses_closer_than_a_quantum_tie_and_keep_fgds_node(rare_weight: float, chosen: str) -> None:
    """FGD ties (its one typical type fits on both nodes either way) and takes n0. The expected
    workload adds a rarer 4-core type: the 6-core pod costs n0 two copies of it, n1 one. At
    weight 0.1 that is 100 milli-GPU of value apart, over `QUANTUM`, and n1 wins; at 0.02 the
    losses (1020 and 1000 milli) round to the same 50-milli step, so FGD's choice stands."""
    typical = whole(1, cpu=1000)
    expected = TargetWorkload(
        types=(typical.shape, whole(1, cpu=4000).shape), weights=(1 - rare_weight, rare_weight)
    )
    pod = whole(1, cpu=6000)

    def decide(policy: str) -> str:
        state = cluster(("n0", 16000, 65536, 4, "T4"), ("n1", 64000, 262144, 4, "T4"))
        context = PolicyContext(rng=NumpyInts(0), target=one_type_target(typical), expected=expected)
        return where(Placer(state, create_policy(policy, context)).place("p", pod))[0]

    assert QUANTUM == 50
    assert decide("fgd") == "n0"
    assert decide("tessellate") == chosen
