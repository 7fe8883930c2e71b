"""`sim timed` equals the obvious replay that retries every pending pod at every event.

The real replay retries only after a release, only the requests that fit on the
released nodes, and skips a request when one needing no more has failed in the same
pass. None of that may change an outcome: the naive replay below (written on
`Placer` and `ClusterState` only) retries each pending pod, in arrival order, after
the departures and after the arrivals of every event time.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mixed_clusters import GIB, flavours, node_lists, request_pools
from tessellate.placement import (
    Assignment,
    ClusterState,
    MigChooser,
    NodeSpec,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    create_policy,
)
from tessellate.simulator.migmetrics import mig_demand
from tessellate.simulator.replay import target_workload
from tessellate.simulator.timed import PENDING, PLACED, TIMED_OUT, WITHDRAWN, run_timed
from tessellate.simulator.trace import PodRecord, Trace


def naive_replay(trace: Trace, policy: str, seed: int, max_wait: float | None) -> tuple[dict, dict]:
    """(outcome, start time) per pod, by brute force."""
    state = ClusterState(sorted(trace.nodes, key=lambda n: n.name))
    context = PolicyContext(rng=NumpyInts(seed), target=target_workload(trace))
    placer = Placer(state, create_policy(policy, context), MigChooser("aware", mig_demand(trace)))
    pods = [p for p in trace.pods if p.deletion_time != p.creation_time]
    times = {p.creation_time for p in pods} | {p.deletion_time for p in pods if p.deletion_time is not None}
    if max_wait is not None:
        times |= {p.creation_time + max_wait for p in pods}
    outcome: dict[str, str] = {}
    start: dict[str, float] = {}
    pending: list[PodRecord] = []

    def try_place(p: PodRecord, now: float) -> bool:
        decision = placer.place(p.name, p.request)
        if isinstance(decision, Assignment):
            state.allocate(decision)
            outcome[p.name], start[p.name] = PLACED, now
        return isinstance(decision, Assignment)

    def retry_all(now: float) -> None:
        for p in list(pending):
            if try_place(p, now):
                pending.remove(p)

    for now in sorted(times):
        for p in sorted((p for p in pods if p.deletion_time == now), key=lambda p: p.name):
            if p.name in state.live:
                state.release(p.name)
            elif p in pending:
                pending.remove(p)
                outcome[p.name] = WITHDRAWN
        retry_all(now)
        for p in sorted((p for p in pods if p.creation_time == now), key=lambda p: p.name):
            if not try_place(p, now):
                pending.append(p)
                outcome[p.name] = PENDING
        retry_all(now)
        for p in list(pending):
            if max_wait is not None and p.creation_time + max_wait <= now:
                pending.remove(p)
                outcome[p.name] = TIMED_OUT
    return outcome, start


@st.composite
def traces(draw) -> Trace:
    kinds = draw(flavours)
    nodes = draw(node_lists(kinds, max_size=3))
    pool = draw(request_pools(kinds))
    pods = []
    for i in range(draw(st.integers(2, 30))):
        created = float(draw(st.integers(0, 12)))
        lifetime = draw(st.integers(-1, 12))  # below 0: runs forever
        deleted = None if lifetime < 0 else created + lifetime
        pods.append(PodRecord(f"p{i:02d}", pool[draw(st.integers(0, len(pool) - 1))], created, deleted))
    return Trace("random", tuple(nodes), tuple(pods))


GPU = Request(cpu_milli=1000, gpu_count=1, gpu_milli=1000)


def share(milli: int, gib: int) -> Request:
    return Request(cpu_milli=1000, gpu_count=1, gpu_milli=milli, gpu_memory_mib=gib * GIB)


SLICE_FREED = Trace(
    "slice-freed",
    (NodeSpec("s", 4000, 65536, 1, "T4", gpu_replicas=2),),
    (PodRecord("a", GPU, 0, 100), PodRecord("b", GPU, 0, 300), PodRecord("c", GPU, 10, 300)),
)
"""c waits for a slice; a's departure frees one while b still holds the other."""
MEMORY_BOUND = Trace(
    "memory-bound",
    (NodeSpec("m", 8000, 65536, 1, "A10", gpu_memory_mib=16 * GIB),),
    (
        PodRecord("h", share(300, 10), 0),
        PodRecord("a", share(600, 1), 0, 100),
        PodRecord("p", share(200, 8), 10),
        PodRecord("q", share(400, 2), 20),
    ),
)
"""At 100 p fails on GPU memory, and q, which asks more milli-GPU but less memory, fits."""


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(trace=SLICE_FREED, policy="bestfit", seed=0, max_wait=None)
@example(trace=MEMORY_BOUND, policy="bestfit", seed=0, max_wait=None)
@given(
    trace=traces(),
    policy=st.sampled_from(["bestfit", "fgd", "packing", "random"]),
    seed=st.integers(0, 3),
    max_wait=st.one_of(st.none(), st.integers(0, 10).map(float)),
)
def test_timed_replay_equals_retrying_every_pending_pod_at_every_event(trace, policy, seed, max_wait):
    result = run_timed(trace, policy, seed, max_wait=max_wait)
    outcome, start = naive_replay(trace, policy, seed, max_wait)
    assert result.outcome == outcome
    assert result.start_time == start
