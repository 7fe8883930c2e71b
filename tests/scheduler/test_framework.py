"""The scheduling framework: filter chaining, the profile, the anti-affinity plugin, and one
scheduling cycle driven end to end against an in-memory API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from tessellate.placement import Unschedulable
from tessellate.scheduler.app import Scheduler
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.config import ConfigError, SchedulerConfig, load_config
from tessellate.scheduler.framework import FilterContext, Verdict, run_filters
from tessellate.scheduler.plugins import DEFAULT_FILTERS
from tessellate.scheduler.plugins.pod_anti_affinity import HOSTNAME, REASON_EXISTING, REASON_MATCH
from test_scheduler_cache import decide, gpus, node, pod

from tessellate.wire.assignment import ASSIGNMENT, decode


class Fixed:
    def __init__(self, name: str, passes: list[bool], reason: str) -> None:
        self.name, self.passes, self.reason = name, np.array(passes), reason

    def filter(self, ctx: FilterContext, rec: Any) -> Verdict:
        return Verdict(self.passes, self.reason)


def test_a_node_is_counted_once_at_the_first_filter_that_rejects_it() -> None:
    cache = ClusterCache("fgd", seed=1)
    for name in ("a", "b", "c", "d"):
        cache.upsert_node(node(name))
    assert cache.ensure_built()
    rec, _ = cache.upsert_pod(pod("p", gpus(1)))
    assert rec is not None
    first = Fixed("First", [False, True, True, True], "reason one")
    second = Fixed("Second", [False, False, True, True], "reason two")
    mask, reasons = run_filters([first, second], FilterContext(cache), rec)
    assert mask.tolist() == [False, False, True, True]
    assert reasons == Counter({"reason one": 1, "reason two": 1})


def hosted(name: str, gpus_: int = 8) -> dict:
    return node(name, gpus=gpus_, labels={HOSTNAME: name})


def web(name: str, namespace: str = "ns", anti: bool = True, app: str = "web") -> dict:
    spec: dict[str, Any] = {}
    if anti:
        term = {"topologyKey": HOSTNAME, "labelSelector": {"matchLabels": {"app": "web"}}}
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    p = pod(name, gpus(1), **spec)
    p["metadata"]["labels"] = {"app": app}
    p["metadata"]["namespace"] = namespace
    return p


def test_required_anti_affinity_spreads_replicas_one_per_host() -> None:
    cache = ClusterCache("packing", seed=1)  # packing would otherwise stack them on one node
    cache.upsert_node(hosted("h1"))
    cache.upsert_node(hosted("h2"))
    first, second = decide(cache, web("web-0")), decide(cache, web("web-1"))
    assert isinstance(first, Placed) and isinstance(second, Placed)
    assert {first.node, second.node} == {"h1", "h2"}
    third = decide(cache, web("web-2"))
    assert isinstance(third, Unschedulable)
    assert third.message == f"0/2 nodes are available: 2 {REASON_EXISTING}."
    plain = decide(cache, web("other", anti=False, app="db"))
    assert isinstance(plain, Placed), "pods the terms do not select are not affected"


def test_a_pod_whose_terms_select_a_running_pod_avoids_its_host() -> None:
    cache = ClusterCache("packing", seed=1)
    cache.upsert_node(hosted("h1"))
    cache.upsert_node(hosted("h2"))
    db = decide(cache, web("db", anti=False, app="web"))
    assert isinstance(db, Placed)
    mine = decide(cache, web("mine", app="api"))
    assert isinstance(mine, Placed) and mine.node != db.node
    cache.forget(mine.uid)
    cache.upsert_node(hosted("h2", gpus_=0))
    refused = decide(cache, web("again", app="api"))
    assert isinstance(refused, Unschedulable) and f"1 {REASON_MATCH}" in refused.message


def test_anti_affinity_is_scoped_to_the_pods_namespace_and_hostname_label() -> None:
    cache = ClusterCache("packing", seed=1)
    cache.upsert_node(hosted("h1"))
    assert isinstance(decide(cache, web("a", namespace="team-a")), Placed)
    assert isinstance(decide(cache, web("b", namespace="team-b")), Placed), "another namespace"
    unlabelled = ClusterCache("packing", seed=1)
    unlabelled.upsert_node(node("n1"))
    assert isinstance(decide(unlabelled, web("a")), Placed)
    assert isinstance(decide(unlabelled, web("b")), Placed), "no hostname label: no topology domain"


def test_the_profile_decides_which_filters_run() -> None:
    without = [f for f in DEFAULT_FILTERS if f != "PodAntiAffinity"]
    cache = ClusterCache("packing", seed=1, filters=without)
    cache.upsert_node(hosted("h1"))
    assert isinstance(decide(cache, web("a")), Placed)
    assert isinstance(decide(cache, web("b")), Placed)
    with pytest.raises(ConfigError, match="unknown or repeated plugin"):
        SchedulerConfig(filters=["NodeConstraints", "Spread"]).validate()


def test_the_config_file_takes_a_filter_list(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("filters: [NodeConstraints, NodeHealth]\n")
    assert load_config(path).filters == ["NodeConstraints", "NodeHealth"]
    path.write_text("filters: NodeConstraints\n")
    with pytest.raises(ConfigError, match="expected a list of names"):
        load_config(path)


class MemoryApi:
    """Enough of the API server for one cycle: it records Bindings, events and status patches."""

    def __init__(self) -> None:
        self.bindings: list[dict] = []
        self.events: list[dict] = []

    def post(self, path: str, body: dict) -> dict:
        (self.bindings if path.endswith("/binding") else self.events).append(body)
        return body

    def patch(self, path: str, body: dict, **_: Any) -> dict:
        return body


def test_one_cycle_filters_places_assumes_and_binds_with_the_assignment() -> None:
    api = MemoryApi()
    config = SchedulerConfig(bindAddress="127.0.0.1:0")
    config.leaderElection.leaderElect = False
    scheduler = Scheduler(api, config)  # type: ignore[arg-type]
    scheduler.leading.set()
    with scheduler.cache.lock:
        scheduler.cache.upsert_node(hosted("h1", 2))
        scheduler.cache.upsert_node(hosted("h2", 2))
    for name in ("web-0", "web-1", "web-2"):
        p = web(name)
        scheduler._pod_event("ADDED", p)
    for _ in range(3):
        queued = scheduler.queue.pop(timeout=1.0)
        assert queued is not None
        scheduler.schedule_one(queued)
    scheduler.binder.shutdown(wait=True)
    scheduler.recorder.close(wait=True)
    bound = {b["metadata"]["name"]: b for b in api.bindings}
    assert sorted(bound) == ["web-0", "web-1"]
    assert {b["target"]["name"] for b in bound.values()} == {"h1", "h2"}
    for binding in bound.values():
        assert len(decode(binding["metadata"]["annotations"][ASSIGNMENT]).gpus) == 1
    failed = [e for e in api.events if e["reason"] == "FailedScheduling"]
    assert failed and REASON_EXISTING in failed[0]["note"]
    with scheduler.cache.lock:
        assert len(scheduler.cache.assumed) == 2  # until the watch shows them bound
