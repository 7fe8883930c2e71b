"""The openb loader: the real trace loads as the paper describes; every bad row is named."""

from __future__ import annotations

import pytest
from paths import OPENB
from tessellate.simulator.trace import TraceError
from tessellate.simulator.traces.openb import load_nodes, load_pods, load_trace

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time"
GOOD_POD = "p0,1000,1024,1,500,,LS,Running,0,10"


def test_the_real_default_trace_has_the_papers_shape():
    trace = load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_default.csv")
    assert (len(trace.nodes), trace.total_gpus, len(trace.pods)) == (1213, 6212, 8152)
    assert sum(p.request.is_cpu_only for p in trace.pods) == 1088
    assert trace.gpu_demand_milli == 6_086_800
    assert trace.name == "openb_pod_list_default"


def test_cpu_only_pods_carry_no_gpu_fields_and_specs_keep_duplicates(tmp_path):
    pods = tmp_path / "pods.csv"
    pods.write_text(
        f"{POD_HEADER}\np0,1000,1024,0,500,T4,LS,Running,0,10\np1,1000,1024,1,1000,V100M16||V100M32|V100M32,LS,,0,\n"
    )
    cpu_only, spec = load_pods(pods)
    assert (cpu_only.request.gpu_count, cpu_only.request.gpu_milli, cpu_only.request.gpu_models) == (0, 0, ())
    assert spec.request.gpu_models == ("V100M16", "V100M32", "V100M32")
    assert spec.deletion_time is None


@pytest.mark.parametrize(
    ("row", "line", "column", "says"),
    [
        ("p0,1000,1024,one,500,,LS,Running,0,10", 2, "num_gpu", "expected an integer, got 'one'"),
        ("p0,-5,1024,1,500,,LS,Running,0,10", 2, "cpu_milli", "must be >= 0"),
        (",1000,1024,1,500,,LS,Running,0,10", 2, "name", "empty pod name"),
        ("p0,1000,1024,1,500,H900,LS,Running,0,10", 2, "gpu_spec", "unknown GPU model 'H900'"),
        ("p0,1000,1024,2,500,,LS,Running,0,10", 2, None, "must ask for exactly one GPU"),
        ("p0,1000,1024,1,0,,LS,Running,0,10", 2, "gpu_milli", "must be >= 1"),
        ("p0,1000,1024,1,500,,LS,Running,10,5", 2, "deletion_time", "before created"),
        ("p0,1000,1024,1,500,,LS,Running,soon,10", 2, "creation_time", "expected a number"),
        ("p0,1000,1024,1,500,,LS,Running,0", 2, None, "expected 10 fields, found 9"),
        (f"{GOOD_POD}\n{GOOD_POD}", 3, "name", "duplicate pod 'p0' (first on line 2)"),
    ],
)
def test_a_bad_pod_row_names_file_line_and_column(tmp_path, row, line, column, says):
    pods = tmp_path / "pods.csv"
    pods.write_text(f"{POD_HEADER}\n{row}\n")
    with pytest.raises(TraceError) as caught:
        load_pods(pods)
    message = str(caught.value)
    assert message.startswith(f"{pods}, line {line}")
    if column:
        assert f"column {column!r}" in message
    assert says in message


@pytest.mark.parametrize(
    ("row", "column", "says"),
    [
        ("n0,64000,262144,2,P1000", "model", "known models: A10, G2"),
        ("n0,64000,262144,2,", "model", "has 2 GPUs but no model"),
        ("n0,64000,262144,-1,T4", "gpu", "must be >= 0"),
        ("n0,lots,262144,2,T4", "cpu_milli", "expected an integer"),
    ],
)
def test_a_bad_node_row_names_file_line_and_column(tmp_path, row, column, says):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(f"{NODE_HEADER}\n{row}\n")
    with pytest.raises(TraceError, match=f"line 2, column '{column}': .*{says}"):
        load_nodes(nodes)


def test_missing_columns_empty_and_absent_files_are_errors(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("sn,cpu_milli\nn0,1\n")
    with pytest.raises(TraceError, match=r"missing column.*memory_mib, gpu, model"):
        load_nodes(short)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TraceError, match="empty file"):
        load_pods(empty)
    only_header = tmp_path / "header.csv"
    only_header.write_text(POD_HEADER + "\n")
    with pytest.raises(TraceError, match="no pods"):
        load_pods(only_header)
    with pytest.raises(TraceError, match="no such file"):
        load_nodes(tmp_path / "absent.csv")
