"""`sim timed`: pods.csv has the columns --help promises, never_placed split by cause, --plot."""

from __future__ import annotations

import pandas as pd
import pytest

from tessellate.cli import main

NODES = "name,cpu_milli,memory_mib,gpu_count,gpu_model\nn0,64000,262144,2,V100M32\n"
PODS = """name,cpu_milli,memory_mib,gpu_count,gpu_milli,creation_time,deletion_time
big,1000,1024,4,1000,0,500
p1,1000,1024,2,1000,0,100
p2,1000,1024,2,1000,10,1000
p3,1000,1024,1,1000,20,30
p4,1000,1024,1,1000,50,200
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "nodes.csv").write_text(NODES)
    (tmp_path / "pods.csv").write_text(PODS)
    return tmp_path


def _timed(tiny, *extra: str) -> int:
    return main([
        "sim", "timed", "--nodes", str(tiny / "nodes.csv"), "--pods", str(tiny / "pods.csv"),
        "--max-wait", "50", "--out", str(tiny / "out"), *extra,
    ])  # fmt: skip


def test_pods_csv_has_creation_start_delay_and_cause(tiny):
    assert _timed(tiny) == 0
    pods = pd.read_csv(tiny / "out" / "pods.csv").set_index("pod")
    pods["never_placed_cause"] = pods["never_placed_cause"].fillna("")
    for column in ("creation_s", "start_s", "delay_s", "never_placed_cause", "outcome"):
        assert column in pods.columns
    assert pods.loc["p4", "creation_s"] == 50 and pods.loc["p4", "start_s"] == 100
    assert pods.loc["p4", "delay_s"] == 50  # waited for p1 to leave
    assert pods.loc["p1", "delay_s"] == 0
    assert pods.loc["big", "never_placed_cause"] == "fits_no_node"  # 4 GPUs, the node has 2
    assert pods.loc["p2", "never_placed_cause"] == "timed_out"
    assert pods.loc["p3", "never_placed_cause"] == "withdrawn"
    assert pods.loc["p1", "never_placed_cause"] == ""
    assert pd.isna(pods.loc["big", "start_s"]) and pd.isna(pods.loc["big", "delay_s"])


def test_summary_splits_never_placed_into_causes_that_add_up(tiny):
    assert _timed(tiny) == 0
    summary = pd.read_csv(tiny / "out" / "summary.csv").iloc[0]
    causes = ["fits_no_node", "timed_out", "withdrawn", "pending_at_end"]
    assert [summary[f"never_placed_{c}"] for c in causes] == [1, 1, 1, 0]
    assert sum(summary[f"never_placed_{c}"] for c in causes) == summary["never_placed"]


def test_plot_writes_the_timeline_the_cdf_and_one_page(tiny, capsys):
    assert _timed(tiny, "--plot") == 0
    out = tiny / "out"
    for name in ("timeline.png", "delay_cdf.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "timed.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "fits no node" in page and "timed out" in page
    assert "timed.html" in capsys.readouterr().out


def test_without_plot_no_pictures(tiny):
    assert _timed(tiny) == 0
    assert not (tiny / "out" / "timeline.png").exists()
