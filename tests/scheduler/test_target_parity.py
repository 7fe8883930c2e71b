"""One expected workload for both drivers: the live cache's FGD target equals the simulator's
for the same pods, the models coming from node affinity on one side and `gpu_spec` on the other."""

from __future__ import annotations

import pytest
from integration.traceobjects import node_objects, pod_object
from paths import OPENB
from tessellate.placement import MILLI_PER_GPU, Request, TargetWorkload
from tessellate.placement.workload import DEFAULT_WORKLOAD, allowed_models, expected_workload
from tessellate.scheduler.cache import ClusterCache
from tessellate.scheduler.constraints import PodConstraints
from tessellate.scheduler.nodes import PRODUCT_LABEL
from tessellate.scheduler.target import pod_models, target_requests
from tessellate.simulator.replay import paper_target_workload, target_workload
from tessellate.simulator.trace import PodRecord, Trace
from tessellate.simulator.traces.openb import load_trace

KNOWN = {"T4": "T4", "Tesla-P100": "P100", "V100M32": "V100M32", "T4-SHARED": "T4"}
"""Product label -> catalogue model, as `scheduler.target.products` reads them off nodes."""


def cache_for(trace: Trace) -> ClusterCache:
    """A live cache holding the trace's nodes and (pending) pods as Kubernetes objects."""
    cache = ClusterCache("fgd")
    nodes = []
    for spec in trace.nodes:
        node, status = node_objects(spec)
        nodes.append({**node, "status": status})
    cache.replace_nodes(nodes)
    cache.replace_pods(pod_object(p, "default", uid=p.name) for p in trace.pods)
    assert cache.ensure_built()
    return cache


def affinity(*exprs: dict, selector: dict | None = None) -> PodConstraints:
    terms = [{"matchExpressions": list(e)} if isinstance(e, list) else e for e in exprs]
    spec: dict = {"nodeSelector": selector or {}}
    if exprs:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    return PodConstraints(spec)


def product(op: str, *values: str) -> dict:
    return {"key": PRODUCT_LABEL, "operator": op, "values": list(values)}


# ---- the live side: which models a pod's constraints allow -----------------------------------


def test_pods_without_a_product_constraint_may_use_any_model():
    assert pod_models(PodConstraints({}), KNOWN) == ()
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    assert pod_models(affinity([zone]), KNOWN) == ()
    assert pod_models(affinity([product("In", "T4")], [zone]), KNOWN) == ()  # terms are ORed
    assert pod_models(affinity([product("NotIn", "A100")]), KNOWN) == ()  # lets every product through


def test_product_constraints_become_the_models_of_the_products_they_let_through():
    assert pod_models(affinity([product("In", "T4", "V100M32", "T4")]), KNOWN) == ("T4", "V100M32")
    assert pod_models(affinity([product("In", "Tesla-P100")]), KNOWN) == ("P100",)
    assert pod_models(affinity([product("NotIn", "T4", "T4-SHARED")]), KNOWN) == ("P100", "V100M32")
    assert pod_models(affinity(selector={PRODUCT_LABEL: "T4-SHARED"}), KNOWN) == ("T4",)
    assert pod_models(affinity([product("Exists")]), KNOWN) == ("P100", "T4", "V100M32")
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    # only the product key is judged: other expressions restrict nodes, not models
    assert pod_models(affinity([zone, product("In", "V100M32")]), KNOWN) == ("V100M32",)
    both = affinity([product("In", "T4")], [product("In", "V100M32")])
    assert pod_models(both, KNOWN) == ("T4", "V100M32")
    # selector and affinity must both hold
    assert pod_models(affinity([product("In", "T4", "V100M32")], selector={PRODUCT_LABEL: "T4"}), KNOWN) == (
        "T4",
    )


def test_pods_no_known_product_serves_are_left_out_of_the_target():
    assert pod_models(affinity([product("In", "A100")]), KNOWN) is None
    assert pod_models(affinity({"matchExpressions": []}), KNOWN) is None  # an empty term matches nothing
    gpu = Request(cpu_milli=1000, gpu_count=1, gpu_milli=MILLI_PER_GPU)
    cpu = Request(cpu_milli=1000)
    nowhere = affinity([product("In", "A100")])
    bad = affinity([{"key": PRODUCT_LABEL, "operator": "Near", "values": ["T4"]}])
    kept = target_requests([(gpu, nowhere), (gpu, bad), (cpu, nowhere)], KNOWN)
    assert kept == [cpu]  # a CPU-only pod uses no GPU model, wherever it is pinned


# ---- the shared definition ------------------------------------------------------------------


def test_spellings_of_one_model_set_are_one_task_type():
    spellings = [("T4", "P100"), ("P100", "T4"), ("P100", "T4", "T4"), ("P100", "T4", "A100")]
    requests = [Request(cpu_milli=1000, gpu_count=1, gpu_milli=500, gpu_models=m) for m in spellings]
    target = expected_workload(requests, {"T4", "P100", "G2"})
    assert target.types == ((1000, 500, 1, ("P100", "T4")),) and target.weights == (1.0,)


def test_cpu_only_requests_carry_no_model_and_unserved_requests_no_weight():
    cpu = Request(cpu_milli=1000, gpu_models=("T4",))
    assert allowed_models(cpu) == ()
    gpu = Request(cpu_milli=1000, gpu_count=1, gpu_milli=MILLI_PER_GPU, gpu_models=("A100",))
    assert allowed_models(gpu, {"T4"}) is None
    assert expected_workload([cpu, gpu], {"T4"}).types == ((1000, 0, 0, ()),)
    mig = Request(cpu_milli=1000, mig_profile="1g.10gb", mig_count=1)
    assert expected_workload([mig]) == TargetWorkload.from_requests(DEFAULT_WORKLOAD, 1.0)


def test_the_cap_keeps_the_most_popular_types_and_renormalises():
    requests = [Request(cpu_milli=1000 * (1 + i % 5)) for i in range(5 * 4)] + [Request(cpu_milli=1000)]
    target = expected_workload(requests, coverage=1.0, max_types=2)
    assert target.types == ((1000, 0, 0, ()), (5000, 0, 0, ()))  # 5 of 1000m, then the largest of 4
    assert target.weights == pytest.approx((5 / 9, 4 / 9))
    with pytest.raises(ValueError, match="max_types"):
        expected_workload(requests, max_types=0)


# ---- the two drivers, same pods -------------------------------------------------------------


@pytest.fixture(scope="module")
def gpuspec25() -> Trace:
    return load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_gpuspec25.csv")


def test_the_live_cache_expects_what_the_simulator_expects_for_the_same_pods(gpuspec25):
    cache = cache_for(gpuspec25)
    simulated = target_workload(gpuspec25)
    assert cache.target == simulated
    assert any(models for *_, models in simulated.types), "the trace's model constraints are in the target"
    assert simulated != paper_target_workload(gpuspec25)  # the paper's replays keep the paper's own


def test_a_few_hundred_pods_give_the_same_target_too(gpuspec25):
    pods = tuple(p for i, p in enumerate(gpuspec25.pods) if i % 20 == 0)
    small = Trace("small", gpuspec25.nodes, pods)
    assert cache_for(small).target == target_workload(small)


def test_model_spellings_do_not_split_types_on_either_side():
    nodes = load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_gpuspec25.csv").nodes
    spellings = [("V100M16", "V100M32"), ("V100M32", "V100M16", "V100M32"), ("V100M16", "V100M32", "A100")]
    pods = tuple(
        PodRecord(f"p{i}", Request(cpu_milli=8000, memory_mib=1024, gpu_count=1, gpu_milli=500, gpu_models=m))
        for i, m in enumerate(spellings)
    )
    trace = Trace("spellings", nodes, pods)
    assert target_workload(trace).types == ((8000, 500, 1, ("V100M16", "V100M32")),)
    assert cache_for(trace).target == target_workload(trace)
