"""Invariants of the cluster state and the placement cycle, checked with hypothesis.

Random clusters (1-6 nodes, 0-8 GPUs of random models) receive random request
sequences through `Placer` (all six policies) and `ClusterState.allocate`,
interleaved with releases. Slow, obviously-correct references written from
docs/fgd-protocol.md Sec. 3.2 (filter) and 3.6-3.7 (fragmentation, FGD score)
are compared with the vectorised code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import cluster, cpu_only, frac, occupy, placer, whole
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tessellate.placement import (
    MILLI_PER_GPU,
    PAPER_POLICIES,
    Assignment,
    ClusterState,
    Fragmentation,
    NodeSpec,
    NumpyInts,
    OverCommitError,
    Placer,
    PolicyContext,
    Request,
    TargetWorkload,
    Unschedulable,
    create_policy,
)
from tessellate.placement.fit import feasible_mask

MODELS = ("T4", "V100M16", "A10")
REQUESTABLE_MODELS = (*MODELS, "P100", "")
"""What requests may name: cluster models, one no node has, and a blank segment."""

DETERMINISTIC = [p for p in PAPER_POLICIES if p != "random"]

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------


@st.composite
def node_specs(draw, name: str) -> NodeSpec:
    gpus = draw(st.integers(0, 8))
    return NodeSpec(
        name=name,
        cpu_milli=draw(st.sampled_from([0, 1000, 4000, 8000, 32000, 96000])),
        memory_mib=draw(st.sampled_from([0, 1024, 8192, 65536])),
        gpu_count=gpus,
        gpu_model=draw(st.sampled_from(MODELS)) if gpus else "",
        max_pods=draw(st.sampled_from([1, 3, 1001])),
    )


@st.composite
def clusters(draw) -> ClusterState:
    n = draw(st.integers(1, 6))
    return ClusterState([draw(node_specs(f"n{i}")) for i in range(n)])


@st.composite
def roomy_clusters(draw) -> ClusterState:
    """2-6 GPU nodes with plenty of CPU, memory and pod slots: many nodes get scored."""
    n = draw(st.integers(2, 6))
    nodes = []
    for i in range(n):
        nodes.append(
            NodeSpec(
                f"n{i}",
                cpu_milli=draw(st.sampled_from([16000, 32000, 96000])),
                memory_mib=65536,
                gpu_count=draw(st.integers(1, 8)),
                gpu_model=draw(st.sampled_from(MODELS)),
            )
        )
    return ClusterState(nodes)


cpu_milli = st.sampled_from([0, 100, 500, 1000, 2000, 4000, 8000, 16000])
memory_mib = st.sampled_from([0, 256, 1024, 4096, 16384])
model_lists = st.one_of(
    st.just(()), st.lists(st.sampled_from(REQUESTABLE_MODELS), min_size=1, max_size=3).map(tuple)
)
gpu_fractions = st.one_of(st.sampled_from([100, 250, 300, 500, 600, 750]), st.integers(1, 999))

requests = st.one_of(
    st.builds(Request, cpu_milli=cpu_milli, memory_mib=memory_mib),
    st.builds(
        Request,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_count=st.just(1),
        gpu_milli=gpu_fractions,
        gpu_models=model_lists,
    ),
    st.builds(
        Request,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_count=st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(1, 8)),
        gpu_milli=st.just(MILLI_PER_GPU),
        gpu_models=model_lists,
    ),
)


close_relatives = st.builds(
    Request,
    cpu_milli=st.just(1000),
    gpu_count=st.sampled_from([1, 2]),
    gpu_milli=st.just(MILLI_PER_GPU),
    gpu_models=st.sampled_from([(), ("T4",), ("T4", "A10")]),
)
"""Shapes that differ only in GPU count or models (they must never share cached scores)."""


@st.composite
def operations(draw) -> list[tuple[str, Request | int]]:
    """Steps ("place" | "place-then-undo", request) or ("release", which live pod).

    Requests come from a small pool of shapes, as in real traces, so that the
    score cache is reused between pods of the same shape.
    """
    pool = draw(st.lists(st.one_of(requests, close_relatives), min_size=1, max_size=4))
    kinds = st.sampled_from(["place", "place", "place", "place-then-undo", "release"])
    steps = draw(st.lists(st.tuples(kinds, st.integers(0, 10_000)), min_size=1, max_size=24))
    return [(kind, i if kind == "release" else pool[i % len(pool)]) for kind, i in steps]


def target_for(ops) -> TargetWorkload:
    shapes = [arg for kind, arg in ops if kind != "release"] or [cpu_only()]
    return TargetWorkload.from_requests(shapes)


# --------------------------------------------------------------------------------------
# References written from the spec
# --------------------------------------------------------------------------------------


def accessible(models: tuple[str, ...], node_model: str) -> bool:
    """Sec. 1.2: no (non-blank) constraint -> any; a CPU node matches no constraint."""
    wanted = [m for m in models if m]
    if not wanted:
        return True
    if not node_model:
        return False
    return node_model in wanted


def reference_feasible(state: ClusterState, request: Request) -> list[bool]:
    """Sec. 3.2, one node at a time."""
    result = []
    for i, node in enumerate(state.nodes):
        ok = (
            state.cpu_left[i] >= request.cpu_milli
            and state.mem_left[i] >= request.memory_mib
            and state.pod_count[i] + 1 <= node.max_pods
        )
        if ok and request.gpu_count:
            left = [int(x) for x in state.gpu_left[i, : node.gpu_count]]
            g, n = request.gpu_milli, request.gpu_count
            if node.gpu_count < 1 or not accessible(request.gpu_models, node.gpu_model):
                ok = False
            elif n == 1:
                ok = any(x >= g for x in left)
            else:
                counted = 0  # scan in index order, a GPU counts while its remainder holds g
                for x in left:
                    while x >= g and counted < n:
                        counted += 1
                        x -= g
                ok = counted >= n
        result.append(bool(ok))
    return result


def reference_fragmentation(
    target: TargetWorkload, cpu_left: int, gpu_left: list[int], node_model: str, replicas: int = 1
) -> tuple[float, float]:
    """Sec. 3.6-3.7: (F, idle) of one node, seven accumulators in the spec's order.

    On a time-sliced node (replicas > 1) a one-GPU type needs one slice and the
    other GPU types never fit.
    """
    acc = {"q1": 0.0, "q2": 0.0, "q3": 0.0, "q4": 0.0, "xl": 0.0, "xr": 0.0, "no_access": 0.0}
    tot = sum(gpu_left)
    for (cpu, g, n, models), w in zip(target.types, target.weights, strict=True):
        if g == 0:
            acc["xl" if cpu_left >= cpu else "xr"] += w * tot
            continue
        if not accessible(models, node_model):
            acc["no_access"] += w * tot
            continue
        sliced_away = replicas > 1 and (n, g) != (1, 1000)
        if replicas > 1 and not sliced_away:
            g = 1000 // replicas
        gpu_fit = not sliced_away and sum(1 for x in gpu_left if x >= g) >= n
        cpu_fit = cpu_left >= cpu
        if gpu_fit and cpu_fit:
            frag_m = sum(x for x in gpu_left if x < g)
            acc["q2"] += w * frag_m
            acc["q3"] += w * (tot - frag_m)
        elif gpu_fit:
            acc["q4"] += w * tot
        elif cpu_fit:
            acc["q2"] += w * tot
        else:
            acc["q1"] += w * tot
    frag = acc["q1"] + acc["q2"] + acc["q4"] + acc["xl"] + acc["xr"] + acc["no_access"]
    idle = sum(acc.values())
    return frag, idle


def reference_fgd(
    target: TargetWorkload, state: ClusterState, node: int, request: Request
) -> tuple[int, tuple[int, ...]]:
    """Sec. 3.5.6: (score, GPU ids) of FGD for one feasible node."""
    spec = state.nodes[node]
    cpu = int(state.cpu_left[node])
    left = [int(x) for x in state.gpu_left[node, : spec.gpu_count]]

    def frag(c: int, gl: list[int]) -> float:
        return reference_fragmentation(target, c, gl, spec.gpu_model, spec.gpu_replicas)[0]

    def score(before: float, after: float) -> int:
        sigmoid = 1.0 / (1.0 + math.exp(-((before - after) / 1000)))
        return math.trunc(sigmoid * 100)

    before = frag(cpu, left)
    if request.is_fraction:
        best, chosen = -1, -1
        for i, x in enumerate(left):
            if x >= request.gpu_milli:
                after = list(left)
                after[i] -= request.gpu_milli
                s = score(before, frag(cpu - request.cpu_milli, after))
                if s > best:
                    best, chosen = s, i
        return best, (chosen,)
    taken = [i for i, x in enumerate(left) if x == MILLI_PER_GPU][: request.gpu_count]
    after = [0 if i in taken else x for i, x in enumerate(left)]
    return score(before, frag(cpu - request.cpu_milli, after)), tuple(taken)


# --------------------------------------------------------------------------------------
# Helpers over states
# --------------------------------------------------------------------------------------

MUTABLE = ("cpu_left", "mem_left", "pod_count", "gpu_left", "affinity")
DERIVED = ("gpu_total_left", "gpu_free_count", "gpu_max_left")


def snapshot(state: ClusterState) -> dict:
    """Copies of every array a write may touch (except `version`), plus the live pods."""
    snap = {name: getattr(state, name).copy() for name in (*MUTABLE, *DERIVED)}
    snap["live"] = dict(state.live)
    return snap


def assert_same(state: ClusterState, snap: dict) -> None:
    now = snapshot(state)
    assert now["live"] == snap["live"]
    for name in (*MUTABLE, *DERIVED):
        assert np.array_equal(now[name], snap[name]), name
        assert now[name].dtype == snap[name].dtype, name


def assert_invariants(state: ClusterState) -> None:
    # Never over-committed.
    assert (state.cpu_left >= 0).all()
    assert (state.mem_left >= 0).all()
    assert (state.gpu_left >= 0).all() and (state.gpu_left <= MILLI_PER_GPU).all()
    assert (state.gpu_left[~state.gpu_exists] == 0).all(), "a GPU that does not exist has capacity"
    assert (state.pod_count >= 0).all() and (state.pod_count <= state.max_pods).all()
    # Derived summaries equal their recomputation.
    assert np.array_equal(state.gpu_total_left, state.gpu_left.sum(axis=1))
    assert np.array_equal(state.gpu_free_count, (state.gpu_left == MILLI_PER_GPU).sum(axis=1))
    assert np.array_equal(state.gpu_max_left, state.gpu_left.max(axis=1))
    # The arrays are explained exactly by the live assignments.
    cpu, mem, pods = state.cpu_cap.copy(), state.mem_cap.copy(), np.zeros(len(state), dtype=np.int64)
    gpu = np.where(state.gpu_exists, MILLI_PER_GPU, 0)
    affinity = np.zeros_like(state.affinity)
    for a in state.live.values():
        cpu[a.node] -= a.request.cpu_milli
        mem[a.node] -= a.request.memory_mib
        pods[a.node] += 1
        for g in a.gpus:
            gpu[a.node, g] -= a.request.gpu_milli
        if a.request.gpu_count:
            affinity[a.node, 0 if a.request.is_fraction else a.request.gpu_count] += 1
    assert np.array_equal(state.cpu_left, cpu)
    assert np.array_equal(state.mem_left, mem)
    assert np.array_equal(state.pod_count, pods)
    assert np.array_equal(state.gpu_left, gpu)
    assert np.array_equal(state.affinity, affinity)


def assert_valid_decision(state: ClusterState, request: Request, decision) -> None:
    feasible = reference_feasible(state, request)
    if isinstance(decision, Unschedulable):
        assert not any(feasible)
        assert decision.node_count == len(state)
        assert sum(decision.reasons.values()) >= len(state)  # every node gives a reason
        return
    assert feasible[decision.node], "placed on a node the filter should have rejected"
    assert decision.node_name == state.names[decision.node]
    assert len(decision.gpus) == request.gpu_count
    for g in decision.gpus:
        assert state.gpu_left[decision.node, g] >= request.gpu_milli
    if not request.is_fraction and request.gpu_count:
        free = np.flatnonzero(state.gpu_left[decision.node] == MILLI_PER_GPU)
        assert decision.gpus == tuple(int(i) for i in free[: request.gpu_count])


def drive(state: ClusterState, p: Placer, ops, on_decision=None) -> None:
    """Run `ops` against `state` through `p`, checking invariants after every step."""
    for step, (kind, arg) in enumerate(ops):
        if kind == "release":
            if state.live:
                pods = sorted(state.live)
                state.release(pods[arg % len(pods)])
        else:
            before = snapshot(state)
            decision = p.place(f"p{step}", arg)
            assert_same(state, before)  # deciding writes nothing
            assert_valid_decision(state, arg, decision)
            if on_decision is not None:
                on_decision(arg, decision)
            if isinstance(decision, Assignment):
                state.allocate(decision)
                if kind == "place-then-undo":
                    assert state.release(decision.pod) == decision
                    assert_same(state, before)
        assert_invariants(state)


def make_placer(state: ClusterState, policy: str, target: TargetWorkload, seed: int = 0) -> Placer:
    return Placer(state, create_policy(policy, PolicyContext(rng=NumpyInts(seed), target=target)))


# --------------------------------------------------------------------------------------
# Properties of the state under every policy
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", PAPER_POLICIES)
@PROPERTY
@given(state=clusters(), ops=operations(), seed=st.integers(0, 2**16))
def test_placing_and_releasing_never_over_commits_and_keeps_summaries_exact(policy, state, ops, seed):
    drive(state, make_placer(state, policy, target_for(ops), seed), ops)


@PROPERTY
@given(state=clusters(), ops=operations(), pick=st.integers(0, 10_000))
def test_release_then_allocate_of_any_live_pod_restores_the_exact_arrays(state, ops, pick):
    drive(state, make_placer(state, "bestfit", target_for(ops)), ops)
    assume(state.live)
    pod = sorted(state.live)[pick % len(state.live)]
    before = snapshot(state)
    released = state.release(pod)
    assert pod not in state.live
    assert_invariants(state)
    state.allocate(released)
    assert_same(state, before)


@PROPERTY
@given(state=clusters(), ops=operations())
def test_every_write_bumps_the_version_of_exactly_its_node(state, ops):
    # The score cache relies on this: a node whose version did not move kept its state.
    p = make_placer(state, "fgd", target_for(ops))
    for step, (kind, arg) in enumerate(ops):
        before = state.version.copy()
        if kind == "release":
            if not state.live:
                continue
            node = state.release(sorted(state.live)[arg % len(state.live)]).node
        else:
            decision = p.place(f"p{step}", arg)
            assert np.array_equal(state.version, before)  # deciding is not a write
            if not isinstance(decision, Assignment):
                continue
            state.allocate(decision)
            node = decision.node
        assert np.flatnonzero(state.version > before).tolist() == [node]
        assert (state.version >= before).all()


# --------------------------------------------------------------------------------------
# Refused writes change nothing
# --------------------------------------------------------------------------------------

INVALID_KINDS = {
    "unknown node index": "unknown node",
    "node name does not match index": "unknown node",
    "too much cpu": "cpu",
    "too much memory": "memory",
    "too many pods": "already runs",
    "wrong GPU count": "GPU ids for a",
    "duplicate GPU": "listed twice",
    "non-existent GPU": "does not exist",
    "negative GPU id": "does not exist",
    "GPU too full": "free, needs",
    "wrong GPU model": "not in",
    "pod already allocated": "already allocated",
}


def invalid_assignment(state: ClusterState, kind: str, data) -> Assignment | None:
    """An assignment that breaks exactly the rule named by `kind` (None: not possible here)."""
    n = len(state)
    roomy = [i for i in range(n) if state.pod_count[i] < state.max_pods[i]]
    with_gpu = [i for i in roomy if state.gpu_count[i] > 0]

    def at(node: int, request: Request, gpus=(), pod: str = "intruder", name: str | None = None):
        return Assignment(pod, node, name or state.names[node], request, tuple(gpus))

    if kind == "unknown node index":
        return Assignment("intruder", n, "ghost", cpu_only(0))
    if kind == "node name does not match index":
        return at(data.draw(st.integers(0, n - 1)), cpu_only(0), name="ghost")
    if kind == "too many pods":
        full = [i for i in range(n) if state.pod_count[i] >= state.max_pods[i]]
        return at(data.draw(st.sampled_from(full)), cpu_only(0)) if full else None
    if not roomy:
        return None
    node = data.draw(st.sampled_from(roomy))
    if kind == "too much cpu":
        return at(node, cpu_only(int(state.cpu_left[node]) + 1))
    if kind == "too much memory":
        return at(node, cpu_only(0, mem=int(state.mem_left[node]) + 1))
    if kind == "pod already allocated":
        if not state.live:
            return None
        return at(node, cpu_only(0), pod=data.draw(st.sampled_from(sorted(state.live))))
    if not with_gpu:
        return None
    node = data.draw(st.sampled_from(with_gpu))
    gpus = int(state.gpu_count[node])
    if kind == "wrong GPU count":
        wrong = data.draw(st.sampled_from([(), (0, 0), tuple(range(gpus + 1))]))
        return at(node, whole(1, cpu=0), gpus=wrong)
    if kind == "duplicate GPU":
        g = data.draw(st.integers(0, gpus - 1))
        return at(node, whole(2, cpu=0), gpus=(g, g))
    if kind == "non-existent GPU":
        return at(node, frac(1, cpu=0), gpus=(data.draw(st.integers(gpus, state.max_gpus + 2)),))
    if kind == "negative GPU id":
        return at(node, frac(1, cpu=0), gpus=(-1,))
    if kind == "GPU too full":
        busy = [g for g in range(gpus) if state.gpu_left[node, g] < MILLI_PER_GPU]
        if not busy:
            return None
        g = data.draw(st.sampled_from(busy))
        left = int(state.gpu_left[node, g])
        request = frac(left + 1, cpu=0) if left + 1 < MILLI_PER_GPU else whole(1, cpu=0)
        return at(node, request, gpus=(g,))
    if kind == "wrong GPU model":
        usable = [g for g in range(gpus) if state.gpu_left[node, g] >= 1]
        if not usable:
            return None
        other = [m for m in (*MODELS, "P100") if m != state.nodes[node].gpu_model]
        return at(node, frac(1, cpu=0, models=(data.draw(st.sampled_from(other)),)), gpus=(usable[0],))
    raise AssertionError(kind)


@PROPERTY
@given(state=clusters(), ops=operations(), kind=st.sampled_from(sorted(INVALID_KINDS)), data=st.data())
def test_a_refused_allocate_raises_and_changes_nothing(state, ops, kind, data):
    drive(state, make_placer(state, "packing", target_for(ops)), ops)
    bad = invalid_assignment(state, kind, data)
    assume(bad is not None)
    before, versions = snapshot(state), state.version.copy()
    with pytest.raises(OverCommitError, match=INVALID_KINDS[kind]):
        state.allocate(bad)
    assert_same(state, before)
    assert np.array_equal(state.version, versions)


@PROPERTY
@given(state=clusters(), ops=operations())
def test_releasing_a_pod_that_holds_nothing_raises_and_changes_nothing(state, ops):
    drive(state, make_placer(state, "clustering", target_for(ops)), ops)
    before, versions = snapshot(state), state.version.copy()
    with pytest.raises(OverCommitError, match="holds no allocation"):
        state.release("never-placed")
    if state.live:
        pod = sorted(state.live)[0]
        state.release(pod)
        before, versions = snapshot(state), state.version.copy()
        with pytest.raises(OverCommitError):
            state.release(pod)  # twice
    assert_same(state, before)
    assert np.array_equal(state.version, versions)


def test_a_blank_model_name_constrains_nothing_in_allocate_as_in_the_filter():
    # Sec. 1.2: "a spec with only empty segments = no constraint". The filter agrees
    # (the node is feasible), so allocate must accept what Placer proposes.
    state = cluster(("n0", 8000, 65536, 2, "T4"))
    request = whole(1, models=("",))
    assert feasible_mask(state, request).tolist() == [True]
    decision = placer(state, "bestfit").place("p", request)
    state.allocate(decision)
    assert state.gpu_left[0].tolist() == [0, 1000]


# --------------------------------------------------------------------------------------
# The score cache never changes a decision
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", DETERMINISTIC)
@settings(PROPERTY, max_examples=40)
@given(state=st.one_of(clusters(), roomy_clusters()), ops=operations())
def test_cached_scores_give_the_same_decisions_as_scoring_from_scratch(policy, state, ops):
    target = target_for(ops)
    cached = make_placer(state, policy, target)
    assert cached._cache is not None, "pure policies are expected to use the score cache"
    uncached = make_placer(state, policy, target)
    uncached._cache = None

    def compare(request, decision):
        # Score level: what the cache hands Placer equals scoring every node now.
        feasible = np.flatnonzero(feasible_mask(state, request))
        if feasible.size:
            from_cache = cached._cache.scores(cached.policy, request, feasible)
            assert from_cache.tolist() == cached.policy.score(state, request, feasible).tolist()
        # Decision level: a fresh Placer (new cache) and one without a cache agree.
        fresh = make_placer(state, policy, target)
        for other in (fresh, uncached):
            again = other.place(decision.pod if isinstance(decision, Assignment) else "x", request)
            if isinstance(decision, Assignment):
                assert again == decision
            else:
                assert isinstance(again, Unschedulable) and again.message == decision.message

    drive(state, cached, ops, on_decision=compare)


def test_cache_keeps_scores_apart_for_shapes_that_differ_only_in_gpu_count():
    state = cluster(("idle", 8000, 65536, 4, "T4"), ("one-gpu", 8000, 65536, 4, "T4"))
    occupy(state, "one-gpu", free=(0, 1000, 1000, 1000))
    p = placer(state, "clustering")
    # A 2-GPU pod: idle 12 + 25 = 37 beats one-gpu 15 (no `2-gpu` tag there).
    state.allocate(p.place("two", whole(2)))
    assert state.live["two"].node_name == "idle"
    # A 1-GPU pod, same CPU: one-gpu (unchanged since the last cycle) now scores 15 + 75 = 90,
    # idle 25*6000//8000 = 18; a cache that reused the 2-GPU score of one-gpu would pick idle.
    assert p.place("one", whole(1)).node_name == "one-gpu"


# --------------------------------------------------------------------------------------
# The vectorised filter agrees with the per-node reference
# --------------------------------------------------------------------------------------


@PROPERTY
@given(state=clusters(), ops=operations(), probes=st.lists(requests, min_size=1, max_size=8))
def test_feasible_mask_agrees_with_the_per_node_reference(state, ops, probes):
    drive(state, make_placer(state, "dotprod", target_for(ops)), ops)
    for request in probes:
        assert feasible_mask(state, request).tolist() == reference_feasible(state, request), request


# --------------------------------------------------------------------------------------
# Fragmentation and FGD against the slow reference
# --------------------------------------------------------------------------------------

FRAG_CLUSTER = ClusterState(
    [
        NodeSpec("t4", 96000, 65536, 8, "T4"),
        NodeSpec("v100", 96000, 65536, 8, "V100M16"),
        NodeSpec("a10", 96000, 65536, 1, "A10"),
        NodeSpec("cpu", 96000, 65536),
        NodeSpec("t4-sliced-3", 96000, 65536, 8, "T4", gpu_replicas=3),
        NodeSpec("v100-sliced-4", 96000, 65536, 8, "V100M16", gpu_replicas=4),
    ]
)
SLICINGS = (1, 3, 4)  # the replica counts FRAG_CLUSTER has
MODEL_IDS = {model: i for i, model in enumerate(FRAG_CLUSTER.gpu_models)} | {"": -1}


@st.composite
def node_states(draw) -> tuple[int, list[int], str, int]:
    """(CPU left, free milli per GPU, model, replicas): a node's state, maybe time-sliced."""
    gpus = draw(st.integers(0, 8))
    model = draw(st.sampled_from(MODELS)) if gpus else ""
    cpu_left = draw(st.one_of(st.sampled_from([0, 1000, 2000, 8000]), st.integers(0, 130_000)))
    replicas = draw(st.sampled_from(SLICINGS)) if gpus else 1
    sizes = [0, 1000, 500, 250]
    if replicas > 1:  # what a sliced GPU can have free: 1000 minus k slices
        sizes = [1000 - k * (1000 // replicas) for k in range(replicas + 1)]
    free = st.one_of(st.sampled_from(sizes), st.integers(0, 1000))
    return cpu_left, draw(st.lists(free, min_size=gpus, max_size=gpus)), model, replicas


targets = st.builds(
    TargetWorkload.from_requests,
    st.lists(requests, min_size=1, max_size=40).flatmap(
        lambda rs: st.lists(st.sampled_from(rs), min_size=len(rs), max_size=3 * len(rs)).map(rs.__add__)
    ),
    coverage=st.sampled_from([0.5, 0.8, 0.95, 1.0]),
)


def amounts_of(target: TargetWorkload, nodes: list[tuple[int, list[int], str, int]]):
    cpu = np.array([c for c, _, _, _ in nodes], dtype=np.int64)
    gpu = np.zeros((len(nodes), 8), dtype=np.int64)
    for row, (_, left, _, _) in enumerate(nodes):
        gpu[row, : len(left)] = left
    model = np.array([MODEL_IDS[m] for _, _, m, _ in nodes], dtype=np.int64)
    replicas = np.array([r for _, _, _, r in nodes], dtype=np.int64)
    return Fragmentation(target, FRAG_CLUSTER).amounts(cpu, gpu, model, replicas)


@settings(max_examples=150, deadline=None)
@given(target=targets, nodes=st.lists(node_states(), min_size=1, max_size=6))
def test_fragmentation_amounts_agree_with_the_reference(target, nodes):
    frag, idle = amounts_of(target, nodes)
    for row, (cpu_left, left, model, replicas) in enumerate(nodes):
        ref_frag, ref_idle = reference_fragmentation(target, cpu_left, left, model, replicas)
        assert frag[row] == pytest.approx(ref_frag, rel=1e-9, abs=1e-9)
        assert idle[row] == pytest.approx(ref_idle, rel=1e-9, abs=1e-9)
        assert idle[row] == pytest.approx(sum(left), rel=1e-9, abs=1e-9)  # weights sum to 1


@settings(max_examples=100, deadline=None)
@given(target=targets, nodes=st.lists(node_states(), min_size=1, max_size=6))
def test_fragmentation_amounts_are_bit_identical_to_the_spec_accumulation_order(target, nodes):
    # Sec. 3.7 fixes the float order so that the quantised FGD scores match the artifact.
    frag, _ = amounts_of(target, nodes)
    for row, (cpu_left, left, model, replicas) in enumerate(nodes):
        assert float(frag[row]) == reference_fragmentation(target, cpu_left, left, model, replicas)[0]


@PROPERTY
@given(state=clusters(), ops=operations(), target=targets, probes=st.lists(requests, min_size=1, max_size=6))
def test_fgd_scores_and_gpu_choice_agree_with_the_reference(state, ops, target, probes):
    drive(state, make_placer(state, "random", target), ops)
    fgd = make_placer(state, "fgd", target).policy
    for request in probes:
        nodes = np.flatnonzero(feasible_mask(state, request))
        if nodes.size == 0:
            continue
        got = fgd.score(state, request, nodes)
        for node, score in zip(nodes.tolist(), got.tolist(), strict=True):
            ref_score, ref_gpus = reference_fgd(target, state, node, request)
            assert score == ref_score, (node, request)
            assert fgd.choose_gpus(state, node, request) == (ref_gpus if request.gpu_count else ())
