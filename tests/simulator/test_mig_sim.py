"""The synthetic MIG mix and MIG in the timed replay: metrics, reconfiguration delay, choices."""

from __future__ import annotations

import pytest
from tessellate.placement import NodeSpec, Request
from tessellate.placement.checks import needs_at_least
from tessellate.placement.mig import MigLayout
from tessellate.placement.migfrag import mig_fragmentation
from tessellate.placement.model import MigSpec
from tessellate.simulator.experiment import TraceSource
from tessellate.simulator.migmetrics import MigFragmentationMeter, mig_demand
from tessellate.simulator.timed import PLACED, run_timed
from tessellate.simulator.trace import PodRecord, Trace
from tessellate.simulator.traces.migmix import MigMixConfig, generate_mig_mix

SMALL = MigMixConfig(seed=3, nodes=3, gpus_per_node=4, pods=300, load=1.4)


def test_mig_mix_is_deterministic_and_mixes_mig_inference_with_whole_gpu_training():
    trace = generate_mig_mix(SMALL)
    assert trace == generate_mig_mix(SMALL)
    assert all(n.mig is not None and n.mig.dynamic for n in trace.nodes)
    mig = [p for p in trace.pods if p.request.is_mig]
    whole = [p for p in trace.pods if p.request.gpu_count]
    assert len(mig) + len(whole) == len(trace.pods)
    assert 0.7 < len(mig) / len(trace.pods) < 0.95
    assert len({p.request.mig_profile for p in mig}) == 6


def test_static_share_partitions_whole_nodes_with_the_balanced_layout():
    trace = generate_mig_mix(MigMixConfig(nodes=4, pods=10, static_share=0.5))
    static = [n for n in trace.nodes if n.mig is not None and not n.mig.dynamic]
    assert len(static) == 2
    assert all(layout is not None and len(layout) == 4 for n in static for layout in n.mig.layouts)


def test_timed_replay_reports_mig_fragmentation_and_both_choices_run():
    trace = generate_mig_mix(SMALL)
    for choice in ("aware", "firstfit"):
        result = run_timed(trace, "bestfit", max_wait=0, mig_choice=choice)
        summary = result.summary()
        assert summary["mig_frag_slices_mean"] >= 0
        assert result.grid.mig_frag_slices is not None
        assert sum(o == PLACED for o in result.outcome.values()) > 0


def test_meter_matches_the_sum_over_gpus_in_mig_mode():
    trace = generate_mig_mix(SMALL)
    result = run_timed(trace, "bestfit", max_wait=0)
    state = result.state
    assert state is not None
    demand = mig_demand(trace)
    meter = MigFragmentationMeter(state, demand)
    expected = sum(
        mig_fragmentation(layout, demand) for v in state.mig.layouts.values() for layout in v if len(layout)
    )
    assert meter.total == pytest.approx(expected)


def _two_pod_trace(node: NodeSpec) -> Trace:
    request = Request(cpu_milli=1000, mig_profile="3g.40gb", mig_count=1)
    pods = (PodRecord("a", request, 0.0, 100.0), PodRecord("b", request, 10.0, 100.0))
    return Trace("two", (node,), pods)


def test_a_placement_that_creates_instances_starts_after_the_reconfiguration_delay():
    node = NodeSpec("d", 8000, 8192, 1, "A100-80GB", mig=MigSpec(dynamic=True))
    result = run_timed(_two_pod_trace(node), "bestfit", mig_reconfig_s=30.0)
    assert result.start_time == {"a": 30.0, "b": 40.0}


def test_existing_instances_need_no_reconfiguration():
    layout = MigLayout.of("A100-80GB", ("3g.40gb", 0), ("3g.40gb", 4))
    node = NodeSpec("s", 8000, 8192, 1, "A100-80GB", mig=MigSpec(layouts=(layout,)))
    result = run_timed(_two_pod_trace(node), "bestfit", mig_reconfig_s=30.0)
    assert result.start_time == {"a": 0.0, "b": 10.0}


def test_a_failed_mig_request_dooms_only_the_same_profile_in_a_retry_pass():
    small_mig = Request(cpu_milli=1000, mig_profile="1g.10gb", mig_count=1)
    big_mig = Request(cpu_milli=2000, mig_profile="1g.10gb", mig_count=2)
    other_mig = Request(cpu_milli=2000, mig_profile="3g.40gb", mig_count=1)
    cpu = Request(cpu_milli=2000)
    whole = Request(cpu_milli=2000, gpu_count=1, gpu_milli=1000)
    assert needs_at_least(big_mig, small_mig)
    assert not needs_at_least(other_mig, small_mig)
    assert not needs_at_least(cpu, small_mig)
    assert not needs_at_least(whole, small_mig)
    assert needs_at_least(big_mig, Request(cpu_milli=500))


def test_trace_source_builds_the_mig_mix():
    trace = TraceSource(synthetic_kind="mig", synthetic_scale=0.25).load()
    assert trace.name == "synthetic-mig-s0" and len(trace.nodes) == 4
    with pytest.raises(ValueError, match="unknown synthetic workload"):
        TraceSource(synthetic_kind="nope")
