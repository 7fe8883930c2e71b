"""A trace's nodes and pods as the Kubernetes objects a live cluster would hold.

For comparing the live scheduler with the simulator on the same arrivals: each node is a
fake GPU node (`cluster.gpu_node`) whose `nvidia.com/gpu.product` label is the trace's
model name (a catalogue name, so `scheduler.nodes.gpu_model_name` maps it back), and a
pod whose trace names its allowed models gets a required node affinity `In` them, in the
trace's own spelling (order and repeats kept: the scheduler must not care).
"""

from __future__ import annotations

from typing import Any

from tessellate.placement import NodeSpec
from tessellate.scheduler.nodes import PRODUCT_LABEL
from tessellate.simulator.trace import PodRecord

from integration import cluster
from tessellate.wire.podspec import GPU, GPU_MILLI


def node_objects(node: NodeSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Node, status) with the node's allocatable CPU, memory, GPUs and pod slots."""
    return cluster.gpu_node(
        node.name,
        gpus=node.gpu_count,
        cpu=f"{node.cpu_milli}m",
        memory=f"{node.memory_mib}Mi",
        product=node.gpu_model,
        extra_allocatable={"pods": str(node.max_pods)},
    )


def model_affinity(models: tuple[str, ...]) -> dict[str, Any]:
    expr = {"key": PRODUCT_LABEL, "operator": "In", "values": list(models)}
    terms = [{"matchExpressions": [expr]}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def pod_object(record: PodRecord, namespace: str, uid: str | None = None) -> dict[str, Any]:
    """A pending pod of schedulerName tessellate asking for what the trace pod asks for."""
    request = record.request
    if request.is_mig:
        raise ValueError(f"pod {record.name}: MIG requests are not built here; use a trace without them")
    limits: dict[str, str] = {}
    if request.is_fraction:
        limits[GPU_MILLI] = str(request.gpu_milli)
    elif request.gpu_count:
        limits[GPU] = str(request.gpu_count)
    spec: dict[str, Any] = {}
    if request.gpu_models:
        spec["affinity"] = model_affinity(request.gpu_models)
    pod = cluster.pod(
        record.name,
        namespace,
        limits=limits or None,
        requests={"cpu": f"{request.cpu_milli}m", "memory": f"{request.memory_mib}Mi"},
        **spec,
    )
    if uid is not None:
        pod["metadata"]["uid"] = uid
    return pod
