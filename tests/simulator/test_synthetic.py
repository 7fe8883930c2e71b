"""The synthetic workload: openb's mix without openb's data, reproducible per seed."""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import fields

import numpy as np
import pytest
from paths import OPENB, REPO
from tessellate.simulator.trace import Trace
from tessellate.simulator.traces.synthetic import OPENB_2023, ClassMix, SyntheticConfig, apportion, generate

MEASURED = dict(OPENB_2023.class_counts)
MEASURED_PODS = sum(MEASURED.values())
MEASURED_GPUS = sum(s[1] * s[4] for s in OPENB_2023.node_shapes)
MEASURED_DEMAND = (
    1000 * sum(n * c for n, c in OPENB_2023.whole_gpu_counts)
    + sum(m * c for m, c in OPENB_2023.fraction_milli)
) / (1000 * MEASURED_GPUS)


def pod_class(pod) -> str:
    if pod.request.is_cpu_only:
        return "cpu_only"
    return "fraction" if pod.request.is_fraction else "whole"


def demand_ratio(trace: Trace) -> float:
    return trace.gpu_demand_milli / (1000 * trace.total_gpus)


def fits_some_node(trace: Trace, pod) -> bool:
    r = pod.request
    return any(
        r.cpu_milli <= n.cpu_milli
        and r.memory_mib <= n.memory_mib
        and r.gpu_count <= n.gpu_count
        and (not r.gpu_models or n.gpu_model in r.gpu_models)
        for n in trace.nodes
    )


@pytest.fixture(scope="module")
def full() -> Trace:
    return generate()


def test_the_default_has_the_openb_cluster_shape_and_mix(full):
    assert (len(full.nodes), full.total_gpus, len(full.pods)) == (1213, 6212, 8152)
    shapes = Counter((n.gpu_model, n.gpu_count, n.cpu_milli, n.memory_mib) for n in full.nodes)
    assert shapes == {s[:4]: s[4] for s in OPENB_2023.node_shapes}
    assert Counter(pod_class(p) for p in full.pods) == MEASURED
    whole = Counter(p.request.gpu_count for p in full.pods if pod_class(p) == "whole")
    assert whole == dict(OPENB_2023.whole_gpu_counts)
    assert abs(MEASURED_DEMAND - 0.98) < 0.001
    assert demand_ratio(full) == pytest.approx(MEASURED_DEMAND, abs=0.01)


def test_fraction_sizes_follow_the_measured_histogram(full):
    sizes = Counter(p.request.gpu_milli for p in full.pods if pod_class(p) == "fraction")
    histogram = dict(OPENB_2023.fraction_milli)
    assert set(sizes) <= set(histogram)
    total = sum(histogram.values())
    for milli in (810, 470, 320, 650):  # the common sizes, each within 3 points of its share
        assert sizes[milli] / total == pytest.approx(histogram[milli] / total, abs=0.03)


def test_names_are_numbered_and_sort_in_arrival_order(full):
    assert full.nodes[0].name == "syn-node-0000" and full.nodes[-1].name == "syn-node-1212"
    assert full.pods[0].name == "syn-pod-00000" and full.pods[-1].name == "syn-pod-08151"
    created = [p.creation_time for p in full.pods]
    assert created == sorted(created)


def test_the_same_seed_gives_the_same_trace_and_another_seed_does_not():
    config = SyntheticConfig(scale=0.1, seed=5)
    assert generate(config) == generate(SyntheticConfig(scale=0.1, seed=5))
    other = generate(SyntheticConfig(scale=0.1, seed=6))
    assert other.pods != generate(config).pods
    assert other.name != generate(config).name


@pytest.mark.parametrize("scale", [0.5, 0.1, 0.05])
def test_a_smaller_scale_keeps_the_mix_and_the_gpu_demand(scale):
    trace = generate(SyntheticConfig(scale=scale, seed=1))
    assert len(trace.nodes) == round(1213 * scale)
    assert len(trace.pods) == round(MEASURED_PODS * trace.total_gpus / MEASURED_GPUS)
    classes = Counter(pod_class(p) for p in trace.pods)
    for name, count in MEASURED.items():
        assert classes[name] / len(trace.pods) == pytest.approx(count / MEASURED_PODS, abs=0.01)
    assert demand_ratio(trace) == pytest.approx(MEASURED_DEMAND, abs=0.05)


@pytest.mark.parametrize(
    "config",
    [
        SyntheticConfig(),
        SyntheticConfig(scale=0.1, seed=2),
        SyntheticConfig(scale=0.01, seed=3),
        SyntheticConfig(nodes=1),
        SyntheticConfig(nodes=3, pods=500),
        SyntheticConfig(scale=0.05, gpu_spec_share=1.0, seed=4),
    ],
    ids=["full", "0.1", "0.01", "one-node", "three-nodes", "all-constrained"],
)
def test_every_pod_fits_at_least_one_node(config):
    trace = generate(config)
    shapes = {(n.gpu_model, n.gpu_count, n.cpu_milli, n.memory_mib): n for n in trace.nodes}
    small = Trace(trace.name, tuple(shapes.values()), ())
    assert all(fits_some_node(small, p) for p in trace.pods)


@pytest.mark.parametrize("timing", ["busy", "trace"])
def test_times_are_non_negative_and_pods_leave_after_they_arrive(timing):
    trace = generate(SyntheticConfig(scale=0.2, seed=9, timing=timing))
    created = np.array([p.creation_time for p in trace.pods])
    deleted = np.array([p.deletion_time for p in trace.pods])
    assert (created >= 0).all() and (deleted >= created).all()


def test_trace_timing_follows_the_measured_percentiles(full):
    trace = generate(SyntheticConfig(timing="trace", seed=11))
    created = np.array([p.creation_time for p in trace.pods])
    pct = OPENB_2023.percentiles
    for q in (10.0, 50.0, 90.0):
        expected = OPENB_2023.creation_time[pct.index(q)]
        assert np.percentile(created, q) == pytest.approx(expected, rel=0.01)
    lifetimes = dict(OPENB_2023.lifetime)
    for cls in ("cpu_only", "fraction", "whole"):
        life = [p.deletion_time - p.creation_time for p in trace.pods if pod_class(p) == cls]
        median = lifetimes[cls][pct.index(50.0)]
        assert np.median(life) == pytest.approx(median, rel=0.25)
    assert all(float(p.creation_time).is_integer() for p in trace.pods)


def test_busy_timing_follows_littles_law():
    trace = generate(SyntheticConfig(scale=0.1, seed=1, load=0.5))
    created = np.array([p.creation_time for p in trace.pods])
    life = np.array([p.deletion_time - p.creation_time for p in trace.pods])
    demand = np.array([p.request.total_gpu_milli for p in trace.pods])
    rate = len(trace.pods) / created[-1]
    assert rate * life.mean() * demand.mean() / (1000 * trace.total_gpus) == pytest.approx(0.5, rel=0.15)
    assert np.median(life) == pytest.approx(3600, rel=0.15)


def test_overrides_change_the_class_mix_and_the_model_constraints():
    only_fractions = generate(
        SyntheticConfig(scale=0.05, class_mix=ClassMix(cpu_only=0, fraction=1, whole=0))
    )
    assert {pod_class(p) for p in only_fractions.pods} == {"fraction"}
    constrained = generate(SyntheticConfig(scale=0.2, gpu_spec_share=0.25, seed=3))
    gpu_pods = [p for p in constrained.pods if not p.request.is_cpu_only]
    share = sum(bool(p.request.gpu_models) for p in gpu_pods) / len(gpu_pods)
    assert share == pytest.approx(0.25, abs=0.03)
    allowed = {tuple(spec.split("|")) for spec, _ in OPENB_2023.gpu_spec_sets}
    assert {p.request.gpu_models for p in gpu_pods if p.request.gpu_models} <= allowed
    assert not any(p.request.gpu_models for p in generate(SyntheticConfig(scale=0.2)).pods)
    assert constrained.name == "synthetic-openb-s3-x0.2-custom"


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0}, {"scale": 101}, {"nodes": 0}, {"pods": 0}, {"gpu_spec_share": 1.5}, {"timing": "real"}],
)
def test_nonsense_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_apportion_keeps_the_total_and_rounds_by_largest_remainder():
    assert apportion([1, 1, 1], 10) == [4, 3, 3]
    assert apportion([3911, 16, 15, 44], 399) == [391, 2, 2, 4]  # remainders .49 .60 .50 .40
    assert sum(apportion([s[4] for s in OPENB_2023.node_shapes], 121)) == 121


@pytest.mark.skipif(not OPENB.is_dir(), reason="shared openb traces not present")
def test_the_embedded_parameters_are_what_the_measuring_script_measures():
    script = REPO / "scripts" / "measure_openb_mix.py"
    spec = importlib.util.spec_from_file_location("measure_openb_mix", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    measured = module.measure(OPENB)
    assert measured == {f.name: getattr(OPENB_2023, f.name) for f in fields(OPENB_2023)}
