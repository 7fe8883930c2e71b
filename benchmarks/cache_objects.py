"""Node and pod objects, as the API server returns them, for benchmarks that drive the
scheduler's cache directly (no API server): 8-GPU A100 nodes and GPU pods."""

from __future__ import annotations

from typing import Any

from tessellate.scheduler.gang import MIN_AVAILABLE, POD_GROUP


def gpu_node(name: str) -> dict[str, Any]:
    alloc = {"cpu": "128", "memory": "1024Gi", "pods": "110", "nvidia.com/gpu": "8"}
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    return {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {"allocatable": alloc}}


def gpu_pod(name: str, gpus: int, priority: int = 0, group: tuple[str, int] | None = None) -> dict[str, Any]:
    """A pending pod of `gpus` GPUs; `group` is (pod group, min-available)."""
    meta: dict[str, Any] = {"name": name, "namespace": "bench", "uid": f"uid-{name}", "resourceVersion": "1"}
    if group is not None:
        meta["labels"] = {POD_GROUP: group[0]}
        meta["annotations"] = {MIN_AVAILABLE: str(group[1])}
    limits = {"nvidia.com/gpu": str(gpus), "cpu": "2", "memory": "8Gi"}
    return {
        "metadata": meta,
        "spec": {
            "schedulerName": "tessellate",
            "priority": priority,
            "containers": [{"name": "c", "resources": {"limits": limits}}],
        },
        "status": {"phase": "Pending"},
    }
