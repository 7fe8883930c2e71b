"""MIG requests in the placement core: state, feasibility, choice, plans.

Unit tests pin the exact answer where it is known; hypothesis checks the invariants
(every layout valid per the reference, no overlaps, release restores the exact prior
state, plans never remove an instance in use, MIG and milli-GPU work never share a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    InvalidRequestError,
    NodeSpec,
    NumpyInts,
    OverCommitError,
    Placer,
    PolicyContext,
    Request,
    Unschedulable,
    create_policy,
)
from tessellate.placement.mig import MigLayout, geometry
from tessellate.placement.migplace import MigChooser, plan_gpu
from tessellate.placement.migplanner import MigPlanFailure
from tessellate.placement.model import MigPlan, MigSlot, MigSpec

A100 = "A100-80GB"


def mig(profile: str, count: int = 1, cpu: int = 1000, models: tuple[str, ...] = ()) -> Request:
    return Request(cpu_milli=cpu, mig_profile=profile, mig_count=count, gpu_models=models)


def whole(count: int = 1) -> Request:
    return Request(cpu_milli=1000, gpu_count=count, gpu_milli=MILLI_PER_GPU)


def dynamic_node(name: str, gpus: int = 2, model: str = A100) -> NodeSpec:
    return NodeSpec(name, 64000, 512000, gpus, model, mig=MigSpec(dynamic=True))


def static_node(name: str, *layouts: MigLayout | None) -> NodeSpec:
    return NodeSpec(name, 64000, 512000, len(layouts), A100, mig=MigSpec(layouts=tuple(layouts)))


def placer(state: ClusterState, choice: str = "aware") -> Placer:
    policy = create_policy("bestfit", PolicyContext(rng=NumpyInts(0)))
    return Placer(state, policy, MigChooser(choice))  # type: ignore[arg-type]


def place(state: ClusterState, request: Request, pod: str, choice: str = "aware") -> Assignment:
    decision = placer(state, choice).place(pod, request)
    assert isinstance(decision, Assignment), decision
    state.allocate(decision)
    return decision


# -- requests ----------------------------------------------------------------------------------


def test_mig_request_normalises_the_profile_and_counts_its_compute_share():
    request = Request(cpu_milli=0, mig_profile="nvidia.com/mig-3G.40GB", mig_count=2)
    assert request.mig_profile == "3g.40gb"
    assert request.is_mig and not request.is_cpu_only
    assert request.total_gpu_milli == 2 * (MILLI_PER_GPU * 3 // 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mig_profile": "9g.99gb", "mig_count": 1}, "unknown MIG profile"),
        ({"mig_profile": "1g.10gb", "mig_count": 0}, "mig_count must be >= 1"),
        ({"mig_count": 1}, "without a MIG profile"),
        ({"mig_profile": "1g.10gb", "mig_count": 1, "gpu_count": 1, "gpu_milli": 1000}, "cannot also"),
    ],
)
def test_malformed_mig_requests_are_refused(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        Request(cpu_milli=0, **kwargs)


def test_mig_setup_on_a_model_without_mig_is_refused():
    with pytest.raises(ValueError, match="does not support MIG"):
        NodeSpec("t", 1000, 1000, 1, "T4", mig=MigSpec(dynamic=True))


# -- static and dynamic placement ------------------------------------------------------------


def test_static_node_hands_out_only_existing_free_instances():
    layout = MigLayout.of(A100, ("3g.40gb", 0), ("3g.40gb", 4))
    state = ClusterState([static_node("s", layout)])
    first = place(state, mig("3g.40gb"), "p0")
    assert first.mig == (MigSlot(0, "3g.40gb", 0),) and first.mig_plans == ()
    assert place(state, mig("3g.40gb"), "p1").mig == (MigSlot(0, "3g.40gb", 4),)
    refused = placer(state).place("p2", mig("3g.40gb"))
    assert isinstance(refused, Unschedulable)
    assert refused.message == "0/1 nodes are available: 1 Insufficient nvidia.com/mig-3g.40gb."
    assert isinstance(placer(state).place("p3", mig("1g.10gb")), Unschedulable)


def test_partitioned_gpu_offers_no_milli_gpu_but_its_unpartitioned_neighbour_does():
    state = ClusterState([static_node("s", MigLayout.of(A100, ("7g.80gb", 0)), None)])
    assert state.gpu_left.tolist() == [[0, MILLI_PER_GPU]]
    assert place(state, whole(), "w").gpus == (1,)
    assert isinstance(placer(state).place("w2", whole()), Unschedulable)


def test_dynamic_node_creates_an_instance_with_a_plan_and_destroys_it_on_release():
    state = ClusterState([dynamic_node("d")])
    a = place(state, mig("1g.10gb"), "p0")
    (plan,) = a.mig_plans
    assert plan == MigPlan("d", a.mig[0].gpu, MigLayout.empty(A100), MigLayout.of(A100, ("1g.10gb", 6)))
    assert state.gpu_left[0, plan.gpu] == 0
    state.release("p0")
    assert state.gpu_left.tolist() == [[MILLI_PER_GPU, MILLI_PER_GPU]]
    assert state.mig.layouts[0] == [MigLayout.empty(A100)] * 2


def test_mig_aware_packs_onto_the_gpu_already_in_mig_mode():
    state = ClusterState([dynamic_node("d")])
    place(state, mig("3g.40gb"), "p0")  # at 4: slices 0-3 stay usable by a 4g
    second = place(state, mig("1g.10gb"), "p1")
    assert second.mig[0].gpu == 0  # packs instead of opening GPU 1
    assert state.mig.layouts[0][0] == MigLayout.of(A100, ("1g.10gb", 0), ("3g.40gb", 4))
    assert state.gpu_left.tolist() == [[0, MILLI_PER_GPU]]


def test_first_fit_takes_the_lowest_start_on_the_first_gpu():
    state = ClusterState([dynamic_node("d")])
    assert place(state, mig("1g.10gb"), "p0", "firstfit").mig == (MigSlot(0, "1g.10gb", 0),)


def test_mig_aware_prefers_the_node_whose_fragmentation_grows_least():
    state = ClusterState([dynamic_node("d0"), dynamic_node("d1")])
    place(state, mig("4g.40gb"), "p0")  # both empty: the lowest node
    state_nodes = [a.node_name for a in state.live.values()]
    assert state_nodes == ["d0"]
    assert place(state, mig("3g.40gb"), "p1").node_name == "d0"  # fills d0's GPU exactly


def test_opening_a_gpu_goes_to_the_node_with_fewest_idle_gpus():
    state = ClusterState([dynamic_node("d0", gpus=2), dynamic_node("d1", gpus=2)])
    state.allocate(Assignment("w", 1, "d1", whole(), gpus=(0,)))
    assert place(state, mig("3g.40gb"), "m").node_name == "d1"  # not the lowest index: d0 stays whole


def test_mig_never_lands_on_a_gpu_with_whole_gpu_work_and_vice_versa():
    state = ClusterState([dynamic_node("d", gpus=1)])
    place(state, whole(), "w")
    assert isinstance(placer(state).place("m", mig("1g.10gb")), Unschedulable)
    state.release("w")
    place(state, mig("1g.10gb"), "m")
    refused = placer(state).place("w2", whole())
    assert isinstance(refused, Unschedulable)
    with pytest.raises(OverCommitError):
        state.allocate(Assignment("w3", 0, "d", whole(), gpus=(0,)))


def test_allocate_refuses_overlaps_unknown_profiles_and_wrong_plans():
    state = ClusterState([dynamic_node("d", gpus=1)])
    place(state, mig("3g.40gb"), "p0")  # at 4 (keeps 4g@0 possible) or 0
    used = state.mig.layouts[0][0].instances[0]
    clash = Assignment("x", 0, "d", mig("3g.40gb"), mig=(MigSlot(0, "3g.40gb", used.start),))
    with pytest.raises(OverCommitError, match="in use"):
        state.allocate(clash)
    overlap = Assignment("y", 0, "d", mig("2g.20gb"), mig=(MigSlot(0, "2g.20gb", used.start),))
    with pytest.raises(OverCommitError, match="cannot create"):
        state.allocate(overlap)
    a30_only = Assignment("z", 0, "d", mig("1g.6gb"), mig=(MigSlot(0, "1g.6gb", 0),))
    with pytest.raises(OverCommitError, match="no MIG profile"):
        state.allocate(a30_only)
    free_start = 0 if used.start == 4 else 4
    bad_plan = MigPlan("d", 0, MigLayout.empty(A100), MigLayout.of(A100, ("3g.40gb", free_start)))
    wrong = Assignment(
        "w", 0, "d", mig("3g.40gb"), mig=(MigSlot(0, "3g.40gb", free_start),), mig_plans=(bad_plan,)
    )
    before = snapshot(state)
    with pytest.raises(OverCommitError, match="plans do not match"):
        state.allocate(wrong)
    assert snapshot(state) == before


def test_plan_gpu_repartitions_the_free_part_and_keeps_instances_in_use():
    layout = MigLayout.of(A100, ("3g.40gb", 0), ("3g.40gb", 4))
    state = ClusterState([static_node("s", layout)])
    place(state, mig("3g.40gb"), "p0")
    plan = plan_gpu(state, 0, 0, {"1g.10gb": 2})
    assert isinstance(plan, MigPlan)
    assert MigLayout.of(A100, ("3g.40gb", 0)).instances[0] in plan.layout_after.instances
    assert plan.layout_after.count("1g.10gb") == 2
    assert isinstance(plan_gpu(state, 0, 0, {"4g.40gb": 1}), MigPlanFailure)


# -- invariants ---------------------------------------------------------------------------------


def snapshot(state: ClusterState) -> tuple:
    return (
        state.cpu_left.tolist(),
        state.gpu_left.tolist(),
        state.gpu_total_left.tolist(),
        state.gpu_free_count.tolist(),
        state.gpu_max_left.tolist(),
        state.allocated_gpu_milli,
        {n: list(v) for n, v in state.mig.layouts.items()},
        {n: list(v) for n, v in state.mig.busy.items()},
        state.mig.mode_gpus,
    )


def check_invariants(state: ClusterState) -> None:
    for node, layouts in state.mig.layouts.items():
        g = state.mig.geometry[node]
        for gpu, layout in enumerate(layouts):
            assert MigLayout.problems(g, layout.instances) == []
            masks = [g.profile(i.profile).mask(i.start) for i in layout]
            assert sum(masks) == np.bitwise_or.reduce(masks or [0])  # no two instances overlap
            assert state.mig.busy[node][gpu] <= set(layout.instances)
            if len(layout):
                assert state.gpu_left[node, gpu] == 0
    for a in state.live.values():
        for gpu in a.gpus:
            if a.node in state.mig.layouts:
                assert not len(state.mig.layouts[a.node][gpu])
    busy = sum(len(b) for v in state.mig.busy.values() for b in v)
    assert busy == sum(len(a.mig) for a in state.live.values())


PROFILES = ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.6gb", "2g.12gb", "4g.24gb")
STATIC_LAYOUTS = (
    None,
    MigLayout.of(A100, ("3g.40gb", 0), ("3g.40gb", 4)),
    MigLayout.of(A100, ("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)),
    MigLayout.of(A100, *[("1g.10gb", s) for s in range(7)]),
)

node_strategy = st.one_of(
    st.tuples(st.just("dynamic"), st.sampled_from((A100, "H100-80GB", "A30-24GB")), st.integers(1, 3)),
    st.tuples(st.just("static"), st.lists(st.sampled_from(STATIC_LAYOUTS), min_size=1, max_size=3)),
)
op_strategy = st.one_of(
    st.tuples(st.just("mig"), st.sampled_from(PROFILES), st.integers(1, 3)),
    st.tuples(st.just("whole"), st.integers(1, 2)),
    st.tuples(st.just("frac"), st.integers(1, 999)),
    st.tuples(st.just("release"), st.integers(0, 50)),
)


def build(specs) -> ClusterState:
    nodes = []
    for i, spec in enumerate(specs):
        if spec[0] == "dynamic":
            nodes.append(dynamic_node(f"n{i}", spec[2], spec[1]))
        else:
            nodes.append(static_node(f"n{i}", *spec[1]))
    return ClusterState(nodes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(node_strategy, min_size=1, max_size=4),
    st.lists(op_strategy, max_size=40),
    st.sampled_from(("aware", "firstfit")),
)
def test_random_mig_workloads_keep_every_invariant(specs, ops, choice):
    state = build(specs)
    p = placer(state, choice)
    for n, op in enumerate(ops):
        if op[0] == "release":
            if state.live:
                pod = sorted(state.live)[op[1] % len(state.live)]
                state.release(pod)
            check_invariants(state)
            continue
        if op[0] == "mig":
            request = mig(op[1], op[2])
        elif op[0] == "whole":
            request = whole(op[1])
        else:
            request = Request(cpu_milli=100, gpu_count=1, gpu_milli=op[1])
        decision = p.place(f"p{n}", request)
        if isinstance(decision, Unschedulable):
            continue
        for plan in decision.mig_plans:  # plans only add: nothing in use (nothing at all) is removed
            assert set(plan.layout_before.instances) <= set(plan.layout_after.instances)
            assert plan.layout_before == state.mig.layouts[decision.node][plan.gpu]
        before = snapshot(state)
        state.allocate(decision)
        check_invariants(state)
        if n % 3 == 0:  # release restores the exact prior state
            state.release(decision.pod)
            assert snapshot(state) == before
            state.allocate(decision)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(("1g.10gb", "2g.20gb", "3g.40gb")), st.integers(0, 6)), max_size=4),
    st.dictionaries(
        st.sampled_from(("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb")), st.integers(0, 3)
    ),
)
def test_plans_never_remove_an_instance_in_use(instances, counts):
    g = geometry(A100)
    layout = MigLayout(g)
    for profile, start in instances:
        if layout.can_add(profile, start):
            layout = layout.add(profile, start)
    state = ClusterState([static_node("s", layout or None)])
    if len(layout) == 0:
        state = ClusterState([dynamic_node("s", gpus=1)])
    p = placer(state)
    for i, instance in enumerate(layout.instances[::2]):
        decision = p.place(f"u{i}", mig(instance.profile))
        if isinstance(decision, Assignment):
            state.allocate(decision)
    in_use = set(state.mig.busy[0][0])
    plan = plan_gpu(state, 0, 0, counts)
    if isinstance(plan, MigPlan):
        assert in_use <= set(plan.layout_after.instances)
        assert MigLayout.problems(g, plan.layout_after.instances) == []
