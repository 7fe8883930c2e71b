"""The queue core (placement/quota): parser errors, messages, units, fair share, order, reclaim.

Property tests drive real clusters through `QueuedPlacer` (the core's `Placer`, state
and quota book together) with random arrivals and departures, and check the
contract of docs/queues.md: no queue ever exceeds its limit; usage is the sum of its
pods' units; reclaim never takes a pod of a queue at or below its quota; and a pod that
fits in its queue's quota gets in after reclaim.
"""

from __future__ import annotations

import itertools
from fractions import Fraction as F

import numpy as np
import pytest
from builders import frac, whole
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tessellate.placement import (
    ClusterState,
    MigSpec,
    NodeSpec,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    create_policy,
)
from tessellate.placement.mig import MigLayout
from tessellate.placement.quota import (
    QueueSpec,
    QueueSpecError,
    QueueTree,
    QuotaBook,
    ResourceQuota,
    UnknownQueueError,
    fair_shares,
    format_units,
    gpu_capacity,
    parse_queues,
    placed_units,
    reclaim,
    request_units,
    water_fill,
)
from tessellate.placement.quota.admit import QueuedPlacer, Waiting
from tessellate.placement.quota.fairshare import Claim

H100, A100 = "H100-80GB", "A100-80GB"


def queue(name: str, *entries: tuple, parent: str | None = None) -> dict:
    """`queue("team-a", (H100, 16, 24, 1))`: entries are (model, quota[, limit[, weight]])."""
    resources = []
    for model, quota, *rest in entries:
        r = {"gpuModel": model, "quota": quota}
        if rest and rest[0] is not None:
            r["limit"] = rest[0]
        if len(rest) > 1:
            r["overQuotaWeight"] = rest[1]
        resources.append(r)
    spec: dict = {"resources": resources}
    if parent:
        spec["parent"] = parent
    return {"name": name, "spec": spec}


def tree(*queues: dict) -> QueueTree:
    return QueueTree(parse_queues(list(queues)))


def nodes(count: int, model: str = H100, gpus: int = 8) -> list[NodeSpec]:
    return [NodeSpec(f"{model[:4].lower()}-{i}", 256_000, 1 << 20, gpus, model) for i in range(count)]


def queued(specs: list[NodeSpec], t: QueueTree) -> QueuedPlacer:
    state = ClusterState(specs)
    placer = Placer(state, create_policy("bestfit", PolicyContext(rng=NumpyInts(0))))
    return QueuedPlacer(placer, QuotaBook(t, gpu_capacity(state)))


# --- the parser --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "H100"}]}},
            "queue a: spec.resources[0].gpuModel: unknown GPU model 'H100'; use \"*\" or one of A10",
        ),
        (
            {"name": "a", "spec": {"resources": [{"quota": 2}]}},
            'queue a: spec.resources[0].gpuModel: missing; name a catalogue GPU model, or "*"',
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "quota": -1}]}},
            "queue a: spec.resources[0].quota: negative amount -1; write a number of GPUs >= 0",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "quota": "lots"}]}},
            "queue a: spec.resources[0].quota: expected a number, got 'lots'",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "quota": True}]}},
            "queue a: spec.resources[0].quota: expected a number, got True",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "quota": 0.0001}]}},
            "queue a: spec.resources[0].quota: 0.0001 is finer than a milli-GPU; use at most 3 decimals",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "quota": 8, "limit": 4}]}},
            "queue a: spec.resources[0].limit: limit 4 is below quota 8; raise the limit",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": "*", "overquotaweight": 2}]}},
            "queue a: spec.resources[0].overquotaweight: unknown field; the fields are gpuModel, quota, "
            "limit, overQuotaWeight",
        ),
        (
            {"name": "a", "spec": {"resources": [{"gpuModel": H100}, {"gpuModel": H100}]}},
            "queue a: spec.resources: gpuModel 'H100-80GB' appears twice",
        ),
        (
            {"name": "a", "spec": {"quota": 3}},
            "queue a: spec.quota: unknown field; the fields are parent, resources, namespaces",
        ),
        (
            {"name": "a", "spec": {"namespaces": "team-a"}},
            "queue a: spec.namespaces: expected a list, got str; write namespaces: [team-a, team-a-dev]",
        ),
        (
            {"name": "a", "spec": {"namespaces": ["team-a", "Team B"]}},
            "queue a: spec.namespaces[1]: 'Team B' is not a namespace name",
        ),
        (
            {"name": "a", "spec": {"namespaces": ["x" * 64]}},
            "queue a: spec.namespaces[0]: ",
        ),
        ({"name": "a", "spec": {"parent": "a"}}, "queue a: spec.parent: a queue cannot be its own parent"),
        ({"name": "Team_A"}, "queue Team_A: name: not a valid Kubernetes name"),
        ({"spec": {}}, "queue #1: name: missing queue name"),
        ({"kind": "Pod", "metadata": {"name": "a"}}, "queue a: kind: 'Pod' is not a Queue"),
        ("team-a", "queue #1: (entry): expected a mapping, got str"),
    ],
)
def test_parser_errors_name_the_queue_the_field_and_the_fix(doc: object, expected: str) -> None:
    with pytest.raises(QueueSpecError) as err:
        parse_queues([doc])
    assert str(err.value).startswith(expected)


def test_parser_accepts_queue_objects_and_spec_form_alike() -> None:
    obj = {
        "apiVersion": "tessellate.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": "team-a"},
        "spec": {"resources": [{"gpuModel": H100, "quota": 16, "limit": 24, "overQuotaWeight": 2}]},
        "status": {"allocated": []},
    }
    plain = {"name": "team-a", "spec": obj["spec"]}
    assert parse_queues([obj]) == parse_queues([plain]) == parse_queues({"items": [obj]})
    (spec,) = parse_queues([obj])
    assert spec.entry(H100) == ResourceQuota(H100, F(16), F(24), F(2))


def test_duplicate_queue_names_are_refused() -> None:
    with pytest.raises(QueueSpecError, match=r"queue a: metadata\.name: defined twice"):
        parse_queues([{"name": "a"}, {"name": "a"}])


def test_tree_errors() -> None:
    with pytest.raises(
        QueueSpecError, match=r"queue a: spec.parent: unknown queue 'org'; define queue 'org'"
    ):
        tree(queue("a", parent="org"))
    with pytest.raises(QueueSpecError, match=r"parents form a cycle \(a -> b -> a\)"):
        tree(queue("a", parent="b"), queue("b", parent="a"))
    with pytest.raises(
        QueueSpecError,
        match=r"queue org: spec.resources\[H100-80GB\].quota: children \(a, b\) "
        r"are guaranteed 12 GPUs of H100-80GB in total but this queue only 8",
    ):
        tree(
            queue("org", (H100, 8)), queue("a", (H100, 6), parent="org"), queue("b", (H100, 6), parent="org")
        )
    with pytest.raises(QueueSpecError, match="the default queue cannot have children"):
        tree(queue("a", parent="default"))


def test_pods_go_to_leaves_and_unlabelled_pods_to_default() -> None:
    t = tree(queue("org", (H100, 8)), queue("a", (H100, 4), parent="org"))
    assert t.leaf_for(None) == t.leaf_for("") == "default"
    assert t.leaf_for("a") == "a"
    with pytest.raises(UnknownQueueError, match="queue 'nope' does not exist"):
        t.leaf_for("nope")
    with pytest.raises(UnknownQueueError, match="queue 'org' is a parent queue"):
        t.leaf_for("org")
    assert t.paths["a"] == ("org", "a")


def test_namespaces_fence_a_queue_and_a_parent_fences_its_subtree() -> None:
    org = {"name": "org", "spec": {"namespaces": ["research", "research-dev"]}}
    lab = {"name": "lab", "spec": {"parent": "org", "namespaces": ["research"]}}
    open_leaf = {"name": "open", "spec": {"parent": "org"}}
    closed = {"name": "closed", "spec": {"namespaces": []}}
    t = QueueTree(parse_queues([org, lab, open_leaf, closed, {"name": "anyone"}]))
    assert t.refusal_for_namespace("lab", "research") is None
    assert t.refusal_for_namespace("anyone", "whoever") is None
    assert t.refusal_for_namespace("default", "whoever") is None
    assert t.refusal_for_namespace("open", "research-dev") is None  # the parent lists it
    why = t.refusal_for_namespace("lab", "research-dev")  # the leaf does not
    assert why is not None
    assert why.startswith("namespace 'research-dev' may not use queue 'lab': it admits only research;")
    why = t.refusal_for_namespace("open", "sales")
    assert why is not None and "queue 'open' (through its parent 'org')" in why
    assert "add 'sales' to spec.namespaces of queue 'org'" in why
    closed_why = t.refusal_for_namespace("closed", "x") or ""
    assert "may not use queue 'closed': it admits no namespace;" in closed_why


def test_star_is_a_per_model_template_that_own_entries_override() -> None:
    (spec,) = parse_queues([queue("a", ("*", 2, 4, 3), (H100, 8))])
    assert spec.entry(H100) == ResourceQuota(H100, F(8), None, F(1))
    assert spec.entry(A100) == ResourceQuota("*", F(2), F(4), F(3))
    assert QueueSpec("b").entry(A100).quota == 0 and QueueSpec("b").entry(A100).limit is None


# --- units and messages ----------------------------------------------------------------


def test_units_of_each_kind_of_request() -> None:
    assert request_units(whole(4), H100) == 4
    assert request_units(frac(250), H100) == F(1, 4)
    assert request_units(whole(1), H100, replicas=3) == F(1, 3)
    assert request_units(whole(2), H100, replicas=3) is None  # time-sliced nodes refuse it
    mig = Request(1000, mig_profile="3g.40gb", mig_count=1)
    assert request_units(mig, A100) == F(1, 2)  # 4 of 8 memory slices
    assert request_units(Request(1000, mig_profile="1g.10gb", mig_count=3), A100) == F(3, 8)
    assert request_units(mig, "T4") is None
    assert request_units(Request(1000), H100) == 0


def test_placed_units_read_the_assignment_and_its_node() -> None:
    layout = MigLayout.of(A100, ("3g.40gb", 0), ("3g.40gb", 4))
    specs = [
        NodeSpec("mig", 64_000, 1 << 18, 1, A100, mig=MigSpec((layout,))),
        NodeSpec("ts", 64_000, 1 << 18, 2, "T4", gpu_replicas=4),
    ]
    q = queued(specs, tree())
    a = q.place("m", "default", Request(1000, mig_profile="3g.40gb", mig_count=1))
    s = q.place("s", "default", whole(1))
    assert not isinstance(a, Waiting) and not isinstance(s, Waiting)
    assert placed_units(q.state, a) == (A100, F(1, 2))
    assert placed_units(q.state, s) == ("T4", F(1, 4))
    assert q.book.usage("default", A100) == F(1, 2) and q.book.usage("default", "T4") == F(1, 4)


def test_limit_message_is_exact() -> None:
    q = queued(nodes(4), tree(queue("team-a", (H100, 16, 24))))
    for i in range(11):
        assert not isinstance(q.place(f"a{i}", "team-a", whole(2)), Waiting)
    why = q.place("big", "team-a", whole(4))
    assert why == Waiting(
        "queue team-a: limit 24 nvidia.com/gpu (H100-80GB) reached (22 in use, pod asks 4)", True
    )
    assert q.book.usage("team-a", H100) == 22  # nothing was charged for the refused pod


def test_limit_message_formats_fractions_and_names_a_binding_parent() -> None:
    t = tree(queue("org", (H100, 0, 1.5)), queue("a", parent="org"))
    book = QuotaBook(t, {H100: 8})
    book.charge("p", "a", H100, F(5, 4))
    assert book.limit_refusal("a", H100, F(1, 2)) == (
        "queue a: parent queue org's limit 1.5 nvidia.com/gpu (H100-80GB) reached (1.25 in use, pod asks 0.5)"
    )
    assert book.limit_refusal("a", H100, F(1, 4)) is None
    assert book.group_refusal("a", {H100: F(1)}) == (
        "queue a: parent queue org's limit 1.5 nvidia.com/gpu (H100-80GB) reached "
        "(1.25 in use, pod group asks 1)"
    )
    assert format_units(F(1, 3)) == "0.333" and format_units(F(24)) == "24" and format_units(F(5, 2)) == "2.5"


def test_a_pod_within_quota_on_a_full_cluster_says_so() -> None:
    q = queued(nodes(1), tree(queue("b", (H100, 4))))
    for i in range(8):
        q.place(f"d{i}", "default", whole(1))
    why = q.place("b0", "b", whole(2))
    assert isinstance(why, Waiting) and not why.limited
    assert why.message.startswith(
        "queue b: within quota 4 nvidia.com/gpu (H100-80GB) (0 in use, pod asks 2) but the cluster lacks the "
        "capacity: 0/1 nodes are available"
    )


# --- fair share and order ------------------------------------------------------------------


def test_weights_one_to_three_split_the_idle_gpus() -> None:
    t = tree(queue("a", (H100, 4, None, 1)), queue("b", (H100, 4, None, 3)))
    book = QuotaBook(t, {H100: 32})
    fair = book.fair_shares({("a", H100): F(100), ("b", H100): F(100)})
    assert fair[("a", H100)] == 4 + 6 and fair[("b", H100)] == 4 + 18  # 24 idle split 1:3


def test_water_filling_caps_by_demand_and_limit_and_passes_the_rest_on() -> None:
    claims = {
        "a": Claim(F(4), None, F(1), F(5)),  # wants 1 more only
        "b": Claim(F(4), F(10), F(1), F(100)),  # capped at 10
        "c": Claim(F(0), None, F(2), F(100)),
    }
    share = water_fill(F(32), claims)
    assert share == {"a": 5, "b": 10, "c": 17}
    over = water_fill(F(8), {"a": Claim(F(8), None, F(1), F(8)), "b": Claim(F(8), None, F(1), F(8))})
    assert over == {"a": 4, "b": 4}  # quotas beyond capacity shrink in proportion


def test_hierarchical_fair_share_splits_the_parents_share() -> None:
    t = tree(
        queue("org", (H100, 8)),
        queue("x", (H100, 2), parent="org"),
        queue("y", (H100, 2), parent="org"),
        queue("z", (H100, 8)),
    )
    fair = fair_shares(t, {H100: F(16)}, {}, {("x", H100): F(10), ("y", H100): F(10), ("z", H100): F(2)})
    assert fair[("z", H100)] == 2 and fair[("org", H100)] == 14
    assert fair[("x", H100)] == fair[("y", H100)] == 7


def test_order_puts_the_queue_furthest_below_its_fair_share_first_across_models() -> None:
    t = tree(queue("a", (H100, 8), (A100, 8)), queue("b", (H100, 8), (A100, 8)))
    book = QuotaBook(t, {H100: 16, A100: 16})
    book.charge("a1", "a", H100, F(8))  # at its H100 share, none of A100
    book.charge("b1", "b", H100, F(4))
    book.charge("b2", "b", A100, F(8))  # dominant: A100 at 8/8
    fair = book.fair_shares({})
    fair = {k: F(8) for k in fair}
    assert book.order(["a", "b"], fair) == ["a", "b"] or book.order(["a", "b"], fair) == ["b", "a"]
    book.release("a1")
    book.charge("a1", "a", H100, F(6))
    assert book.order(["b", "a"], fair) == ["a", "b"]  # a: 6/8 < b: max(4/8, 8/8)


# --- reclaim ------------------------------------------------------------------------------


def test_reclaim_takes_lowest_priority_then_youngest_and_only_borrowed_pods() -> None:
    t = tree(queue("a", (H100, 4)), queue("b", (H100, 4)))
    book = QuotaBook(t, {H100: 8})
    for i, (prio, started) in enumerate([(5, 0), (0, 1), (0, 3), (0, 2), (9, 4), (0, 5)]):
        book.charge(f"a{i}", "a", H100, F(1), priority=prio, started=started, node="n0")
    asked: list[list[str]] = []

    def fits(victims):  # b's 2-GPU pod fits once two GPUs are free
        asked.append([v.pod for v in victims])
        return len(victims) >= 2

    found = reclaim(book, "b", H100, F(2), fits)
    assert found is not None and [v.pod for v in found.pods] == ["a5", "a2"]
    assert all(len(a) <= 2 for a in asked)  # a holds 6 of quota 4: only two may go
    assert reclaim(book, "b", H100, F(5), fits) is None  # beyond b's quota: no reclaim


def test_reclaim_takes_a_gang_whole_and_only_when_its_queue_can_spare_all_of_it() -> None:
    t = tree(queue("a", (H100, 4), (A100, 0)), queue("b", (H100, 4)))
    book = QuotaBook(t, {H100: 8, A100: 8})
    for k in range(4):  # a gang on two nodes: 3 H100 and 1 A100
        model, node = (H100, "h0") if k < 3 else (A100, "a0")
        book.charge(f"g-{k}", "a", model, F(1), started=9, node=node, group="g")
    book.charge("s-0", "a", H100, F(1), started=1, node="h1")
    book.charge("s-1", "a", H100, F(1), started=2, node="h1")  # a: 5 H100 (quota 4), 1 A100 (quota 0)
    seen: list[tuple[str, list[str]]] = []

    def fits(victims):
        seen.append((victims[0].node, sorted(v.pod for v in victims)))
        return True

    found = reclaim(book, "b", H100, F(1), fits)  # the gang would take a to 2 H100 < 4: only a single
    assert found is not None and [v.pod for v in found.pods] == ["s-1"]
    assert all("g-0" not in pods for _, pods in seen)
    book.release("s-0")
    book.release("s-1")
    book.charge("x", "a", H100, F(4), node="h2")  # now a holds 7 H100: 3 to spare, the gang's 3 fit
    found = reclaim(book, "b", H100, F(1), lambda vs: vs[0].node == "h0")
    assert found is not None and found.node == "h0" and found.pods[0].node == "h0"
    assert sorted(v.pod for v in found.pods) == ["g-0", "g-1", "g-2", "g-3"]  # whole, A100 member too


def test_reclaim_inside_a_parent_and_not_from_a_subtree_within_its_quota() -> None:
    t = tree(
        queue("org", (H100, 8)),
        queue("x", (H100, 2), parent="org"),
        queue("y", (H100, 6), parent="org"),
        queue("z", (H100, 8)),
    )
    book = QuotaBook(t, {H100: 16})
    for i in range(6):
        book.charge(f"x{i}", "x", H100, F(1), node=0)  # x borrows 4 of y's share, org stays at 6 <= 8
    assert reclaim(book, "z", H100, F(1), lambda vs: True) is None  # org as a whole is within quota
    found = reclaim(book, "y", H100, F(1), lambda vs: True)
    assert found is not None and found.pods[0].queue == "x"


def test_reclaim_end_to_end_on_a_real_cluster() -> None:
    q = queued(nodes(4), tree(queue("a", (H100, 16)), queue("b", (H100, 16))))
    for i in range(32):  # a borrows the whole idle cluster
        assert not isinstance(q.place(f"a{i}", "a", whole(1), started=i), Waiting)
    assert q.book.usage("a", H100) == 32
    for i in range(4):
        victims = q.reclaim_for("b", whole(4))
        assert victims is not None and len(victims.pods) == 4
        assert len({v.node for v in victims.pods}) == 1
        for v in victims.pods:
            q.release(v.pod)
        assert not isinstance(q.place(f"b{i}", "b", whole(4)), Waiting)
    assert q.book.usage("a", H100) == q.book.usage("b", H100) == 16
    assert q.reclaim_for("b", whole(1)) is None  # b at its quota, a at its own: nothing to take


# --- properties -----------------------------------------------------------------------------

MODELS = (H100, A100)


@st.composite
def setups(draw: st.DrawFn, whole_only: bool) -> tuple[list[NodeSpec], QueueTree, list[tuple]]:
    per_model = {m: draw(st.integers(1, 2)) for m in MODELS}
    specs = [s for m, count in per_model.items() for s in nodes(count, m, gpus=4)]
    names = ["q0", "q1", "q2"][: draw(st.integers(2, 3))]
    queues = []
    for m in MODELS:  # quotas that add up to at most the capacity
        cap = per_model[m] * 4
        cuts = sorted(draw(st.lists(st.integers(0, cap), min_size=len(names), max_size=len(names))))
        quotas = [cuts[0], *(b - a for a, b in itertools.pairwise(cuts))]
        for name, quota in zip(names, quotas, strict=True):
            limit = draw(st.one_of(st.none(), st.integers(quota, cap + 2)))
            queues.append((name, m, quota, limit, draw(st.integers(0, 3))))
    docs = [queue(n, *[(m, qt, lim, w) for nn, m, qt, lim, w in queues if nn == n]) for n in names]
    sizes = st.sampled_from([1]) if whole_only else st.sampled_from([1, 2, 4, 250, 500])
    arrive = st.tuples(
        st.just("arrive"),
        st.sampled_from([*names, "default"]),
        sizes,
        st.sampled_from(MODELS),
        st.integers(0, 2),
    )
    depart = st.tuples(st.just("depart"), st.integers(0, 10_000))
    gang = st.tuples(st.just("gang"), st.sampled_from(names), st.integers(2, 4), st.integers(0, 2))
    op = st.one_of(arrive, arrive, arrive, depart, *([] if whole_only else [gang]))
    return specs, tree(*docs), draw(st.lists(op, min_size=20, max_size=80))


def _request(size: int, model: str) -> Request:
    return frac(size, models=(model,)) if size > 4 else whole(size, models=(model,))


def _check_book(q: QueuedPlacer) -> None:
    book, state = q.book, q.state
    for name in book.tree:
        for model in MODELS:
            limit = book.entry(name, model).limit
            assert limit is None or book.usage(name, model) <= limit, f"{name} over its {model} limit"
    for leaf in book.tree.leaves:  # usage is the sum of its pods' units, as the state holds them
        for model in MODELS:
            pods = [c.pod for c in book.pods_of(leaf) if c.model == model]
            from_state = sum((placed_units(state, state.live[p])[1] for p in pods), F(0))
            assert book.usage(leaf, model) == from_state


def _run(specs: list[NodeSpec], t: QueueTree, ops: list[tuple], whole_only: bool) -> None:
    q = queued(specs, t)
    clock = 0
    for op in ops:
        clock += 1
        if op[0] == "depart":
            if q.book.charges:
                pods = sorted(q.book.charges)
                gone = q.book.charges[pods[op[1] % len(pods)]]
                for c in [c for c in q.book.pods_of(gone.queue) if gone.group and c.group == gone.group] or [
                    gone
                ]:
                    q.release(c.pod)  # a gang leaves whole
            continue
        if op[0] == "gang":  # one-GPU members on any model, all or nothing
            _, name, size, prio = op
            members = [(f"g{clock}-{k}", whole(1)) for k in range(size)]
            q.place_group(members, name, size, priority=prio, started=clock, group=f"g{clock}")
            _check_book(q)
            continue
        _, name, size, model, prio = op
        request = _request(size, model)
        pod = f"p{clock}"
        result = q.place(pod, name, request, priority=prio, started=clock)
        units = request_units(request, model)
        assert units is not None
        if isinstance(result, Waiting) and q.book.within_quota(name, model, units):
            before = {c.pod: c for c in q.book.charges.values()}
            victims = q.reclaim_for(name, request)
            if whole_only:  # the guarantee: a one-GPU pod within quota always gets in after reclaim
                assert victims is not None or bool(q.placer.fits(request).any()), (
                    "no reclaim for a pod in quota"
                )
            if victims is not None:
                event("reclaimed")
                if any(v.group for v in victims.pods):
                    event("reclaimed a gang")
                for v in victims.pods:
                    assert q.book.over_quota(v.queue, v.model), (
                        "reclaim took a pod of a queue within its quota"
                    )
                    assert before[v.pod] == v
                    if v.group:  # a gang goes whole
                        assert {c.pod for c in before.values() if c.group == v.group} <= {
                            x.pod for x in victims.pods
                        }
                taken: dict[tuple[str, str], F] = {}
                for v in victims.pods:
                    taken[(v.queue, v.model)] = taken.get((v.queue, v.model), F(0)) + v.units
                for (victim_queue, m), gone in taken.items():  # nobody is pushed below its quota
                    assert q.book.usage(victim_queue, m) - gone >= q.book.entry(victim_queue, m).quota
                for v in victims.pods:
                    q.release(v.pod)
                placed = q.place(pod, name, request, priority=prio, started=clock)
                assert not isinstance(placed, Waiting), f"reclaimed but still waiting: {placed}"
        _check_book(q)
    for pod in list(q.book.charges):
        q.release(pod)
    assert all(v == 0 for v in q.book._used.values())
    assert int(q.state.gpu_total_left.sum()) == q.state.total_gpu_milli


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(setups(whole_only=False))
def test_limits_usage_and_reclaim_victims_hold_for_any_workload(setup) -> None:
    _run(*setup, whole_only=False)


@PROPERTY
@given(setups(whole_only=True))
def test_a_pod_within_quota_always_gets_in_after_reclaim(setup) -> None:
    _run(*setup, whole_only=True)


def test_quota_mask_is_none_when_nothing_is_excluded() -> None:
    from tessellate.placement.quota import quota_mask

    q = queued(nodes(2), tree(queue("a", (H100, 0, 1))))
    assert quota_mask(q.book, q.kinds, "a", whole(1)) is None
    q.place("a0", "a", whole(1))
    mask = quota_mask(q.book, q.kinds, "a", whole(1))
    assert mask is not None and not mask.any()
    assert np.array_equal(mask, np.zeros(2, dtype=bool))
