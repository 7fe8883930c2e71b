"""Trace files users bring: every bad value is one error naming file, line and column.

The generic schema (CSV and Parquet, docs/trace-schema.md) is tested here in
full; the openb reader's per-row errors are in test_openb_loader.py, and here
only what it shares with the generic reader (csvrows: node-file rows, headers,
encodings, non-finite times) and format detection.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from paths import OPENB
from tessellate.placement import (
    ClusterState,
    NodeSpec,
    NumpyInts,
    Placer,
    PolicyContext,
    Request,
    Unschedulable,
    create_policy,
)
from tessellate.simulator.trace import PodRecord, Trace, TraceError
from tessellate.simulator.traces import generic, openb
from tessellate.simulator.traces.generic import load_any, load_nodes, load_pods, load_trace, write_trace
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

NODE_HEADER = "name,cpu_milli,memory_mib,gpu_count,gpu_model"
POD_HEADER = "name,cpu_milli,memory_mib,gpu_count,gpu_milli,gpu_models,creation_time,deletion_time"
GOOD_NODE = "n0,64000,262144,2,T4"
GOOD_POD = "p0,1000,1024,1,500,,0,10"
OPENB_NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
OPENB_POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time"
)

needs_openb = pytest.mark.skipif(not OPENB.is_dir(), reason="shared openb traces not present")


def csv_file(tmp_path, name: str, header: str, *rows: str):
    path = tmp_path / name
    path.write_text("\n".join((header, *rows)) + "\n")
    return path


def parquet_file(tmp_path, name: str, columns: dict[str, list]):
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


def raises(call, *args):
    with pytest.raises(TraceError) as caught:
        call(*args)
    return str(caught.value)


# --- generic CSV: one test row per kind of bad input --------------------------------------------


@pytest.mark.parametrize(
    ("rows", "line", "column", "says"),
    [
        (["p0,1000,1024,1,500,,0"], 2, None, "expected 8 fields, found 7"),
        (["p0,lots,1024,1,500,,0,10"], 2, "cpu_milli", "expected an integer, got 'lots'"),
        (["p0,1000,1.5,1,500,,0,10"], 2, "memory_mib", "expected an integer, got '1.5'"),
        (["p0,1000,-1,1,500,,0,10"], 2, "memory_mib", "must be >= 0, got -1"),
        (["p0,1000,1024,-2,500,,0,10"], 2, "gpu_count", "must be >= 0, got -2"),
        ([",1000,1024,1,500,,0,10"], 2, "name", "empty pod name"),
        ([GOOD_POD, GOOD_POD], 3, "name", "duplicate pod 'p0' (first on line 2)"),
        (["p0,1000,1024,1,500,T4|H900,0,10"], 2, "gpu_models", "unknown GPU model 'H900'; known models: A10"),
        (["p0,1000,1024,2,500,,0,10"], 2, "gpu_milli", "must ask for exactly one GPU, but gpu_count is 2"),
        (["p0,1000,1024,2,1500,,0,10"], 2, "gpu_milli", "per GPU, not the total over the 2 GPUs"),
        (["p0,1000,1024,1,0,,0,10"], 2, "gpu_milli", "must be 1..1000 milli-GPU per GPU, got 0"),
        (["p0,1000,1024,1,,,0,10"], 2, "gpu_milli", "must be 1..1000 milli-GPU per GPU, got 0"),
        (["p0,1000,1024,0,500,,0,10"], 2, "gpu_milli", "must be 0 or empty when gpu_count is 0"),
        (["p0,1000,1024,0,0,T4,0,10"], 2, "gpu_models", "pod without GPUs"),
        (["p0,1000,1024,1,500,,10,5"], 2, "deletion_time", "deleted (5) before created (10)"),
        (["p0,1000,1024,1,500,,-3,5"], 2, "creation_time", "must be >= 0 seconds"),
        (["p0,1000,1024,1,500,,soon,5"], 2, "creation_time", "expected a number or nothing, got 'soon'"),
        (["p0,1000,1024,1,500,,0,nan"], 2, "deletion_time", "expected a finite number, got 'nan'"),
    ],
)
def test_a_bad_generic_pod_row_names_file_line_and_column(tmp_path, rows, line, column, says):
    path = csv_file(tmp_path, "pods.csv", POD_HEADER, *rows)
    message = raises(load_pods, path)
    assert message.startswith(f"{path}, line {line}")
    if column:
        assert f"column {column!r}" in message
    assert says in message


@pytest.mark.parametrize(
    ("rows", "line", "column", "says"),
    [
        (["n0,64000,262144,2"], 2, None, "expected 5 fields, found 4"),
        (["n0,64000,262144,two,T4"], 2, "gpu_count", "expected an integer, got 'two'"),
        (["n0,-1,262144,2,T4"], 2, "cpu_milli", "must be >= 0, got -1"),
        ([",64000,262144,2,T4"], 2, "name", "empty node name"),
        ([GOOD_NODE, GOOD_NODE], 3, "name", "duplicate node 'n0' (first on line 2)"),
        (["n0,64000,262144,2,A100"], 2, "gpu_model", "unknown GPU model 'A100'; known models: A10, G2"),
        (["n0,64000,262144,2,"], 2, "gpu_model", "node has 2 GPUs but no GPU model"),
    ],
)
def test_a_bad_generic_node_row_names_file_line_and_column(tmp_path, rows, line, column, says):
    path = csv_file(tmp_path, "nodes.csv", NODE_HEADER, *rows)
    message = raises(load_nodes, path)
    assert message.startswith(f"{path}, line {line}")
    if column:
        assert f"column {column!r}" in message
    assert says in message


def test_max_pods_is_optional_but_checked(tmp_path):
    path = csv_file(
        tmp_path, "nodes.csv", NODE_HEADER + ",max_pods", "n0,1,1,0,,", "n1,1,1,0,,7", "n2,1,1,0,,0"
    )
    message = raises(load_nodes, path)
    assert "line 4, column 'max_pods': must be >= 1, got 0" in message
    path.write_text(f"{NODE_HEADER},max_pods\nn0,1,1,0,,\nn1,1,1,0,,7\n")
    assert [n.max_pods for n in load_nodes(path)] == [1001, 7]


def test_time_slicing_replicas_are_optional_checked_and_replayed_as_slices(tmp_path):
    header = NODE_HEADER + ",gpu_replicas"
    for row, says in (
        ("n0,1,1,0,,4", "4 time-slicing replicas on a node without GPUs"),
        ("n0,1,1,1,T4,1001", "must be 1..1000 time-slicing replicas per GPU"),
        ("n0,1,1,1,T4,0", "must be >= 1, got 0"),
    ):
        message = raises(load_nodes, csv_file(tmp_path, "nodes.csv", header, row))
        assert "column 'gpu_replicas'" in message and says in message
    nodes = load_nodes(csv_file(tmp_path, "nodes.csv", header, "n0,8000,8192,2,T4,4", "n1,8000,8192,1,T4,"))
    assert [n.gpu_replicas for n in nodes] == [4, 1]
    # The same core as the scheduler: four one-GPU pods share a T4 of n0 once n1's GPU is taken.
    state = ClusterState(nodes)
    placer = Placer(state, create_policy("bestfit", PolicyContext(rng=NumpyInts(0))))
    one = Request(cpu_milli=100, gpu_count=1, gpu_milli=1000)
    placed = []
    for k in range(10):
        decision = placer.place(f"p{k}", one)
        if not isinstance(decision, Unschedulable):
            state.allocate(decision)
            placed.append(decision)
    assert [d.node_name for d in placed] == ["n1"] + ["n0"] * 8
    assert {d.request.gpu_milli for d in placed[1:]} == {250}


def test_missing_columns_are_named_on_line_1(tmp_path):
    path = csv_file(tmp_path, "pods.csv", "name,cpu_milli,gpu_count", "p0,1,0")
    assert raises(load_pods, path) == (
        f"{path}, line 1: missing column(s) memory_mib, gpu_milli; the header has name, cpu_milli, gpu_count"
    )


def test_empty_header_only_missing_and_unknown_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert raises(load_nodes, empty) == f"{empty}: empty file (no header row)"
    header_only = csv_file(tmp_path, "pods.csv", POD_HEADER)
    assert raises(load_pods, header_only) == f"{header_only}: no pods in the file"
    absent = tmp_path / "absent.parquet"
    assert raises(load_nodes, absent) == f"{absent}: no such file"
    assert "unknown table format '.json'" in raises(load_pods, tmp_path / "pods.json")


# --- generic Parquet: same checks, line = data row + 1 ------------------------------------------


def good_pod_columns(**override) -> dict[str, list]:
    columns: dict[str, list] = {
        "name": ["p0", "p1"],
        "cpu_milli": [1000, 2000],
        "memory_mib": [1024, 2048],
        "gpu_count": [1, 0],
        "gpu_milli": [500, 0],
        "gpu_models": ["T4|P100", None],
        "creation_time": [0.0, None],
        "deletion_time": [10.5, None],
    }
    return columns | override


@pytest.mark.parametrize(
    ("override", "line", "column", "says"),
    [
        ({"cpu_milli": ["1000", "lots"]}, 3, "cpu_milli", "expected an integer, got 'lots'"),
        ({"cpu_milli": [1000.0, 2000.5]}, 3, "cpu_milli", "expected an integer, got '2000.5'"),
        ({"memory_mib": [1024, -5]}, 3, "memory_mib", "must be >= 0, got -5"),
        ({"name": ["p0", ""]}, 3, "name", "empty pod name"),
        ({"name": ["p0", "p0"]}, 3, "name", "duplicate pod 'p0' (first on line 2)"),
        ({"gpu_models": ["T4|H900", None]}, 2, "gpu_models", "unknown GPU model 'H900'"),
        ({"gpu_count": [2, 0]}, 2, "gpu_milli", "must ask for exactly one GPU"),
        ({"deletion_time": [-1.0, None]}, 2, "deletion_time", "must be >= 0 seconds"),
        ({"creation_time": [20.0, None]}, 2, "deletion_time", "deleted (10.5) before created (20)"),
        ({"creation_time": [float("inf"), None]}, 2, "creation_time", "expected a finite number"),
        ({"gpu_milli": [None, 0]}, 2, "gpu_milli", "must be 1..1000 milli-GPU per GPU, got 0"),
    ],
)
def test_a_bad_parquet_value_names_file_row_and_column(tmp_path, override, line, column, says):
    path = parquet_file(tmp_path, "pods.parquet", good_pod_columns(**override))
    message = raises(load_pods, path)
    assert message.startswith(f"{path}, line {line}, column {column!r}: ")
    assert says in message


def test_parquet_missing_column_empty_and_garbage_files(tmp_path):
    columns = good_pod_columns()
    del columns["gpu_milli"]
    path = parquet_file(tmp_path, "pods.parquet", columns)
    assert raises(load_pods, path).startswith(f"{path}, line 1: missing column(s) gpu_milli; the table has")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert "empty file" in raises(load_pods, empty)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text(f"{POD_HEADER}\n{GOOD_POD}\n")
    assert raises(load_pods, garbage).startswith(f"{garbage}: not a readable Parquet file")
    no_rows = parquet_file(
        tmp_path, "nodes.parquet", {c: pa.array([], pa.string()) for c in generic.NODE_COLUMNS}
    )
    assert raises(load_nodes, no_rows) == f"{no_rows}: no nodes in the file"


def test_parquet_as_pandas_writes_it_loads(tmp_path):
    """Nullable integers become floats in pandas, and lists are a natural model column."""
    pd = pytest.importorskip("pandas")
    path = tmp_path / "pods.parquet"
    frame = pd.DataFrame(
        {
            "name": ["p0", "p1"],
            "cpu_milli": [1000, 2000],
            "memory_mib": [1024, 2048],
            "gpu_count": [1, 0],
            "gpu_milli": [500.0, float("nan")],
            "gpu_models": [["V100M16", "V100M32"], []],
            "creation_time": [0, 5],
            "deletion_time": [10.25, float("nan")],
        }
    )
    frame.to_parquet(path)
    pods = load_pods(path)
    assert pods == (
        PodRecord("p0", Request(1000, 1024, 1, 500, ("V100M16", "V100M32")), 0.0, 10.25),
        PodRecord("p1", Request(2000, 2048), 5.0, None),
    )


# --- round trips ------------------------------------------------------------------------------------


def handmade_trace(name: str) -> Trace:
    nodes = (
        NodeSpec("gpu-a", 96000, 393216, 8, "A100-80GB", max_pods=110),
        NodeSpec("cpu-b", 64000, 262144),
    )
    pods = (
        PodRecord("train", Request(32000, 131072, 4, 1000, ("A100-80GB", "H100-80GB")), 0.0, 86400.0),
        PodRecord("infer", Request(4000, 16384, 1, 250, ("V100M16", "V100M32", "V100M32")), 0.1, 1e-7 + 0.3),
        PodRecord("etl", Request(8000, 32768), 60.0, None),
        PodRecord("untimed", Request(100, 0, 1, 1000), None, None),
    )
    return Trace(name, nodes, pods)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_trace_round_trips_exactly(tmp_path, suffix):
    trace = handmade_trace("pods")
    write_trace(trace, tmp_path / f"nodes{suffix}", tmp_path / f"pods{suffix}")
    assert load_trace(tmp_path / f"nodes{suffix}", tmp_path / f"pods{suffix}") == trace


@pytest.mark.parametrize("timing", ["busy", "trace"])
@pytest.mark.parametrize(
    ("nodes_suffix", "pods_suffix"), [(".csv", ".csv"), (".parquet", ".pq"), (".csv", ".parquet")]
)
def test_a_synthetic_trace_round_trips_exactly(tmp_path, timing, nodes_suffix, pods_suffix):
    trace = generate(SyntheticConfig(scale=0.05, seed=7, timing=timing, gpu_spec_share=0.3))
    nodes_path, pods_path = tmp_path / f"n{nodes_suffix}", tmp_path / f"sub/p{pods_suffix}"
    write_trace(trace, nodes_path, pods_path)
    loaded = load_any(nodes_path, pods_path)
    assert (loaded.nodes, loaded.pods) == (trace.nodes, trace.pods)
    assert loaded.name == "p"


# --- format detection and the openb files -----------------------------------------------------------


def test_load_any_detects_openb_and_generic_per_file(tmp_path):
    openb_nodes = csv_file(tmp_path, "onodes.csv", OPENB_NODE_HEADER, "n0,64000,262144,2,P100")
    openb_pods = csv_file(tmp_path, "opods.csv", OPENB_POD_HEADER, "p0,1000,1024,1,1200,,LS,Running,0,10")
    generic_nodes = csv_file(tmp_path, "gnodes.csv", NODE_HEADER, "n0,64000,262144,2,P100")
    generic_pods = parquet_file(tmp_path, "gpods.parquet", good_pod_columns())
    assert generic.detect_format(openb_nodes, "nodes") == "openb"
    assert generic.detect_format(generic_pods, "pods") == "generic"
    both_openb = load_any(openb_nodes, openb_pods)
    assert both_openb.pods[0].request.gpu_milli == 1000  # openb clips, as the artifact does
    mixed = load_any(openb_nodes, generic_pods)
    assert mixed.nodes == load_any(generic_nodes, generic_pods).nodes
    assert mixed.name == "gpods"
    # An openb pod file handed to the generic loader is refused, not misread.
    assert "missing column(s) gpu_count" in raises(load_pods, openb_pods)


def test_load_any_reports_the_loaders_errors(tmp_path):
    bad = csv_file(tmp_path, "pods.csv", OPENB_POD_HEADER, "p0,1000,1024,1,500,,LS,Running,0,nan")
    nodes = csv_file(tmp_path, "nodes.csv", NODE_HEADER, GOOD_NODE)
    assert "line 2, column 'deletion_time': expected a finite number" in raises(load_any, nodes, bad)
    assert raises(load_any, tmp_path / "none.csv", bad) == f"{tmp_path / 'none.csv'}: no such file"


@pytest.mark.parametrize(
    ("rows", "line", "column", "says"),
    [
        (["n0,64000,262144,2"], 2, None, "expected 5 fields, found 4"),
        (["n0,64000,262144,2,P100", "n0,64000,262144,2,P100"], 3, "sn", "duplicate node 'n0'"),
        ([",64000,262144,2,P100"], 2, "sn", "empty node name"),
        (["n0,64000,-1,2,P100"], 2, "memory_mib", "must be >= 0, got -1"),
    ],
)
def test_a_bad_openb_node_row_names_file_line_and_column(tmp_path, rows, line, column, says):
    path = csv_file(tmp_path, "nodes.csv", OPENB_NODE_HEADER, *rows)
    message = raises(openb.load_nodes, path)
    assert message.startswith(f"{path}, line {line}")
    if column:
        assert f"column {column!r}" in message
    assert says in message


def test_csv_headers_tolerate_a_byte_order_mark_and_refuse_duplicates(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_bytes(("\ufeff" + OPENB_NODE_HEADER + "\nn0,64000,262144,2,P100\n").encode())
    assert openb.load_nodes(path)[0].name == "n0"
    path.write_text(NODE_HEADER + ",name\nn0,1,1,0,,n1\n")
    assert raises(load_nodes, path) == f"{path}, line 1: duplicate column(s) name in the header"
    path.write_bytes(NODE_HEADER.encode() + b"\n\xff\xfe,1,1,0,\n")
    assert "not UTF-8 text" in raises(load_nodes, path)


def test_openb_empty_and_missing_node_files(tmp_path):
    empty = tmp_path / "nodes.csv"
    empty.write_text("")
    assert raises(openb.load_nodes, empty) == f"{empty}: empty file (no header row)"
    assert raises(openb.load_pods, tmp_path / "x.csv") == f"{tmp_path / 'x.csv'}: no such file"


@needs_openb
def test_the_real_openb_default_trace_loads_through_load_any():
    trace = load_any(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_default.csv")
    assert (len(trace.nodes), trace.total_gpus, len(trace.pods)) == (1213, 6212, 8152)
    assert sum(p.request.is_cpu_only for p in trace.pods) == 1088
    assert trace.name == "openb_pod_list_default"


@needs_openb
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_real_openb_trace_survives_conversion_to_the_generic_schema(tmp_path, suffix):
    trace = openb.load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_gpuspec25.csv")
    write_trace(trace, tmp_path / f"nodes{suffix}", tmp_path / f"openb_pod_list_gpuspec25{suffix}")
    assert load_any(tmp_path / f"nodes{suffix}", tmp_path / f"openb_pod_list_gpuspec25{suffix}") == trace
