"""Tessellate's generic trace schema: two tables (nodes, pods) in CSV or Parquet.

This is the format users export from their own clusters (docs/trace-schema.md
documents it for them). Unlike the openb reader it is strict: nothing is
clipped or silently dropped, because a value we "fix" is a value the user
never learns is wrong.

Both formats go through the same `csvrows.Row` checks: each Parquet cell is
turned into the text a CSV export would hold, so an error reads the same
whichever format the user picked. Parquet has no lines; we report
`line = data row number + 1` (the first data row is line 2, the column names
count as line 1), i.e. the line the row would have in the same table exported
to CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from tessellate.placement import MILLI_PER_GPU, InvalidRequestError, NodeSpec, Request
from tessellate.placement.catalogue import UnknownGpuModelError, gpu_model, model_for_product
from tessellate.placement.quota.spec import QUEUE_NAME
from tessellate.simulator.trace import PodRecord, Trace, TraceError
from tessellate.simulator.traces import openb
from tessellate.simulator.traces.csvrows import Row, read_rows
from tessellate.simulator.traces.devicecols import node_device_columns, read_node_devices

NODE_COLUMNS = ("name", "cpu_milli", "memory_mib", "gpu_count", "gpu_model")
NODE_OPTIONAL_COLUMNS = ("max_pods", "gpu_replicas")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "gpu_count", "gpu_milli")
POD_OPTIONAL_COLUMNS = (
    "gpu_models",
    "creation_time",
    "deletion_time",
    "queue",
    "priority",
    "pod_group",
    "pod_group_min",
)
TENANCY_COLUMNS = ("queue", "priority", "pod_group", "pod_group_min")
"""Multi-tenant columns (docs/queues.md); written only when some pod uses them."""

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

DEFAULT_MAX_PODS = NodeSpec("default", 0, 0).max_pods
"""Same default as NodeSpec (the openb simulator's 1001 pods per node)."""

TableFormat = Literal["csv", "parquet"]


# --- reading tables --------------------------------------------------------------------------


def table_format(path: str | Path) -> TableFormat:
    """The storage format named by the file suffix; anything else is an error, not a guess."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    known = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    raise TraceError(path, f"unknown table format {suffix or '(no suffix)'!r}; expected one of {known}")


def read_table(path: str | Path, required: Sequence[str]) -> Iterator[Row]:
    """Rows of a CSV or Parquet table, each checked for the `required` columns."""
    path = Path(path)
    if table_format(path) == "csv":
        return read_rows(path, required)
    return _parquet_rows(path, required)


def read_header(path: str | Path) -> list[str]:
    """Column names only, without reading the data (for format detection)."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise TraceError(path, "no such file")
    if fmt == "parquet":
        return list(_parquet_schema(path).names)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(path, f"unreadable CSV header: {exc}", line=1) from None
    if header is None:
        raise TraceError(path, "empty file (no header row)")
    return [h.strip() for h in header]


def _parquet_schema(path: Path) -> pa.Schema:
    if path.stat().st_size == 0:
        raise TraceError(path, "empty file (not a Parquet file)")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(path, f"not a readable Parquet file: {exc}") from None


def _parquet_rows(path: Path, required: Sequence[str]) -> Iterator[Row]:
    if not path.is_file():
        raise TraceError(path, "no such file")
    _parquet_schema(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(path, f"not a readable Parquet file: {exc}") from None
    header = list(table.column_names)
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise TraceError(path, f"duplicate column(s) {', '.join(duplicated)}", line=1)
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(
            path, f"missing column(s) {', '.join(missing)}; the table has {', '.join(header)}", line=1
        )
    # Column-wise conversion: one to_pylist per column is far cheaper than per-row access.
    columns = {name: [_cell_text(v) for v in table.column(name).to_pylist()] for name in header}
    for index in range(table.num_rows):
        yield Row(path, index + 2, {name: cells[index] for name, cells in columns.items()})


def _cell_text(value: object) -> str:
    """A Parquet cell as CSV text, so that `Row` applies exactly the CSV checks.

    Floats use repr (exact round trip); nulls become empty cells; a list of
    strings (e.g. gpu_models stored as list<string>) becomes a `|`-joined cell.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "|".join(_cell_text(v) for v in value)
    return str(value)


# --- nodes and pods ---------------------------------------------------------------------------


def _check_model(row: Row, column: str, model: str) -> None:
    try:
        gpu_model(model)
    except UnknownGpuModelError as exc:
        raise row.error(column, str(exc)) from None


def _name(row: Row, kind: str, seen: dict[str, int]) -> str:
    name = row.text("name")
    if not name:
        raise row.error("name", f"empty {kind} name")
    if name in seen:
        raise row.error("name", f"duplicate {kind} {name!r} (first on line {seen[name]})")
    seen[name] = row.line
    return name


def _node(row: Row, seen: dict[str, int]) -> NodeSpec:
    name = _name(row, "node", seen)
    gpus = row.integer("gpu_count")
    model = model_for_product(row.text("gpu_model", default=""))  # a product label as the scheduler maps it
    if gpus and not model:
        raise row.error("gpu_model", f"node has {gpus} GPUs but no GPU model")
    if model:
        _check_model(row, "gpu_model", model)
    replicas = row.integer("gpu_replicas", minimum=1, default=1)
    if replicas > MILLI_PER_GPU:
        raise row.error(
            "gpu_replicas", f"must be 1..{MILLI_PER_GPU} time-slicing replicas per GPU, got {replicas}"
        )
    if replicas > 1 and not gpus:
        raise row.error("gpu_replicas", f"{replicas} time-slicing replicas on a node without GPUs")
    return NodeSpec(
        name=name,
        cpu_milli=row.integer("cpu_milli"),
        memory_mib=row.integer("memory_mib"),
        gpu_count=gpus,
        gpu_model=model,
        max_pods=row.integer("max_pods", minimum=1, default=DEFAULT_MAX_PODS),
        gpu_replicas=replicas,
        **read_node_devices(row, gpus, model),  # type: ignore[arg-type]
    )


def _time(row: Row, column: str) -> float | None:
    value = row.optional_number(column)
    if value is not None and value < 0:
        raise row.error(column, f"must be >= 0 seconds from the trace start, got {value:g}")
    return value


def _gpu_fields(row: Row, gpus: int) -> dict[str, object]:
    """gpu_count/gpu_milli/gpu_models checked with the column to blame, before Request sees them."""
    milli = row.integer("gpu_milli", default=0)
    models = tuple(
        model_for_product(m.strip()) for m in row.text("gpu_models", default="").split("|") if m.strip()
    )
    if gpus == 0:
        if milli != 0:
            raise row.error("gpu_milli", f"must be 0 or empty when gpu_count is 0, got {milli}")
        if models:
            raise row.error("gpu_models", "allowed GPU models given for a pod without GPUs (gpu_count 0)")
        return {}
    if not 1 <= milli <= MILLI_PER_GPU:
        hint = ""
        if milli > MILLI_PER_GPU and gpus > 1:
            hint = f" (gpu_milli is per GPU, not the total over the {gpus} GPUs)"
        raise row.error("gpu_milli", f"must be 1..{MILLI_PER_GPU} milli-GPU per GPU, got {milli}{hint}")
    if milli < MILLI_PER_GPU and gpus != 1:
        raise row.error(
            "gpu_milli",
            f"impossible request: a GPU fraction ({milli} milli-GPU) must ask for exactly one GPU, "
            f"but gpu_count is {gpus}",
        )
    for model in models:
        _check_model(row, "gpu_models", model)
    return {"gpu_count": gpus, "gpu_milli": milli, "gpu_models": models}


def _pod(row: Row, seen: dict[str, int]) -> PodRecord:
    name = _name(row, "pod", seen)
    cpu = row.integer("cpu_milli")
    memory = row.integer("memory_mib")
    gpu = _gpu_fields(row, row.integer("gpu_count"))
    mig = {
        "mig_profile": row.text("mig_profile", default=""),
        "mig_count": row.integer("mig_count", default=0),
    }
    if not mig["mig_profile"] and not mig["mig_count"]:
        mig = {}
    try:
        request = Request(cpu_milli=cpu, memory_mib=memory, **gpu, **mig)  # type: ignore[arg-type]
    except InvalidRequestError as exc:
        raise row.error("mig_profile" if mig else None, f"impossible request: {exc}") from None
    created = _time(row, "creation_time")
    deleted = _time(row, "deletion_time")
    if created is not None and deleted is not None and deleted < created:
        raise row.error("deletion_time", f"deleted ({deleted:g}) before created ({created:g})")
    return PodRecord(name, request, created, deleted, **_tenancy(row))


def _tenancy(row: Row) -> dict[str, object]:
    """queue / priority / pod_group / pod_group_min, each optional (absent: default queue, 0, none)."""
    queue = row.text("queue", default="")
    if queue and not QUEUE_NAME.match(queue):
        raise row.error("queue", f"{queue!r} is not a queue name (lower-case letters, digits, '-', '.')")
    priority = row.integer("priority", minimum=-(2**31), default=0)
    if priority >= 2**31:
        raise row.error("priority", f"must fit a Kubernetes priority (int32), got {priority}")
    group = row.text("pod_group", default="")
    group_min = row.integer("pod_group_min", minimum=0, default=0)
    if group_min and not group:
        raise row.error(
            "pod_group_min", "given for a pod without a pod_group; name its group or leave it empty"
        )
    return {"queue": queue, "priority": priority, "pod_group": group, "pod_group_min": group_min}


def load_nodes(path: str | Path) -> tuple[NodeSpec, ...]:
    """Nodes of a generic node table (`name,cpu_milli,memory_mib,gpu_count,gpu_model[,max_pods]`)."""
    seen: dict[str, int] = {}
    nodes = tuple(_node(row, seen) for row in read_table(path, NODE_COLUMNS))
    if not nodes:
        raise TraceError(path, "no nodes in the file")
    return nodes


def load_pods(path: str | Path) -> tuple[PodRecord, ...]:
    """Pods of a generic pod table (`name,cpu_milli,memory_mib,gpu_count,gpu_milli[,...]`)."""
    seen: dict[str, int] = {}
    pods = tuple(_pod(row, seen) for row in read_table(path, POD_COLUMNS))
    if not pods:
        raise TraceError(path, "no pods in the file")
    return pods


def load_trace(nodes_path: str | Path, pods_path: str | Path) -> Trace:
    """A generic trace; like openb, its name is the pod file's stem."""
    return Trace(name=Path(pods_path).stem, nodes=load_nodes(nodes_path), pods=load_pods(pods_path))


# --- format detection --------------------------------------------------------------------------

TraceFormat = Literal["openb", "generic"]


def detect_format(path: str | Path, kind: Literal["nodes", "pods"]) -> TraceFormat:
    """openb if the header has openb's own column (`sn` for nodes, `num_gpu` for pods)."""
    marker = "sn" if kind == "nodes" else "num_gpu"
    return "openb" if marker in read_header(path) else "generic"


def load_cluster(nodes_path: str | Path) -> tuple[NodeSpec, ...]:
    """A node table in either format (openb or generic), without pods."""
    if detect_format(nodes_path, "nodes") == "openb":
        return openb.load_nodes(nodes_path)
    return load_nodes(nodes_path)


def load_any(nodes_path: str | Path, pods_path: str | Path) -> Trace:
    """Load openb or generic files, detected per file, so the CLI needs no format flag.

    Each file is detected on its own: an openb node list can be combined with
    a generic pod table. openb files are CSV only (that is how Alibaba ships them).
    """
    nodes = (
        openb.load_nodes(nodes_path)
        if detect_format(nodes_path, "nodes") == "openb"
        else load_nodes(nodes_path)
    )
    pods = openb.load_pods(pods_path) if detect_format(pods_path, "pods") == "openb" else load_pods(pods_path)
    return Trace(name=Path(pods_path).stem, nodes=nodes, pods=pods)


# --- writing -------------------------------------------------------------------------------------


def _time_text(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def _node_columns(trace: Trace) -> dict[str, list[object]]:
    return {
        "name": [n.name for n in trace.nodes],
        "cpu_milli": [n.cpu_milli for n in trace.nodes],
        "memory_mib": [n.memory_mib for n in trace.nodes],
        "gpu_count": [n.gpu_count for n in trace.nodes],
        "gpu_model": [n.gpu_model for n in trace.nodes],
        "max_pods": [n.max_pods for n in trace.nodes],
        "gpu_replicas": [n.gpu_replicas for n in trace.nodes],
        **node_device_columns(trace),
    }


def _pod_columns(trace: Trace) -> dict[str, list[object]]:
    requests = [p.request for p in trace.pods]
    columns: dict[str, list[object]] = {
        "name": [p.name for p in trace.pods],
        "cpu_milli": [r.cpu_milli for r in requests],
        "memory_mib": [r.memory_mib for r in requests],
        "gpu_count": [r.gpu_count for r in requests],
        "gpu_milli": [r.gpu_milli for r in requests],
        "gpu_models": ["|".join(r.gpu_models) for r in requests],
        "creation_time": [p.creation_time for p in trace.pods],
        "deletion_time": [p.deletion_time for p in trace.pods],
    }
    if any(r.mig_count for r in requests):
        columns["mig_profile"] = [r.mig_profile for r in requests]
        columns["mig_count"] = [r.mig_count for r in requests]
    if any(p.queue or p.priority or p.pod_group for p in trace.pods):
        columns["queue"] = [p.queue for p in trace.pods]
        columns["priority"] = [p.priority for p in trace.pods]
        columns["pod_group"] = [p.pod_group for p in trace.pods]
        columns["pod_group_min"] = [p.pod_group_min for p in trace.pods]
    return columns


_PARQUET_TYPES = {
    "name": pa.string(),
    "gpu_model": pa.string(),
    "gpu_models": pa.string(),
    "queue": pa.string(),
    "mig_layout": pa.string(),
    "mig_profile": pa.string(),
    "topology": pa.string(),
    "pod_group": pa.string(),
    "creation_time": pa.float64(),
    "deletion_time": pa.float64(),
}


def _write_table(path: Path, columns: dict[str, list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if table_format(path) == "parquet":
        arrays = {
            name: pa.array(values, type=_PARQUET_TYPES.get(name, pa.int64()))
            for name, values in columns.items()
        }
        pq.write_table(pa.table(arrays), path)
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for values in zip(*columns.values(), strict=True):
            writer.writerow(_time_text(v) if isinstance(v, float) or v is None else v for v in values)


def write_trace(trace: Trace, nodes_path: str | Path, pods_path: str | Path) -> None:
    """Save a trace in the generic schema (format by suffix) so it reloads exactly.

    Times are written as integers when they are whole seconds and as Python's
    shortest exact float text otherwise, so CSV round trips are bit-exact.
    """
    for pod in trace.pods:
        for t in (pod.creation_time, pod.deletion_time):
            if t is not None and not math.isfinite(t):
                raise TraceError(pods_path, f"pod {pod.name}: time {t} is not finite")
    _write_table(Path(nodes_path), _node_columns(trace))
    _write_table(Path(pods_path), _pod_columns(trace))
