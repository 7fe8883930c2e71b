"""Reader for the Alibaba GPU cluster trace of the FGD paper ("openb", 2023).

Citation: Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads
with Fragmentation Gradient Descent", USENIX ATC'23; data from
github.com/alibaba/clusterdata (cluster-trace-gpu-v2023). Conversion rules are
fgd-protocol.md Sec. 1: fractions are per GPU, CPU-only pods carry no GPU
fields, `gpu_spec` is a `|`-separated list of allowed models.
"""

from __future__ import annotations

from pathlib import Path

from tessellate.placement import InvalidRequestError, NodeSpec, Request
from tessellate.placement.catalogue import UnknownGpuModelError, gpu_model
from tessellate.simulator.trace import PodRecord, Trace, TraceError
from tessellate.simulator.traces.csvrows import read_rows

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


def load_nodes(path: str | Path) -> tuple[NodeSpec, ...]:
    """Nodes of an openb node list (`sn,cpu_milli,memory_mib,gpu,model`)."""
    path = Path(path)
    nodes: list[NodeSpec] = []
    seen: dict[str, int] = {}
    for row in read_rows(path, NODE_COLUMNS):
        name = row.text("sn")
        if not name:
            raise row.error("sn", "empty node name")
        if name in seen:
            raise row.error("sn", f"duplicate node {name!r} (first on line {seen[name]})")
        seen[name] = row.line
        gpus = row.integer("gpu")
        model = row.text("model", default="")
        if gpus and not model:
            raise row.error("model", f"node has {gpus} GPUs but no model")
        if model:
            try:
                gpu_model(model)
            except UnknownGpuModelError as exc:
                raise row.error("model", str(exc)) from None
        nodes.append(
            NodeSpec(
                name=name,
                cpu_milli=row.integer("cpu_milli"),
                memory_mib=row.integer("memory_mib"),
                gpu_count=gpus,
                gpu_model=model if gpus else "",
            )
        )
    if not nodes:
        raise TraceError(path, "no nodes in the file")
    return tuple(nodes)


def load_pods(path: str | Path) -> tuple[PodRecord, ...]:
    """Pods of an openb pod list; the time columns are optional (multigpu traces lack them)."""
    path = Path(path)
    pods: list[PodRecord] = []
    seen: dict[str, int] = {}
    for row in read_rows(path, POD_COLUMNS):
        name = row.text("name")
        if not name:
            raise row.error("name", "empty pod name")
        if name in seen:
            raise row.error("name", f"duplicate pod {name!r} (first on line {seen[name]})")
        seen[name] = row.line
        num_gpu = row.integer("num_gpu")
        request_args = {
            "cpu_milli": row.integer("cpu_milli"),
            "memory_mib": row.integer("memory_mib"),
        }
        if num_gpu:
            # Clip as the artifact does: values above a whole GPU become 1000.
            milli = min(row.integer("gpu_milli", minimum=1), 1000)
            spec = row.text("gpu_spec", default="")
            models = tuple(m.strip() for m in spec.split("|") if m.strip())
            for model in models:
                try:
                    gpu_model(model)
                except UnknownGpuModelError as exc:
                    raise row.error("gpu_spec", str(exc)) from None
            request_args |= {"gpu_count": num_gpu, "gpu_milli": milli, "gpu_models": models}
        try:
            request = Request(**request_args)
        except InvalidRequestError as exc:
            raise row.error(None, f"impossible request: {exc}") from None
        created = row.optional_number("creation_time")
        deleted = row.optional_number("deletion_time")
        if created is not None and deleted is not None and deleted < created:
            raise row.error("deletion_time", f"deleted ({deleted:g}) before created ({created:g})")
        pods.append(PodRecord(name, request, created, deleted))
    if not pods:
        raise TraceError(path, "no pods in the file")
    return tuple(pods)


def load_trace(nodes_path: str | Path, pods_path: str | Path) -> Trace:
    """An openb trace; its name is the pod file's stem, as the paper's result files use."""
    return Trace(name=Path(pods_path).stem, nodes=load_nodes(nodes_path), pods=load_pods(pods_path))
