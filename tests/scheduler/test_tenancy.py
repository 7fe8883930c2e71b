"""Tenant queues in the live scheduler, driven cycle by cycle against an in-memory API.

Borrowing, reclaim, limits, weights, per-model quota, a queue that does not exist, a
malformed Queue, and usage rebuilt after a restart: the decisions are `placement.quota`'s,
the wiring (informer handlers, filter, PostFilter, queue order, events) is the scheduler's.
"""

from __future__ import annotations

from typing import Any

from tessellate.placement import Unschedulable
from tessellate.placement.quota import QUEUE_LABEL
from tessellate.scheduler.app import Scheduler
from tessellate.scheduler.config import SchedulerConfig
from tessellate.scheduler.tenancy import Tenancy
from test_framework import MemoryApi
from test_scheduler_cache import gpus, node, pod

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


class Api(MemoryApi):
    """Also records deletions (preemption and reclaim) and status patches."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []
        self.statuses: dict[str, dict] = {}

    def delete(self, path: str, body: dict | None = None) -> dict:
        self.deleted.append(path.rsplit("/", 1)[-1])
        return {}

    def patch(self, path: str, body: dict, **_: Any) -> dict:
        if "/queues/" in path:
            self.statuses[path.split("/")[-2]] = body["status"]
        return body


def queue(name: str, *resources: dict, parent: str | None = None) -> dict:
    spec: dict[str, Any] = {"resources": list(resources)}
    if parent:
        spec["parent"] = parent
    return {
        "apiVersion": "tessellate.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": spec,
    }


def gpu(model: str = "*", quota: float = 0, limit: float | None = None, weight: float = 1) -> dict:
    entry: dict[str, Any] = {"gpuModel": model, "quota": quota, "overQuotaWeight": weight}
    if limit is not None:
        entry["limit"] = limit
    return entry


class Cluster:
    """A scheduler fed by hand: nodes, Queues and pods in; bindings applied back as the API
    server would show them; deleted victims removed as a kubelet would."""

    def __init__(self, *nodes: dict, queues: tuple[dict, ...] = ()) -> None:
        self.api = Api()
        config = SchedulerConfig(
            bindAddress="127.0.0.1:0", podInitialBackoffSeconds=0.001, podMaxBackoffSeconds=0.001
        )
        config.leaderElection.leaderElect = False
        self.s = Scheduler(self.api, config)  # type: ignore[arg-type]
        self.s.leading.set()
        with self.s.cache.lock:
            for n in nodes:
                self.s.cache.upsert_node(n)
        self.s._replace_queues(list(queues))
        self.pods: dict[str, dict] = {}

    def submit(self, queue_name: str | None, prefix: str, count: int, size: int, **labels: str) -> None:
        for i in range(count):
            p = pod(f"{prefix}-{i}", gpus(size))
            p["metadata"]["labels"] = {QUEUE_LABEL: queue_name} if queue_name else {}
            self.pods[p["metadata"]["name"]] = p
            self.s._pod_event("ADDED", p)

    def run(self, rounds: int = 6) -> None:
        """Cycles until nothing is ready; bind results and victims' deletions fed back."""
        seen_bindings = seen_deleted = 0
        for _ in range(rounds):
            self.s._refresh_queues(publish=False)
            while (queued := self.s.queue.pop(timeout=0.05)) is not None:
                self.s.schedule_one(queued)
            self.s.binder.submit(lambda: None).result()  # let queued binds finish
            for b in self.api.bindings[seen_bindings:]:
                p = self.pods[b["metadata"]["name"]]
                p["spec"]["nodeName"] = b["target"]["name"]
                p["metadata"]["annotations"] = b["metadata"].get("annotations", {})
                self.s._pod_event("MODIFIED", p)
            for name in self.api.deleted[seen_deleted:]:
                if name in self.pods:
                    self.s._pod_event("DELETED", self.pods[name])
            if len(self.api.bindings) == seen_bindings and len(self.api.deleted) == seen_deleted:
                return
            seen_bindings, seen_deleted = len(self.api.bindings), len(self.api.deleted)

    def bound(self, prefix: str) -> list[str]:
        return sorted(
            n
            for n, p in self.pods.items()
            if n.startswith(prefix) and p["spec"]["nodeName"] and n not in self.api.deleted
        )

    def notes(self, reason: str) -> list[str]:
        return [e["note"] for e in self.api.events if e["reason"] == reason]

    def close(self) -> None:
        self.s.binder.shutdown(wait=True)
        self.s.recorder.close(wait=True)


def four_nodes(labels: dict | None = None, prefix: str = "n") -> list[dict]:
    return [node(f"{prefix}{i}", gpus=8, labels=labels) for i in range(4)]


def test_a_queue_borrows_idle_gpus_and_a_queue_within_quota_reclaims_exactly_what_was_borrowed() -> None:
    c = Cluster(*four_nodes(), queues=(queue("qa", gpu(quota=16)), queue("qb", gpu(quota=16))))
    c.submit("qa", "a", 8, 4)
    c.run()
    assert len(c.bound("a-")) == 8  # 32 of 32 GPUs: 16 borrowed while qb is idle
    c.submit("qb", "b", 4, 4)
    c.run(rounds=20)
    assert len(c.bound("b-")) == 4
    victims = sorted(set(c.api.deleted))
    assert len(victims) == 4 and all(v.startswith("a-") for v in victims)  # only borrowed pods
    assert len(c.bound("a-")) == 4  # qa keeps its quota
    assert len(c.notes("Reclaimed")) == 4 and all("Reclaimed by queue qb" in n for n in c.notes("Reclaimed"))
    c.close()


def test_a_limit_is_never_exceeded_even_on_an_idle_cluster_and_the_pod_says_why() -> None:
    c = Cluster(*four_nodes(), queues=(queue("qa", gpu(quota=8, limit=24)),))
    c.submit("qa", "a", 8, 4)
    c.run()
    assert len(c.bound("a-")) == 6
    expected = "queue qa: limit 24 nvidia.com/gpu (A100-80GB) reached (24 in use, pod asks 4)"
    assert any(expected in n for n in c.notes("FailedScheduling")), c.notes("FailedScheduling")
    c.close()


def test_queues_over_quota_share_idle_gpus_by_weight() -> None:
    c = Cluster(*four_nodes(), queues=(queue("qa", gpu(weight=1)), queue("qb", gpu(weight=3))))
    c.submit("qa", "a", 32, 1)
    c.submit("qb", "b", 32, 1)
    c.run()
    a, b = len(c.bound("a-")), len(c.bound("b-"))
    assert a + b == 32 and abs(a - 8) <= 1 and abs(b - 24) <= 1, (a, b)
    c.close()


def test_quota_and_limits_are_per_gpu_model() -> None:
    nodes = [*four_nodes(prefix="a100-")[:2], *four_nodes(labels=H100, prefix="h100-")[:2]]
    qa = queue("qa", gpu("H100-80GB", quota=16, limit=16), gpu("A100-80GB", quota=0, limit=4))
    c = Cluster(*nodes, queues=(qa,))
    c.submit("qa", "a", 8, 4)
    c.run()
    where = {c.pods[n]["spec"]["nodeName"][:4] for n in c.bound("a-")}
    assert len(c.bound("a-")) == 5 and where == {"h100", "a100"}  # 16 H100s, then 4 A100s
    assert any("limit 4 nvidia.com/gpu (A100-80GB) reached" in n for n in c.notes("FailedScheduling"))
    c.close()


def test_a_pod_naming_a_missing_queue_waits_with_a_specific_message_until_it_exists() -> None:
    c = Cluster(*four_nodes(), queues=(queue("qa", gpu(quota=8)),))
    c.submit("nope", "x", 1, 1)
    c.run()
    assert c.bound("x-") == []
    assert any("queue 'nope' does not exist" in n for n in c.notes("FailedScheduling"))
    c.s._queue_event("ADDED", queue("nope", gpu(quota=1)))
    c.run()
    assert c.bound("x-") == ["x-0"]
    c.close()


def test_a_malformed_queue_is_quarantined_and_the_others_keep_working() -> None:
    bad = queue("broken", {"gpuModel": "*", "quota": "lots"})
    c = Cluster(*four_nodes(), queues=(bad, queue("qa", gpu(quota=8, limit=8))))
    assert "broken" in c.s.cache.tenancy.problems
    c.submit("qa", "a", 4, 4)
    c.submit("broken", "b", 1, 1)
    c.run()
    assert len(c.bound("a-")) == 2 and c.bound("b-") == []
    assert any("queue 'broken' is not usable" in n for n in c.notes("FailedScheduling"))
    c.s._refresh_queues(publish=True)
    c.s.binder.submit(lambda: None).result()
    assert c.api.statuses["broken"]["conditions"][0]["status"] == "False"
    assert c.api.statuses["qa"]["allocated"] == {"A100-80GB": 8}
    c.close()


def test_a_restarted_scheduler_rebuilds_queue_usage_from_bound_pods() -> None:
    queues = (queue("qa", gpu(quota=8, limit=12)),)
    first = Cluster(*four_nodes(), queues=queues)
    first.submit("qa", "a", 2, 4)
    first.run()
    first.close()
    second = Cluster(*four_nodes(), queues=queues)
    for p in first.pods.values():  # what the new leader lists: the bound pods
        second.pods[p["metadata"]["name"]] = p
        second.s._pod_event("ADDED", p)
    second.submit("qa", "more", 2, 4)
    second.run()
    assert len(second.bound("more-")) == 1  # 8 held + 4 = the limit of 12
    with second.s.cache.lock:
        book = second.s.cache.tenancy.sync(second.s.cache)
        assert book is not None and book.usage("qa", "A100-80GB") == 12
    second.close()


def test_a_pod_within_quota_that_fits_nowhere_says_the_capacity_not_the_quota_is_missing() -> None:
    c = Cluster(node("n0", gpus=8), queues=(queue("qa", gpu(quota=16)),))
    c.submit("qa", "a", 1, 16)  # 16 GPUs asked: within quota 16, but no node has 16
    c.run()
    (note,) = {n for n in c.notes("FailedScheduling")}
    assert note.startswith("0/1 nodes are available")
    assert "Not the quota: queue qa is within its quota of 16 nvidia.com/gpu (A100-80GB)" in note
    from tessellate.scheduler.metrics import unschedulable_reasons

    assert "queue" not in unschedulable_reasons(note)  # the metric keeps the fit reasons
    c.close()


def test_the_incremental_book_equals_a_recount_after_any_placements_and_departures() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.tuples(st.booleans(), st.sampled_from(["qa", "qb", ""]), st.sampled_from([1, 2, 4])),
            max_size=30,
        )
    )
    def check(steps: list[tuple[bool, str, int]]) -> None:
        c = Cluster(*four_nodes(), queues=(queue("qa", gpu(quota=8)), queue("qb", gpu(quota=8))))
        cache, placed = c.s.cache, []
        with cache.lock:
            for i, (leave, name, size) in enumerate(steps):
                if leave and placed:
                    cache.forget(placed.pop(0))
                    continue
                p = pod(f"p{i}", gpus(size))
                p["metadata"]["labels"] = {QUEUE_LABEL: name} if name else {}
                rec, _ = cache.upsert_pod(p)
                result = cache.decide(rec)
                if not isinstance(result, Unschedulable):
                    placed.append(rec.uid)
                cache.tenancy.sync(cache)  # incremental, as every cycle does
            fresh = Tenancy(cache.scheduler_name)
            fresh.replace(list(c.s.cache.tenancy._objects.values()))
            recount = fresh.sync(cache)
            book = cache.tenancy.sync(cache)
            assert book is not None and recount is not None
            for q in ("qa", "qb", "default"):
                assert book.usage_by_model(q) == recount.usage_by_model(q)
        c.close()

    check()


def fenced(name: str, namespaces: list[str], quota: float = 8) -> dict:
    q = queue(name, gpu(quota=quota))
    q["spec"]["namespaces"] = namespaces
    return q


def test_a_pod_from_another_namespace_cannot_use_a_fenced_queue_nor_reclaim_for_it() -> None:
    """The queue label is the pod author's: a forged one neither binds nor reclaims; the pod
    says which namespaces the queue admits. The owner's pods (namespace ns) still reclaim."""
    c = Cluster(*four_nodes(), queues=(fenced("team", ["ns"], quota=16), queue("borrower", gpu(quota=0))))
    c.submit("borrower", "b", 8, 4)  # all 32 GPUs, borrowed
    c.run()
    assert len(c.bound("b-")) == 8
    forged = pod("forged-0", gpus(4))
    forged["metadata"]["namespace"] = "intruder"
    forged["metadata"]["labels"] = {QUEUE_LABEL: "team"}
    c.pods["forged-0"] = forged
    c.s._pod_event("ADDED", forged)
    c.run()
    assert c.bound("forged-") == [] and c.api.deleted == []  # nothing reclaimed in team's name
    assert any(
        "namespace 'intruder' may not use queue 'team': it admits only ns;" in n
        for n in c.notes("FailedScheduling")
    )
    c.submit("team", "t", 1, 4)  # the owner: within quota, reclaims one borrowed pod
    c.run()
    assert c.bound("t-") == ["t-0"] and len(c.api.deleted) == 1
    c.close()


def test_every_member_of_a_pod_group_is_checked_against_its_own_queue() -> None:
    """A group whose first member is in an open queue cannot carry a member labelled into a
    fenced queue of another namespace."""
    from tessellate.scheduler.gang import MIN_AVAILABLE, POD_GROUP

    c = Cluster(*four_nodes(), queues=(fenced("team", ["elsewhere"]), queue("open", gpu(quota=0))))
    for i, label in enumerate(["open", "team"]):
        p = pod(f"g-{i}", gpus(2))
        p["metadata"]["labels"] = {QUEUE_LABEL: label, POD_GROUP: "job"}
        p["metadata"]["annotations"] = {MIN_AVAILABLE: "2"}
        c.pods[p["metadata"]["name"]] = p
        c.s._pod_event("ADDED", p)
    c.run()
    assert c.bound("g-") == []
    assert any("may not use queue 'team'" in n for n in c.notes("FailedScheduling"))
    c.close()
