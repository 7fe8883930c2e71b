"""The generic schema's device columns: a MIG or NVLink cluster replays as one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tessellate.placement import NodeSpec, Request
from tessellate.placement.mig import MigInstance, MigLayout, geometry
from tessellate.placement.model import MigSpec
from tessellate.placement.topology import dgx1_v100, nvswitch
from tessellate.simulator.timed import PLACED, run_timed
from tessellate.simulator.trace import PodRecord, Trace, TraceError
from tessellate.simulator.traces.generic import load_trace, write_trace

A100 = geometry("A100-80GB")


def mig_node(name: str = "m1", dynamic: bool = False) -> NodeSpec:
    layouts = (
        MigLayout(A100, (MigInstance("3g.40gb", 0), MigInstance("1g.10gb", 4))),
        None,
        MigLayout(A100, ()),
    )
    return NodeSpec(
        name, 64_000, 1 << 19, 3, "A100-80GB", mig=MigSpec(layouts, dynamic), gpu_memory_mib=81_920
    )


def mig_pod(name: str, profile: str = "1g.10gb", at: float = 0.0) -> PodRecord:
    return PodRecord(name, Request(1000, 1024, mig_profile=profile, mig_count=1), at, None)


def roundtrip(trace: Trace, tmp_path: Path, suffix: str = ".csv") -> Trace:
    write_trace(trace, tmp_path / f"nodes{suffix}", tmp_path / f"pods{suffix}")
    return load_trace(tmp_path / f"nodes{suffix}", tmp_path / f"pods{suffix}")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_mig_layouts_gpu_memory_topology_and_mig_pods_survive_a_round_trip(
    tmp_path: Path, suffix: str
) -> None:
    nodes = (
        mig_node(),
        mig_node("m2", dynamic=True),
        NodeSpec("nv", 96_000, 1 << 20, 8, "H100-80GB", topology=nvswitch(8)),
        NodeSpec("v1", 96_000, 1 << 20, 8, "V100M32", topology=dgx1_v100()),
        NodeSpec("plain", 32_000, 1 << 18, 4, "T4"),
    )
    pods = (
        mig_pod("a"),
        mig_pod("b", "3g.40gb", 5.0),
        PodRecord("w", Request(1000, 1024, 2, 1000), 1.0, 9.0),
    )
    again = roundtrip(Trace("t", nodes, pods), tmp_path, suffix)
    assert again.nodes == nodes and again.pods == pods


def test_a_replayed_mig_cluster_places_mig_pods_on_the_instances_it_has(tmp_path: Path) -> None:
    trace = roundtrip(
        Trace("t", (mig_node(),), (mig_pod("small-0"), mig_pod("small-1"), mig_pod("half", "3g.40gb"))),
        tmp_path,
    )
    result = run_timed(trace, "fgd")
    # One free 1g.10gb and one free 3g.40gb exist on a static node: two of the three start.
    assert sorted(n for n, o in result.outcome.items() if o == PLACED) in (
        ["half", "small-0"],
        ["half", "small-1"],
    )
    dynamic = roundtrip(Trace("t", (mig_node(dynamic=True),), trace.pods), tmp_path / "d")
    assert all(o == PLACED for o in run_timed(dynamic, "fgd").outcome.values())  # new instances in free slots


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("mig_layout", "9g.90gb@0;-;-", "GPU 0"),
        ("mig_layout", "3g.40gb;-;-", "profile@start"),
        ("mig_layout", "-;-", "2 GPU entries for a node with 3 GPUs"),
        ("mig_dynamic", "2", "must be 0 or 1"),
        ("topology", "{not json", "gpu-topology"),
    ],
)
def test_a_bad_device_cell_names_its_column(tmp_path: Path, column: str, value: str, message: str) -> None:
    cells = {"mig_layout": "-;-;-", "mig_dynamic": "0", "topology": ""}
    cells[column] = value
    header = "name,cpu_milli,memory_mib,gpu_count,gpu_model,mig_layout,mig_dynamic,topology"
    row = f'm1,64000,524288,3,A100-80GB,{cells["mig_layout"]},{cells["mig_dynamic"]},"{cells["topology"]}"'
    (tmp_path / "nodes.csv").write_text(f"{header}\n{row}\n")
    (tmp_path / "pods.csv").write_text("name,cpu_milli,memory_mib,gpu_count,gpu_milli\np,1000,1024,0,\n")
    with pytest.raises(TraceError, match=message) as err:
        load_trace(tmp_path / "nodes.csv", tmp_path / "pods.csv")
    assert column in str(err.value)


def test_mig_on_a_model_without_mig_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nodes.csv").write_text(
        "name,cpu_milli,memory_mib,gpu_count,gpu_model,mig_layout\nt,1,1,1,T4,-\n"
    )
    (tmp_path / "pods.csv").write_text("name,cpu_milli,memory_mib,gpu_count,gpu_milli\np,1000,1024,0,\n")
    with pytest.raises(TraceError, match="has no MIG"):
        load_trace(tmp_path / "nodes.csv", tmp_path / "pods.csv")
