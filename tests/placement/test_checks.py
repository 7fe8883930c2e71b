"""The resource checks (placement/checks.py): one definition, every answer consistent.

On random clusters with every kind of GPU node, after random placements and releases:
the filter's mask, its explanation, `ClusterState.allocate`'s refusal, the many-request
form the timed queue uses, `Placer.fits` and the "needs at least" shortcut all agree.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mixed_clusters import flavours, node_lists, request_pools
from tessellate.placement import (
    Assignment,
    ClusterState,
    MigChooser,
    NumpyInts,
    OverCommitError,
    Placer,
    PolicyContext,
    Request,
    TargetWorkload,
    create_policy,
)
from tessellate.placement.checks import needs_at_least
from tessellate.placement.fit import explain, feasible_mask
from tessellate.placement.requests import RequestTable
from tessellate.placement.timeslice import routes

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw) -> tuple[Placer, list[Request]]:
    """A placer over a cluster some pods already run on, and a pool of requests to ask about."""
    kinds = draw(flavours)
    state = ClusterState(draw(node_lists(kinds)))
    pool = draw(request_pools(kinds, max_size=6))
    target = TargetWorkload.from_requests([r for r in pool if not r.is_mig] or [Request(cpu_milli=0)])
    policy = draw(st.sampled_from(["bestfit", "fgd", "packing"]))
    context = PolicyContext(rng=NumpyInts(0), target=target)
    placer = Placer(state, create_policy(policy, context), MigChooser())
    steps = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 99)), max_size=20))
    for step, (place, i) in enumerate(steps):
        if place or not state.live:
            decision = placer.place(f"p{step}", pool[i % len(pool)])
            if isinstance(decision, Assignment):
                state.allocate(decision)
        else:
            state.release(sorted(state.live)[i % len(state.live)])
    return placer, pool


@PROPERTY
@given(scene=scenes(), data=st.data())
def test_rows_of_requests_answer_as_each_request_does(scene, data):
    placer, pool = scene
    state = placer.state
    nodes = np.array(sorted(data.draw(st.sets(st.integers(0, len(state) - 1), min_size=1))))
    for _, group in state.replica_groups:
        table = RequestTable(state, rows=2)  # small, so that adding rows regrows it
        asked = []
        for r in pool:
            there = next(t for g, t in routes(state, r) if g is group)
            table.add(there)
            asked.append(there)
        here = nodes[group[nodes]]
        got = table.fits(np.arange(len(pool)), here)
        for row, there in enumerate(asked):
            expected = np.zeros(len(here), dtype=bool) if there is None else feasible_mask(state, there, here)
            assert got[row].tolist() == expected.tolist(), there


@PROPERTY
@given(scene=scenes())
def test_placer_fits_exactly_where_place_would_assign(scene):
    placer, pool = scene
    for r in pool:
        fits = placer.fits(r)
        decision = placer.place("probe", r)
        assert isinstance(decision, Assignment) == bool(fits.any()), r
        if isinstance(decision, Assignment):
            assert fits[decision.node]
            for node in np.flatnonzero(fits).tolist():  # every node it fits is one place can use
                one = np.zeros(len(placer.state), dtype=bool)
                one[node] = True
                assert isinstance(placer.place("probe", r, eligible=one), Assignment)


@PROPERTY
@given(scene=scenes())
def test_a_node_is_blamed_exactly_when_the_mask_rejects_it(scene):
    placer, pool = scene
    state = placer.state
    for r in pool:
        mask = feasible_mask(state, r)
        for node in range(len(state)):
            one = np.zeros(len(state), dtype=bool)
            one[node] = True
            assert (not explain(state, r, one).reasons) == bool(mask[node]), (r, node)


@PROPERTY
@given(scene=scenes())
def test_allocate_refuses_every_device_choice_on_a_rejected_node(scene):
    placer, pool = scene
    state = placer.state
    for r in (r for r in pool if not r.is_mig):  # MIG instances are the MIG book's to refuse
        mask = feasible_mask(state, r)
        for node in np.flatnonzero(~mask).tolist():
            gpus = tuple(int(g) for g in np.argsort(-state.gpu_left[node], kind="stable")[: r.gpu_count])
            if len(gpus) < r.gpu_count:
                continue  # not even that many GPUs to name
            with pytest.raises(OverCommitError):
                state.allocate(Assignment("probe", node, state.names[node], r, gpus))


@PROPERTY
@given(scene=scenes())
def test_a_request_that_needs_at_least_another_fits_only_where_that_one_fits(scene):
    placer, pool = scene
    state = placer.state
    for big in pool:
        for small in pool:
            if needs_at_least(big, small):
                assert not (feasible_mask(state, big) & ~feasible_mask(state, small)).any(), (big, small)
            if placer.needs_at_least(big, small):
                assert not (placer.fits(big) & ~placer.fits(small)).any(), (big, small)


def test_needs_at_least_compares_gpu_memory_and_time_slices():
    def share(milli: int, mib: int = 0) -> Request:
        return Request(cpu_milli=1000, gpu_count=1, gpu_milli=milli, gpu_memory_mib=mib)

    whole = Request(cpu_milli=1000, gpu_count=1, gpu_milli=1000)
    assert needs_at_least(share(400, 4096), share(200, 2048))
    assert not needs_at_least(share(400, 2048), share(200, 8192))  # less GPU memory: may fit
    assert needs_at_least(whole, share(300))  # a free GPU has the milli and a sharer slot
    assert not needs_at_least(whole, share(300, 2048))  # but maybe less memory than asked
    assert not needs_at_least(share(250), share(200))  # 250m is a slice of a 4-replica GPU
