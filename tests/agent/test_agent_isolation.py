"""The agent never hands a pod another pod's GPU, share or MIG device, whatever pods write on themselves.

Unit checks through Claims (pods from an in-memory list, as in test_agent_claims.py), a
property over random pods, forged annotations and admission orders, and the init-container
shapes the scheduler accepts (a fraction in one phase, whole GPUs in another).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tessellate.agent.claims import ALLOCATED, Claim, ClaimError, Claims
from tessellate.agent.devices import GPU, GPU_MILLI, gpu_of, milli_id
from tessellate.agent.inventory import Gpu, MigDevice
from test_agent_claims import UUIDS, Pods, claims, pod, serve

FOREIGN = "default-scheduler"
RUNNING = {"phase": "Running"}


def started(p: dict[str, Any], *names: str) -> dict[str, Any]:
    """The pod as the kubelet reports it once these containers were created."""
    statuses = [{"name": n, "containerID": f"containerd://{n}"} for n in names]
    p["status"] = {"phase": "Running", "containerStatuses": statuses}
    return p


def allocated(p: dict[str, Any], record: dict[str, list[str]]) -> dict[str, Any]:
    p["metadata"]["annotations"][ALLOCATED] = json.dumps(record)
    return p


def find(c: Claims, resource: str, ids: list[str]) -> Claim:
    return c.find(resource, ids, gpu_of, candidates=UUIDS)


# ---------------------------------------------------------------------------------------------
# Trust: whose assignment counts


def test_a_forged_assignment_on_a_foreign_pod_gets_no_victim_gpu() -> None:
    victim = pod("victim", {"gpus": [{"index": 2}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z")
    attacker = pod("attacker", {"gpus": [{"index": 2, "uuid": "GPU-2"}]}, [{GPU: "1"}],
                   created="2026-01-01T00:00:05Z", scheduler=FOREIGN)  # fmt: skip
    c = claims(victim, attacker)
    assert serve(c, GPU, ["GPU-0"]).uuids == ("GPU-2",)
    got = find(c, GPU, ["GPU-0"])
    assert (got.pod, got.uuids, got.assigned) == ("attacker", ("GPU-0",), False)
    moved = find(c, GPU, ["GPU-2"])  # a kubelet whose own bookkeeping points at the victim's GPU
    assert moved.uuids != ("GPU-2",) and not moved.assigned


def test_a_forged_assignment_on_a_foreign_pod_asking_a_fraction_is_refused() -> None:
    attacker = pod(
        "attacker", {"gpus": [{"index": 1, "milli": 100}]}, [{GPU_MILLI: "100"}], scheduler=FOREIGN
    )
    with pytest.raises(
        ClaimError, match=r"is not a Tessellate pod \(spec.schedulerName is 'default-scheduler'"
    ):
        claims(attacker).find(GPU_MILLI, ["GPU-0::000"] * 100, gpu_of)


def test_the_scheduler_name_is_configurable() -> None:
    p = pod("p", {"gpus": [{"index": 3}]}, [{GPU: "1"}], scheduler="gpu-sched")
    assert serve(claims(p), GPU, ["GPU-0"]).uuids == ("GPU-0",)  # not trusted under the default
    mine = Claims(Pods(p), lambda i: UUIDS[i] if i < len(UUIDS) else None, scheduler_name="gpu-sched")
    assert serve(mine, GPU, ["GPU-0"]).uuids == ("GPU-3",)


# ---------------------------------------------------------------------------------------------
# Never twice: assigned pods are refused, unassigned ones moved


def test_a_tessellate_pod_whose_assignment_names_a_gpu_another_live_pod_holds_is_refused() -> None:
    holder = started(pod("x", {"gpus": [{"index": 3}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z"), "c0")
    allocated(holder, {"c0": ["GPU-3"]})
    late = pod(
        "late", {"gpus": [{"index": 3, "uuid": "GPU-3"}]}, [{GPU: "1"}], created="2026-01-01T00:00:09Z"
    )
    with pytest.raises(ClaimError) as refused:
        find(claims(holder, late), GPU, ["GPU-0"])
    assert str(refused.value) == (
        "pod ns/late: GPU 3 (GPU-3) is already held by pod ns/x as a whole GPU; refusing to hand it "
        "out twice; delete and recreate this pod so the scheduler places it again"
    )


def test_a_pending_tessellate_pod_holds_its_assignment_against_other_pods() -> None:
    pending = pod("pending", {"gpus": [{"index": 1, "milli": 300}]}, [{GPU_MILLI: "300"}],
                  created="2026-01-01T00:00:00Z")  # fmt: skip
    whole = pod("whole", {"gpus": [{"index": 1}]}, [{GPU: "1"}], created="2026-01-01T00:00:09Z")
    with pytest.raises(ClaimError, match=r"GPU 1 \(GPU-1\) is already held by pod ns/pending \(300 milli\)"):
        find(claims(pending, whole), GPU, ["GPU-0"])


def test_an_unassigned_pod_whose_kubelet_pick_collides_is_given_a_free_gpu() -> None:
    whole = started(
        pod("whole", {"gpus": [{"index": 0}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z"), "c0"
    )
    part = pod("part", {"gpus": [{"index": 1, "milli": 200}]}, [{GPU_MILLI: "200"}],
               created="2026-01-01T00:00:01Z")  # fmt: skip
    foreign = pod("foreign", None, [{GPU: "2"}], created="2026-01-01T00:00:09Z", scheduler=FOREIGN)
    c = claims(allocated(whole, {"c0": ["GPU-0"]}), part, foreign)
    c.served(c.find(GPU_MILLI, ["GPU-3::000"] * 200, gpu_of))
    got = find(c, GPU, ["GPU-0", "GPU-2"])
    assert (got.pod, got.uuids) == ("foreign", ("GPU-2", "GPU-3"))
    c.served(got)
    another = pod("another", None, [{GPU: "1"}], created="2026-01-01T00:00:10Z", scheduler=FOREIGN)
    c.source.items.append(another)  # type: ignore[attr-defined]
    with pytest.raises(
        ClaimError, match=r"GPU 0 \(GPU-0\) is already held by pod ns/whole as a whole GPU and"
    ):
        find(c, GPU, ["GPU-0"])


def test_a_fraction_over_what_is_left_of_its_gpu_is_refused() -> None:
    first = pod(
        "a", {"gpus": [{"index": 1, "milli": 700}]}, [{GPU_MILLI: "700"}], created="2026-01-01T00:00:00Z"
    )
    second = pod(
        "b", {"gpus": [{"index": 1, "milli": 400}]}, [{GPU_MILLI: "400"}], created="2026-01-01T00:00:05Z"
    )
    c = claims(first)
    serve(c, GPU_MILLI, ["GPU-0::000"] * 700)
    c.source.items.append(second)  # type: ignore[attr-defined]  # bound later, by a confused scheduler
    with pytest.raises(ClaimError) as refused:
        c.find(GPU_MILLI, ["GPU-0::000"] * 400, gpu_of)
    assert (
        "GPU 1 (GPU-1) has 700 of its 1000 milli held by pod ns/a (700 milli), and this pod needs 400"
        in str(refused.value)
    )
    fits = pod(
        "c", {"gpus": [{"index": 1, "milli": 300}]}, [{GPU_MILLI: "300"}], created="2026-01-01T00:00:06Z"
    )
    second["status"]["phase"] = "Failed"  # the kubelet failed it with that message
    c.source.items.append(fits)  # type: ignore[attr-defined]
    assert serve(c, GPU_MILLI, ["GPU-0::000"] * 300).uuids == ("GPU-1",)


def test_a_finished_pod_holds_nothing_and_a_deleting_one_still_does() -> None:
    done = started(pod("done", {"gpus": [{"index": 1}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z"), "c0")
    done["status"]["phase"] = "Succeeded"
    leaving = started(
        pod("leaving", {"gpus": [{"index": 2}]}, [{GPU: "1"}], created="2026-01-01T00:00:01Z"), "c0"
    )
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    pods = [allocated(done, {"c0": ["GPU-1"]}), allocated(leaving, {"c0": ["GPU-2"]})]
    c = claims(*pods)
    held = c.holdings(pods)
    assert (held.holders("GPU-1"), [h.pod for h in held.holders("GPU-2")]) == ([], ["ns/leaving"])
    late = pod("late", {"gpus": [{"index": 1}]}, [{GPU: "1"}], created="2026-01-01T00:00:09Z")
    c.source.items.append(late)  # type: ignore[attr-defined]
    assert serve(c, GPU, ["GPU-0"]).uuids == ("GPU-1",)


def test_a_forged_allocated_annotation_on_a_foreign_unstarted_pod_blocks_nothing() -> None:
    forger = pod("forger", None, [{GPU: "2"}], created="2026-01-01T00:00:00Z", scheduler=FOREIGN)
    allocated(forger, {"c0": ["GPU-1", "GPU-2"]})
    victim = pod("victim", {"gpus": [{"index": 1}]}, [{GPU: "1"}], created="2026-01-01T00:00:05Z")
    c = claims(forger, victim)
    assert c.holdings([forger, victim]).holders("GPU-2") == []
    assert serve(c, GPU, ["GPU-0"]).uuids == ("GPU-1",)
    # Once the kubelet reports the container started, it counts (an agent served it before us),
    # but never for more GPUs than the container asks for.
    started(forger, "c0")
    allocated(forger, {"c0": ["GPU-2", "GPU-3", "GPU-0"]})
    assert sorted(c.holdings([forger]).held) == ["GPU-2", "GPU-3"]


# ---------------------------------------------------------------------------------------------
# Init containers: a fraction in one phase, whole GPUs in another


def test_an_init_fraction_runs_on_the_first_of_the_pods_whole_gpus() -> None:
    p = pod("p", {"gpus": [{"index": 3}, {"index": 1}]}, [{GPU: "2"}], init=[{GPU_MILLI: "300"}])
    c = claims(p)
    first = serve(c, GPU_MILLI, ["GPU-0::000"] * 300)
    assert (first.container, first.uuids, first.milli) == ("i0", ("GPU-3",), 300)
    assert serve(c, GPU, ["GPU-0", "GPU-1"]).uuids == ("GPU-3", "GPU-1")  # not refused over its own init


def test_an_app_fraction_runs_on_the_first_gpu_of_an_init_containers_whole_gpus() -> None:
    p = pod("p", {"gpus": [{"index": 2}, {"index": 0}]}, [{GPU_MILLI: "250"}], init=[{GPU: "2"}],
            created="2026-01-01T00:00:00Z")  # fmt: skip
    other = pod("other", {"gpus": [{"index": 2, "milli": 100}]}, [{GPU_MILLI: "100"}],
                created="2026-01-01T00:00:09Z")  # fmt: skip
    c = claims(p)
    assert serve(c, GPU, ["GPU-1", "GPU-3"]).uuids == ("GPU-2", "GPU-0")
    app = serve(c, GPU_MILLI, ["GPU-1::000"] * 250)
    assert (app.container, app.uuids, app.milli) == ("c0", ("GPU-2",), 250)
    c.source.items.append(other)  # type: ignore[attr-defined]
    with pytest.raises(
        ClaimError, match=r"GPU 2 \(GPU-2\) has 1000 of its 1000 milli held by pod ns/p as a whole"
    ):
        c.find(GPU_MILLI, ["GPU-1::000"] * 100, gpu_of)


# ---------------------------------------------------------------------------------------------
# The property: random pods, forged annotations, random admission order

MIG_1G = "nvidia.com/mig-1g.10gb"
MIG_UUIDS = ["MIG-a", "MIG-b", "MIG-c"]
NODE = [Gpu(i, f"GPU-{i}", "NVIDIA A100-SXM4-80GB", 81920) for i in range(3)] + [
    Gpu(3, "GPU-3", "NVIDIA A100-SXM4-80GB", 81920, mig_enabled=True,
        mig=tuple(MigDevice(u, "1g.10gb", s, 9856) for s, u in enumerate(MIG_UUIDS)))
]  # fmt: skip
WHOLE_IDS = ["GPU-0", "GPU-1", "GPU-2"]
RESOURCES = (GPU, GPU_MILLI, MIG_1G)


class Recording(Pods):
    """Pods whose `record` writes the annotation, as KubePods does."""

    def record(self, claim: Claim) -> None:
        p = next(x for x in self.items if x["metadata"]["uid"] == claim.uid)
        served = json.loads(p["metadata"]["annotations"].get(ALLOCATED, "{}"))
        served[claim.container] = list(claim.uuids)
        p["metadata"]["annotations"][ALLOCATED] = json.dumps(served)


def _limits() -> st.SearchStrategy[dict[str, str]]:
    return st.one_of(
        st.just({}),
        st.integers(1, 2).map(lambda n: {GPU: str(n)}),
        st.integers(1, 9).map(lambda n: {GPU_MILLI: str(n * 100)}),
        st.integers(1, 2).map(lambda n: {MIG_1G: str(n)}),
    )


_SHARE = st.one_of(
    st.builds(
        lambda i, m: {"index": i, "milli": m}, st.integers(0, 3), st.sampled_from([100, 300, 500, 900, 1000])
    ),
    st.builds(lambda s: {"index": 3, "mig": "1g.10gb", "start": s}, st.integers(0, 2)),
)
_ANY_UUID = st.sampled_from([*WHOLE_IDS, "GPU-3", *MIG_UUIDS])


def _asks(containers: list[dict[str, str]], resource: str) -> int:
    return sum(int(c.get(resource, 0)) for c in containers)


@st.composite
def _assignment(draw: st.DrawFn, apps: list[dict[str, str]], init: list[dict[str, str]]) -> dict | None:
    """What the scheduler would write for these containers, or any (forged) list of shares."""
    everything = apps + init
    whole, milli, mig = (max(_asks(apps, r), _asks(init, r)) for r in RESOURCES)
    if draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(st.none(), st.lists(_SHARE, max_size=3).map(lambda g: {"gpus": g})))
    if mig:
        starts = draw(st.permutations(range(3)))[: min(mig, 3)]
        return {"gpus": [{"index": 3, "mig": "1g.10gb", "start": s} for s in starts]}
    if whole:
        return {"gpus": [{"index": i} for i in draw(st.permutations(range(3)))[: min(whole, 3)]]}
    if milli and _asks(everything, GPU_MILLI):
        return {"gpus": [{"index": draw(st.integers(0, 2)), "milli": min(milli, 1000)}]}
    return None


@st.composite
def node_pods(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n, when in enumerate(draw(st.permutations(range(draw(st.integers(1, 8)))))):
        apps = draw(st.lists(_limits(), min_size=1, max_size=2))
        init = draw(st.lists(_limits(), max_size=1))
        scheduler = draw(st.sampled_from(["tessellate", FOREIGN]))
        created = f"2026-01-01T00:00:{when:02d}Z"
        p = pod(f"p{n}", draw(_assignment(apps, init)), apps, init=init, created=created, scheduler=scheduler)
        if init and draw(st.integers(0, 3)) == 0:
            p["spec"]["initContainers"][0]["restartPolicy"] = "Always"  # a sidecar
        names = [c["name"] for c in p["spec"]["initContainers"] + p["spec"]["containers"]]
        if draw(st.integers(0, 2)) == 0:
            forged = st.dictionaries(st.sampled_from(names), st.lists(_ANY_UUID, max_size=3), max_size=2)
            allocated(p, draw(forged))
        if draw(st.integers(0, 3)) == 0:
            started(p, *names)  # admitted before this agent started
        out.append(p)
    return out


def _kubelet_pick(data: st.DataObject, resource: str, amount: int) -> list[str] | None:
    if resource == GPU_MILLI:
        gpu = data.draw(st.sampled_from(WHOLE_IDS))
        return [milli_id(gpu, k) for k in range(amount)]
    ids = WHOLE_IDS if resource == GPU else MIG_UUIDS
    return data.draw(st.permutations(ids))[:amount] if amount <= len(ids) else None


def _admit(c: Claims, p: dict[str, Any], data: st.DataObject, given: dict[tuple[str, str], Claim]) -> None:
    """The kubelet admitting one pod: every container, every resource, in order; Failed on a refusal."""
    for container in p["spec"]["initContainers"] + p["spec"]["containers"]:
        for resource, raw in container["resources"]["limits"].items():
            requested = _kubelet_pick(data, resource, int(raw))
            try:
                if requested is None:
                    raise ClaimError("the kubelet has too few devices")
                claim = c.find(resource, requested, gpu_of, WHOLE_IDS if resource == GPU else MIG_UUIDS)
                if resource != MIG_1G and "GPU-3" in claim.uuids:
                    raise ClaimError("in MIG mode")  # what the plugin's own check refuses
            except ClaimError:
                p["status"]["phase"] = "Failed"
                return
            assert claim.uid == p["metadata"]["uid"], "served one pod's container for another pod"
            c.served(claim)
            c.source.record(claim)
            given[claim.key] = claim
            _check(c.source.items, given)  # type: ignore[attr-defined]


def _check(pods: list[dict[str, Any]], given: dict[tuple[str, str], Claim]) -> None:
    """No GPU over 1000 milli at any moment, no whole GPU or MIG device with two pods."""
    load: dict[str, dict[str, int]] = {}
    for p in pods:
        if p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        uid = p["metadata"]["uid"]
        alone: dict[str, int] = {}
        together: dict[str, int] = {}
        for container in p["spec"]["initContainers"] + p["spec"]["containers"]:
            claim = given.get((uid, container["name"]))
            if claim is None:
                continue
            is_init = container in p["spec"]["initContainers"] and container.get("restartPolicy") != "Always"
            for uuid in set(claim.uuids):
                milli = claim.milli or 1000
                if is_init:
                    alone[uuid] = max(alone.get(uuid, 0), milli)
                else:
                    together[uuid] = together.get(uuid, 0) + milli
        for uuid in {*alone, *together}:
            load.setdefault(uuid, {})[uid] = max(alone.get(uuid, 0), together.get(uuid, 0))
    for uuid, by_pod in load.items():
        assert sum(by_pod.values()) <= 1000, f"{uuid} over its 1000 milli: {by_pod}"
        if uuid.startswith("MIG-") or 1000 in by_pod.values():
            assert len(by_pod) == 1, f"{uuid} handed to several pods: {by_pod}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node_pods(), st.data())
def test_random_pods_in_random_order_never_share_a_gpu_beyond_its_capacity(
    pods: list[dict[str, Any]], data: st.DataObject
) -> None:
    source = Recording(*pods)
    c = Claims(source, lambda i: f"GPU-{i}" if i < 4 else None, lambda i: NODE[i] if i < 4 else None)
    given_: dict[tuple[str, str], Claim] = {}
    for p in sorted(pods, key=lambda x: x["metadata"]["creationTimestamp"]):
        if p["status"].get("phase") != "Pending":
            continue  # admitted before this agent: the kubelet does not admit it again
        _admit(c, p, data, given_)
        live = [x for x in pods if x["status"].get("phase") not in ("Succeeded", "Failed")]
        if live and data.draw(st.integers(0, 3)) == 0:
            data.draw(st.sampled_from(live))["status"]["phase"] = "Succeeded"
