"""Dynamic MIG in the live scheduler's cache: reserve, publish a plan, wait for the agent, bind."""

from __future__ import annotations

import json

from tessellate.placement import Unschedulable
from tessellate.placement.mig import MigLayout, geometry
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.nodes import node_info
from test_scheduler_cache import cache_with, decide, node, pod

from tessellate.wire.devices import DEVICES
from tessellate.wire.migplan import APPLIED, FAILED, PLAN, PLAN_STATUS, PlanStatus, decode_plan, encode_status
from tessellate.wire.topology import TOPOLOGY

A100 = geometry("A100-80GB")
UUIDS = ("GPU-aaaa", "GPU-bbbb")


def dynamic_node(name: str = "d", layouts: tuple = (None, None), migs: dict | None = None, **extra) -> dict:
    """An A100 node whose agent runs --mig-dynamic: GPUs without a layout are whole GPUs."""
    whole = sum(1 for layout in layouts if layout is None)
    n = node(name, gpus=whole)
    for profile, amount in (migs or {}).items():
        n["status"]["allocatable"][f"nvidia.com/mig-{profile}"] = str(amount)
    gpus = []
    for index, layout in enumerate(layouts):
        instances = [{"profile": p, "start": s} for p, s in (layout or ())]
        gpus.append(
            {
                "index": index,
                "uuid": UUIDS[index],
                "mig": {"enabled": layout is not None, "instances": instances},
            }
        )
    topology = {
        "version": 1,
        "kind": "pcie",
        "gpus": [{"index": i, "numa": 0, "socket": 0, "uuid": UUIDS[i]} for i in range(len(layouts))],
        "links": [],
        "pcie_generation": 4,
    }
    n["metadata"]["annotations"] = {
        DEVICES: json.dumps({"version": 1, "mig_dynamic": True, "gpus": gpus}),
        TOPOLOGY: json.dumps(topology),
        **extra,
    }
    return n


def mig_pod(name: str, profile: str = "1g.10gb") -> dict:
    return pod(name, {f"nvidia.com/mig-{profile}": "1", "cpu": "1"})


def status(generation: int, state: str = APPLIED, message: str = "") -> str:
    return encode_status(PlanStatus(generation, state, message))


def test_a_dynamic_node_is_read_with_every_gpu_open_to_mig() -> None:
    info = node_info(dynamic_node())
    assert info.problem is None, info.problem
    assert info.spec.gpu_count == 2 and info.spec.mig is not None and info.spec.mig.dynamic
    assert info.spec.mig.layouts == (None, None)
    static = dynamic_node()
    static["metadata"]["annotations"][DEVICES] = static["metadata"]["annotations"][DEVICES].replace(
        '"mig_dynamic": true', '"mig_dynamic": false'
    )
    assert node_info(static).spec.mig is None  # no instances and no dynamic agent: no MIG at all


def start(cache: ClusterCache, p: dict) -> tuple[Placed, int, str]:
    placed = decide(cache, p)
    assert isinstance(placed, Placed) and placed.assignment.mig_plans
    wait, value = cache.start_mig_wait(placed, timeout=60)
    return placed, wait.generation, value


def test_plans_reserve_their_slots_and_each_publication_carries_every_pending_instance() -> None:
    cache = cache_with(dynamic_node())
    _, gen1, value1 = start(cache, mig_pod("a"))
    _, gen2, value2 = start(cache, mig_pod("b"))
    assert (gen1, gen2) == (1, 2)
    first, second = decode_plan(value1, A100), decode_plan(value2, A100)
    assert [g.layout for g in first.gpus] == [MigLayout.of(A100, ("1g.10gb", 6))]
    assert len(second.gpus) == 1 and len(second.gpus[0].layout) == 2  # a's instance and b's
    assert second.gpus[0].uuid == UUIDS[first.gpus[0].index]
    # The GPU is in MIG mode now, reserved: a two-GPU pod no longer fits, a one-GPU pod does.
    assert isinstance(decide(cache, pod("two", {"nvidia.com/gpu": "2"})), Unschedulable)
    assert isinstance(decide(cache, pod("one", {"nvidia.com/gpu": "1"})), Placed)


def test_a_restarted_scheduler_continues_the_nodes_generations() -> None:
    cache = cache_with(dynamic_node(**{PLAN: json.dumps({"version": 1, "generation": 7, "gpus": []})}))
    _, generation, _ = start(cache, mig_pod("a"))
    assert generation == 8


def test_the_wait_ends_when_the_agent_applied_and_the_kubelet_advertises() -> None:
    cache = cache_with(dynamic_node())
    placed, generation, value = start(cache, mig_pod("a"))
    uid = placed.uid
    outcome = cache.mig_wait_outcome(uid)
    assert not outcome.ready and outcome.message is None
    (gpu,) = decode_plan(value, A100).gpus
    layouts = [None, None]
    layouts[gpu.index] = tuple((i.profile, i.start) for i in gpu.layout)
    # Applied, but the kubelet has not picked the new device up: keep waiting.
    assert cache.upsert_node(
        dynamic_node(layouts=tuple(layouts), **{PLAN: value, PLAN_STATUS: status(generation)})
    )
    outcome = cache.mig_wait_outcome(uid)
    assert not outcome.ready and outcome.message is None
    ready = dynamic_node(
        layouts=tuple(layouts), migs={"1g.10gb": 1}, **{PLAN: value, PLAN_STATUS: status(generation)}
    )
    cache.upsert_node(ready)
    assert cache.mig_wait_outcome(uid).ready
    cache.forget(uid)
    again = cache.decide(cache.pods[uid])
    assert isinstance(again, Placed) and not again.assignment.mig_plans  # the instance exists now
    (share,) = again.annotation.gpus
    assert (share.index, share.mig, share.start, share.uuid) == (gpu.index, "1g.10gb", 6, UUIDS[gpu.index])


def test_a_failed_plan_and_a_silent_agent_end_the_wait_with_the_reason() -> None:
    cache = cache_with(dynamic_node())
    placed, generation, value = start(cache, mig_pod("a"))
    failed = dynamic_node(**{PLAN: value, PLAN_STATUS: status(generation, FAILED, "GPU 0 runs pod ns/x")})
    assert cache.upsert_node(failed)
    outcome = cache.mig_wait_outcome(placed.uid)
    assert not outcome.ready and "GPU 0 runs pod ns/x" in (outcome.message or "")
    cache.forget(placed.uid)
    assert placed.uid not in cache.mig_waits and not cache.state.live  # the reservation is gone

    silent = cache_with(dynamic_node())
    placed, _, _ = start(silent, mig_pod("b"))
    late = silent.mig_waits[placed.uid].deadline + 1
    message = silent.mig_wait_outcome(placed.uid, now=late).message or ""
    assert "timed out waiting for the node agent" in message and "--mig-dynamic" in message


def test_a_rebuild_while_waiting_keeps_the_reservation() -> None:
    cache = cache_with(dynamic_node())
    start(cache, mig_pod("a"))
    relabelled = dynamic_node()
    relabelled["metadata"]["labels"]["zone"] = "b"
    assert cache.upsert_node(relabelled)
    assert cache.ensure_built()
    assert isinstance(decide(cache, pod("two", {"nvidia.com/gpu": "2"})), Unschedulable)
    # The agent creates the instance while we wait: the rebuilt state takes it as existing.
    _, _, value = start(cache, mig_pod("b"))
    plan = decode_plan(value, A100)
    layouts = [None, None]
    for g in plan.gpus:
        layouts[g.index] = tuple((i.profile, i.start) for i in g.layout)
    cache.upsert_node(dynamic_node(layouts=tuple(layouts), **{PLAN: value}))
    assert cache.ensure_built()
    assert sum(len(v) for v in cache.state.mig.busy[0]) == 2


def test_a_gpu_in_mig_mode_without_instances_is_offered_to_nobody() -> None:
    """The device plugins leave such a GPU out of nvidia.com/gpu: a whole-GPU pod placed there
    would be refused by the kubelet, so the cache blocks it."""
    n = dynamic_node(layouts=((), None))  # GPU 0: MIG mode on, no instance; GPU 1: whole
    info = node_info(n)
    assert info.mig_empty_gpus == (0,)
    cache = cache_with(n)
    first = decide(cache, pod("one", {"nvidia.com/gpu": "1"}))
    assert isinstance(first, Placed) and first.assignment.gpus == (1,)
    assert isinstance(decide(cache, pod("two", {"nvidia.com/gpu": "1"})), Unschedulable)
