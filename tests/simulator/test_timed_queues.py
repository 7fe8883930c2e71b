"""The queue-aware timed replay (simulator/queued.py) on hand-built traces whose outcome is known.

Borrowing, reclaim, limits, weights 1:3, per-model quota, pod groups, unknown queues,
the trace columns and the CLI (`sim timed --queues`, `sim compare --queues`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tessellate.placement import NodeSpec, Request
from tessellate.placement.quota import QueueTree, parse_queues
from tessellate.simulator.queued import PREEMPTED, run_queued
from tessellate.simulator.queuefile import QueueFileError, load_queue_file
from tessellate.simulator.timed import PENDING, PLACED, run_timed
from tessellate.simulator.trace import PodRecord, Trace, TraceError
from tessellate.simulator.traces.generic import load_pods, write_trace

from tessellate.cli import main

H100, A100 = "H100-80GB", "A100-80GB"


def gpus(n: int = 1, *models: str) -> Request:
    return Request(1000, 1024, n, 1000, tuple(models))


def nodes(count: int, model: str = H100) -> list[NodeSpec]:
    return [NodeSpec(f"{model[:4].lower()}-{i}", 64_000, 1 << 19, 8, model) for i in range(count)]


def queues(*entries: tuple) -> QueueTree:
    """`queues(("a", (H100, 16, 24, 1)), ("b", ...))`: (name, (model, quota[, limit[, weight]])...)."""
    docs = []
    for name, *resources in entries:
        rs = []
        for model, quota, *rest in resources:
            r = {"gpuModel": model, "quota": quota}
            if rest and rest[0] is not None:
                r["limit"] = rest[0]
            if len(rest) > 1:
                r["overQuotaWeight"] = rest[1]
            rs.append(r)
        docs.append({"name": name, "spec": {"resources": rs}})
    return QueueTree(parse_queues(docs))


def team(
    name: str,
    count: int,
    start: float,
    end: float | None,
    request: Request | None = None,
    spacing: float = 0.001,
    **kw,
) -> list[PodRecord]:
    request = request or gpus()
    return [PodRecord(f"{name}-{i:02d}", request, start + i * spacing, end, name, **kw) for i in range(count)]


def usage(result, queue: str, model: str = H100) -> np.ndarray:
    t = result.tenancy
    return t.usage[:, t.index(queue), t.models.index(model)]


def at(result, time: float) -> int:
    return int(np.searchsorted(result.tenancy.time, time, side="right") - 1)


def test_borrowing_then_reclaim_takes_exactly_the_borrowed_youngest_pods() -> None:
    pods = team("a", 32, 0, 1000) + team("b", 4, 100, 500, gpus(4))
    result = run_queued(
        Trace("t", tuple(nodes(4)), tuple(pods)),
        "bestfit",
        queues=queues(("a", (H100, 16)), ("b", (H100, 16))),
    )
    assert usage(result, "a")[at(result, 50)] == 32  # a borrows the idle cluster
    assert usage(result, "a")[at(result, 101)] == 16 and usage(result, "b")[at(result, 101)] == 16
    victims = sorted(v for e in result.tenancy.reclaims for v in e.victims)
    assert victims == [f"a-{i:02d}" for i in range(16, 32)]  # the youngest 16, a's borrowed GPUs
    assert all(q == "a" for e in result.tenancy.reclaims for q in e.victim_queues)
    assert len(result.tenancy.reclaims) == 4 and result.tenancy.preempted == {"a": 16}
    assert all(result.start_time[f"b-{i:02d}"] == 100 + i * 0.001 for i in range(4))  # at once
    assert usage(result, "a")[at(result, 600)] == 32  # a's preempted pods come back when b leaves
    assert result.tenancy.restarted == 16
    assert result.summary()["reclaims"] == 4 and result.summary()["preempted"] == 16


def test_no_reclaim_leaves_the_queue_below_quota_waiting() -> None:
    pods = team("a", 32, 0, 1000) + team("b", 4, 100, 500, gpus(4))
    tree = queues(("a", (H100, 16)), ("b", (H100, 16)))
    result = run_queued(Trace("t", tuple(nodes(4)), tuple(pods)), "bestfit", queues=tree, reclaim=False)
    assert usage(result, "b").max() == 0 and not result.tenancy.reclaims
    assert result.reasons["b-00"].startswith("queue b: within quota 16 nvidia.com/gpu (H100-80GB) (0 in use")


def test_limit_holds_on_an_idle_cluster_and_says_why() -> None:
    pods = team("a", 32, 0, None, gpus(2))
    result = run_queued(
        Trace("t", tuple(nodes(8)), tuple(pods)), "bestfit", queues=queues(("a", (H100, 16, 24)))
    )
    assert usage(result, "a").max() == 24
    assert result.placed == 12 and result.pending_at_end == 20
    assert result.reasons["a-12"] == (
        "queue a: limit 24 nvidia.com/gpu (H100-80GB) reached (24 in use, pod asks 2)"
    )


def test_weights_one_to_three_split_the_idle_gpus_within_one_pod() -> None:
    pods = team("a", 40, 0, None, spacing=0) + team("b", 40, 0, None, spacing=0)  # contending
    tree = queues(("a", (H100, 4, None, 1)), ("b", (H100, 4, None, 3)))
    result = run_queued(Trace("t", tuple(nodes(4)), tuple(pods)), "bestfit", queues=tree)
    a, b = usage(result, "a")[-1], usage(result, "b")[-1]
    assert a + b == 32
    assert abs(a - (4 + 6)) <= 1 and abs(b - (4 + 18)) <= 1  # 24 idle GPUs split 1:3
    fair = result.tenancy.fair[-1, :, 0]
    assert fair[result.tenancy.index("a")] == 10 and fair[result.tenancy.index("b")] == 22


def test_per_model_quota_does_not_protect_borrowed_gpus_of_another_model() -> None:
    cluster = tuple(nodes(2, H100) + nodes(2, A100))
    pods = team("a", 32, 0, 1000) + team("b", 16, 100, 500, gpus(1, A100))
    tree = queues(("a", (H100, 16), (A100, 0)), ("b", (A100, 16)))
    result = run_queued(Trace("t", cluster, tuple(pods)), "bestfit", queues=tree)
    assert usage(result, "a", H100)[at(result, 50)] == 16 and usage(result, "a", A100)[at(result, 50)] == 16
    assert usage(result, "a", H100)[at(result, 101)] == 16  # its H100 quota is untouched
    assert usage(result, "a", A100)[at(result, 101)] == 0 and usage(result, "b", A100)[at(result, 101)] == 16
    assert {e.model for e in result.tenancy.reclaims} == {A100}
    limited = queues(("a", (H100, 16), (A100, 0, 4)), ("b", (A100, 16)))
    capped = run_queued(Trace("t", cluster, tuple(team("a", 32, 0, None))), "bestfit", queues=limited)
    assert usage(capped, "a", H100)[-1] == 16 and usage(capped, "a", A100).max() == 4


def test_siblings_reclaim_inside_their_parent_but_not_across_it() -> None:
    docs = [
        {"name": "org", "spec": {"resources": [{"gpuModel": H100, "quota": 8}]}},
        {"name": "x", "spec": {"parent": "org", "resources": [{"gpuModel": H100, "quota": 2}]}},
        {"name": "y", "spec": {"parent": "org", "resources": [{"gpuModel": H100, "quota": 6}]}},
        {"name": "z", "spec": {"resources": [{"gpuModel": H100, "quota": 8}]}},
    ]
    tree = QueueTree(parse_queues(docs))
    pods = team("x", 8, 0, 1000) + team("z", 8, 0, 1000) + team("y", 2, 100, 500)
    result = run_queued(Trace("t", tuple(nodes(2)), tuple(pods)), "bestfit", queues=tree)
    assert usage(result, "org")[at(result, 50)] == 8 and usage(result, "z")[at(result, 50)] == 8
    assert usage(result, "y")[at(result, 101)] == 2 and usage(result, "x")[at(result, 101)] == 6
    assert {q for e in result.tenancy.reclaims for q in e.victim_queues} == {"x"}  # never z: within quota
    with pytest.raises(
        TraceError, match="pod group 'g': members in queues x, y; a group belongs to one queue"
    ):
        bad = [
            PodRecord("g0", gpus(), 0, 1, "x", pod_group="g"),
            PodRecord("g1", gpus(), 0, 1, "y", pod_group="g"),
        ]
        run_queued(Trace("t", tuple(nodes(1)), tuple(bad)), "bestfit", queues=tree)


def test_within_a_queue_priority_then_arrival() -> None:
    pods = [PodRecord("hold", gpus(8), 0, 100, "a", priority=9)]  # outranks both: never preempted
    pods += [PodRecord(f"low-{i}", gpus(8), 10 + i, None, "a", priority=0) for i in range(2)]
    pods += [PodRecord("high", gpus(8), 20, None, "a", priority=5)]
    result = run_queued(Trace("t", tuple(nodes(1)), tuple(pods)), "bestfit", queues=queues(("a", (H100, 8))))
    assert result.start_time["high"] == 100 and result.outcome["low-0"] == PENDING


def test_pod_groups_start_whole_or_not_at_all() -> None:
    blocker = [PodRecord("blocker", gpus(3), 0, 100, "a")]
    gang = [PodRecord(f"g-{i}", gpus(2), 10, 1000, "a", pod_group="g", pod_group_min=3) for i in range(3)]
    late = [PodRecord("g-3", gpus(2), 200, 1000, "a", pod_group="g", pod_group_min=3)]
    result = run_queued(
        Trace("t", tuple(nodes(1)), tuple(blocker + gang + late)), "bestfit", queues=queues(("a", (H100, 8)))
    )
    # 5 GPUs free at t=10: two members would fit, three do not; the group waits whole
    assert all(result.start_time[f"g-{i}"] == 100 for i in range(3))
    assert result.start_time["g-3"] == 200  # joins the running group alone
    assert result.tenancy.groups_started == 1 and result.tenancy.group_rollbacks >= 1


def test_group_members_are_charged_as_a_whole_against_the_limit() -> None:
    gang = [PodRecord(f"g-{i}", gpus(2), 0, None, "a", pod_group="g") for i in range(4)]  # 8 GPUs
    result = run_queued(
        Trace("t", tuple(nodes(2)), tuple(gang)), "bestfit", queues=queues(("a", (H100, 0, 6)))
    )
    assert usage(result, "a").max() == 0 and result.placed == 0  # 8 > limit 6: none of it runs
    assert "limit 6 nvidia.com/gpu (H100-80GB) reached" in result.reasons["g-3"]


def test_unknown_queue_waits_with_a_specific_reason() -> None:
    pods = [PodRecord("x", gpus(), 0, None, "nope"), PodRecord("y", gpus(), 0, None)]
    result = run_queued(Trace("t", tuple(nodes(1)), tuple(pods)), "bestfit", queues=queues(("a", (H100, 1))))
    assert result.outcome["x"] == PENDING and result.outcome["y"] == PLACED  # y: the default queue
    assert result.reasons["x"] == "queue 'nope' does not exist; create it or fix the pod's label"
    assert result.tenancy.unknown_queue == {"nope": 1}


def test_preempted_pods_that_never_restart_are_counted_apart() -> None:
    pods = team("a", 8, 0, 300) + team("b", 8, 100, 1000)
    result = run_queued(
        Trace("t", tuple(nodes(1)), tuple(pods)), "bestfit", queues=queues(("a", (H100, 0)), ("b", (H100, 8)))
    )
    assert sum(o == PREEMPTED for o in result.outcome.values()) == 8  # a's pods leave at 300, still waiting
    assert result.placed + result.never_placed == len(result.outcome)


def test_without_queues_the_plain_replay_is_unchanged() -> None:
    pods = team("a", 12, 0, 100) + team("b", 4, 50, 200)
    trace = Trace(
        "t",
        tuple(nodes(1)),
        tuple(PodRecord(p.name, p.request, p.creation_time, p.deletion_time) for p in pods),
    )
    plain = run_timed(trace, "bestfit")
    assert plain.tenancy is None and "reclaims" not in plain.summary()


# --- the trace columns, the queues file and the CLI ----------------------------------------------


def test_generic_trace_round_trips_the_tenancy_columns(tmp_path: Path) -> None:
    pods = (
        PodRecord("p0", gpus(2), 0.0, 10.0, "team-a", 7, "job-1", 2),
        PodRecord("p1", gpus(2), 1.0, None, "", -3),
    )
    write_trace(Trace("t", tuple(nodes(1)), pods), tmp_path / "n.csv", tmp_path / "p.csv")
    assert load_pods(tmp_path / "p.csv") == pods
    plain = (PodRecord("q", gpus(), 0.0, 1.0),)
    write_trace(Trace("t", tuple(nodes(1)), plain), tmp_path / "n2.csv", tmp_path / "p2.csv")
    assert "queue" not in (tmp_path / "p2.csv").read_text().splitlines()[0]  # old traces stay as they were


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("Team_A,0,,", "column 'queue': 'Team_A' is not a queue name"),
        ("a,x,,", "column 'priority': expected an integer, got 'x'"),
        ("a,0,,2", "column 'pod_group_min': given for a pod without a pod_group"),
        ("a,0,g,-1", "column 'pod_group_min': must be >= 0, got -1"),
    ],
)
def test_bad_tenancy_cells_name_line_and_column(tmp_path: Path, cells: str, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        f"name,cpu_milli,memory_mib,gpu_count,gpu_milli,queue,priority,pod_group,pod_group_min\np,1,1,0,,{cells}\n"
    )
    with pytest.raises(TraceError, match=message):
        load_pods(path)


def test_queue_file_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    with pytest.raises(QueueFileError, match=r"q\.yaml: no such file"):
        load_queue_file(path)
    path.write_text("- name: a\n  spec: {resources: [{gpuModel: H100, quota: 2}]}\n")
    with pytest.raises(
        QueueFileError, match=r"q.yaml: queue a: spec.resources\[0\].gpuModel: unknown GPU model 'H100'"
    ):
        load_queue_file(path)
    path.write_text("- name: a\n  spec: [\n")
    with pytest.raises(QueueFileError, match=r"q\.yaml, line 3: not valid YAML"):
        load_queue_file(path)
    path.write_text("- name: a\n  spec: {parent: b}\n")
    with pytest.raises(QueueFileError, match=r"queue a: spec\.parent: unknown queue 'b'"):
        load_queue_file(path)
    path.write_text("---\n- name: a\n---\nname: b\n")
    assert set(load_queue_file(path)) == {"a", "b", "default"}


def test_cli_timed_and_compare_with_queues(tmp_path: Path, capsys) -> None:
    even = [
        {"name": "inference", "spec": {"resources": [{"gpuModel": A100, "quota": 8}]}},
        {"name": "training", "spec": {"resources": [{"gpuModel": H100, "quota": 8}]}},
        {"name": "batch", "spec": {"resources": [{"gpuModel": "*", "quota": 4}]}},
    ]
    heavy = [
        {"name": "inference", "spec": {"resources": [{"gpuModel": A100, "quota": 4}]}},
        {"name": "training", "spec": {"resources": [{"gpuModel": H100, "quota": 16, "overQuotaWeight": 3}]}},
        {"name": "batch", "spec": {"resources": [{"gpuModel": A100, "quota": 4, "limit": 8}]}},
    ]
    (tmp_path / "even.yaml").write_text(yaml.safe_dump(even))
    (tmp_path / "heavy.yaml").write_text(yaml.safe_dump(heavy))
    common = ["--synthetic-kind", "multi-tenant", "--synthetic-scale", "0.25"]
    out = tmp_path / "timed"
    assert main(["sim", "timed", *common, "--queues", str(tmp_path / "even.yaml"), "--out", str(out)]) == 0
    for name in ("queues.csv", "queue_timeseries.csv", "reclaims.csv", "queues.html", "queues-H100-80GB.png"):
        assert (out / name).is_file(), name
    assert "per queue and GPU model" in capsys.readouterr().out
    cmp = tmp_path / "cmp"
    args = ["sim", "compare", *common, "--policies", "bestfit", "--queues", str(tmp_path / "even.yaml")]
    assert main([*args, "--queues", str(tmp_path / "heavy.yaml"), "--out", str(cmp)]) == 0
    html = (cmp / "queues.html").read_text()
    assert "even" in html and "heavy" in html
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: a\n  spec: {resources: [{gpuModel: '*', quota: 4, limit: 2}]}\n")
    assert main(["sim", "timed", *common, "--queues", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "queue a: spec.resources[0].limit: limit 2 is below quota 4" in capsys.readouterr().err


# --- a property: random traces never break a limit, and every pod is accounted for -------------


@st.composite
def tenant_traces(draw: st.DrawFn) -> tuple[Trace, QueueTree]:
    names = ["a", "b", "c"]
    entries = []
    for name in names:
        quota = draw(st.integers(0, 6))
        limit = draw(st.one_of(st.none(), st.integers(quota, 12)))
        entries.append((name, (H100, quota, limit, draw(st.integers(0, 3)))))
    shapes = [gpus(1), gpus(2), gpus(4), Request(1000, 1024, 1, 500)]
    pods = []
    for i in range(draw(st.integers(5, 40))):
        start = float(draw(st.integers(0, 50)))
        end = draw(st.one_of(st.none(), st.integers(int(start) + 1, 120).map(float)))
        group = draw(st.sampled_from(["", "", "", "g1", "g2"]))
        queue = "a" if group == "g1" else "b" if group == "g2" else draw(st.sampled_from([*names, ""]))
        pods.append(
            PodRecord(
                f"p{i:02d}", draw(st.sampled_from(shapes)), start, end, queue, draw(st.integers(0, 2)), group
            )
        )
    return Trace("rand", tuple(nodes(2)), tuple(pods)), queues(*entries)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenant_traces())
def test_random_replays_never_break_a_limit(case: tuple[Trace, QueueTree]) -> None:
    trace, tree = case
    result = run_queued(trace, "bestfit", queues=tree)
    t = result.tenancy
    event("reclaimed" if t.reclaims else "no reclaim")
    event("group started" if t.groups_started else "no group")
    assert np.all(t.usage <= t.limit[None, :, :] + 1e-9)
    assert result.placed + result.never_placed == len(result.outcome)  # preempted pods count as placed
    assert np.all(t.usage.sum(axis=1)[:, 0] <= 16 + 1e-9)


# -- priority preemption (the live scheduler's rule: within a queue) --------------------------


def test_a_higher_priority_pod_preempts_the_youngest_lower_priority_pod_of_its_queue() -> None:
    low = team("a", 2, 0, 100, gpus(4), priority=0)
    high = [PodRecord("urgent", gpus(4), 10, 50, "a", priority=10)]
    result = run_queued(
        Trace("t", tuple(nodes(1)), tuple(low + high)), "bestfit", queues=queues(("a", (H100, 8)))
    )
    assert result.start_time["urgent"] == 10  # at once, by preempting
    assert result.tenancy.priority_preemptions == 1 and result.tenancy.preempted == {"a": 1}
    assert result.tenancy.restarted == 1 and usage(result, "a")[at(result, 60)] == 8  # a-01 is back


def test_priority_never_preempts_across_queues_only_reclaim_does() -> None:
    low = team("a", 2, 0, 100, gpus(4), priority=0)
    high = [PodRecord("urgent", gpus(4), 10, 50, "b", priority=10)]
    tree = queues(("a", (H100, 8)), ("b", (H100, 0)))  # b has no quota: it may not reclaim either
    result = run_queued(Trace("t", tuple(nodes(1)), tuple(low + high)), "bestfit", queues=tree)
    assert "urgent" not in result.start_time or result.start_time["urgent"] >= 100
    assert result.tenancy.priority_preemptions == 0 and not result.tenancy.preempted


def test_a_trace_with_priorities_alone_goes_through_the_queued_replay() -> None:
    from tessellate.simulator.queued import needs_queues

    low = team("", 2, 0, 100, gpus(4), priority=0)
    plain = Trace("t", tuple(nodes(1)), tuple(low))
    assert not needs_queues(plain)
    assert needs_queues(
        Trace("t", tuple(nodes(1)), (*low, PodRecord("urgent", gpus(4), 10, 50, "", priority=10)))
    )
