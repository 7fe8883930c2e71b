"""MIG in the live scheduler: nodes' static partitions, MIG decisions, their annotation, restarts."""

from __future__ import annotations

import json

from tessellate.placement import Unschedulable
from tessellate.placement.mig import MigLayout
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.nodes import node_info
from test_scheduler_cache import bound, cache_with, decide, node, pod

from tessellate.wire.assignment import decode
from tessellate.wire.devices import DEVICES

A100 = "A100-SXM4-80GB"


def mig_node(name: str, whole: int = 0, labels: dict | None = None, **mig: str) -> dict:
    n = node(name, gpus=whole, labels=labels)
    for profile, amount in mig.items():
        n["status"]["allocatable"][f"nvidia.com/mig-{profile.replace('_', '.')}"] = amount
    return n


def test_mig_gpus_without_positions_get_mig_parteds_canonical_layout():
    info = node_info(mig_node("m", **{"3g_40gb": "2", "1g_10gb": "2"}))
    assert info.problem is None
    assert info.spec.gpu_count == 2  # the fewest GPUs that hold 2 x 3g + 2 x 1g
    assert info.spec.mig is not None and not info.spec.mig.dynamic
    for layout in info.spec.mig.layouts:
        assert layout is not None and layout.count("3g.40gb") == 1 and layout.count("1g.10gb") == 1


def test_the_gpu_count_label_places_mig_gpus_after_the_whole_ones():
    info = node_info(mig_node("m", whole=6, labels={"nvidia.com/gpu.count": "8"}, **{"1g_10gb": "14"}))
    assert info.spec.gpu_count == 8
    layouts = info.spec.mig.layouts  # type: ignore[union-attr]
    assert layouts[:6] == (None,) * 6
    assert all(layout is not None and layout.count("1g.10gb") == 7 for layout in layouts[6:])


def test_positions_come_from_the_agents_devices_annotation():
    n = mig_node("m", whole=1, **{"3g_40gb": "1"})
    n["metadata"]["annotations"] = {
        DEVICES: json.dumps(
            {
                "version": 1,
                "gpus": [
                    {"index": 0, "mig": {"enabled": False, "instances": []}},
                    {"index": 1, "mig": {"enabled": True, "instances": [{"profile": "3g.40gb", "start": 4}]}},
                ],
            }
        )
    }
    info = node_info(n)
    assert info.spec.gpu_count == 2
    assert info.spec.mig.layouts == (None, MigLayout.of(A100, ("3g.40gb", 4)))  # type: ignore[union-attr]


def test_mig_decision_names_the_instance_in_the_assignment_and_survives_a_restart():
    n = mig_node("m", **{"3g_40gb": "2"})
    cache = cache_with(n)
    first = decide(cache, pod("a", {"nvidia.com/mig-3g.40gb": "1"}))
    assert isinstance(first, Placed)
    (share,) = decode(first.annotation.encode()).gpus
    assert (share.index, share.mig, share.start) == (0, "3g.40gb", 0)
    assert json.loads(first.annotation.encode()) == {"gpus": [{"index": 0, "mig": "3g.40gb", "start": 0}]}

    restarted = ClusterCache("fgd", seed=1)
    restarted.upsert_node(n)
    restarted.upsert_pod(bound(pod("a", {"nvidia.com/mig-3g.40gb": "1"}), first))
    second = decide(restarted, pod("b", {"nvidia.com/mig-3g.40gb": "1"}))
    assert isinstance(second, Placed)
    assert (second.annotation.gpus[0].index, second.annotation.gpus[0].start) == (0, 4)
    third = decide(restarted, pod("c", {"nvidia.com/mig-3g.40gb": "1"}))
    assert isinstance(third, Unschedulable)
    assert "1 Insufficient nvidia.com/mig-3g.40gb" in third.message


def test_another_schedulers_mig_pod_is_charged_to_a_free_instance():
    n = mig_node("m", **{"1g_10gb": "2"})
    other = pod("x", {"nvidia.com/mig-1g.10gb": "1"}, node_name="m", schedulerName="default-scheduler")
    cache = cache_with(n)
    cache.upsert_pod(other)
    assert isinstance(decide(cache, pod("a", {"nvidia.com/mig-1g.10gb": "1"})), Placed)
    assert isinstance(decide(cache, pod("b", {"nvidia.com/mig-1g.10gb": "1"})), Unschedulable)


def test_whole_gpu_pods_never_land_on_mig_gpus():
    cache = cache_with(mig_node("m", whole=1, labels={"nvidia.com/gpu.count": "2"}, **{"7g_80gb": "1"}))
    first = decide(cache, pod("a", {"nvidia.com/gpu": "1"}))
    assert isinstance(first, Placed) and first.annotation.indices == (0,)
    assert isinstance(decide(cache, pod("b", {"nvidia.com/gpu": "1"})), Unschedulable)
