"""`sim sweep`: the grid is complete, every list is honoured, the wrong ones are refused."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from tessellate.simulator.experiment import TraceSource
from tessellate.simulator.sweep import grid, run_local
from tessellate.simulator.traces.generic import write_trace
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

from tessellate.cli import main


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory):
    """One synthetic trace; a second node list with the first half of its nodes."""
    folder = tmp_path_factory.mktemp("clusters")
    trace = generate(SyntheticConfig(seed=3, scale=0.02))
    write_trace(trace, folder / "big.csv", folder / "pods.csv")
    small = dataclasses.replace(trace, nodes=trace.nodes[: len(trace.nodes) // 2])
    write_trace(small, folder / "small.csv", folder / "unused.csv")
    return folder


def test_grid_is_every_combination_once():
    sources = [TraceSource(synthetic_scale=s) for s in (0.02, 0.04)]
    cells = grid(sources, ["fgd", "bestfit"], [1, 2, 3], [1.0, 1.3])
    keys = {(c.source, c.policy, c.seed, c.tune) for c in cells}
    assert len(cells) == len(keys) == 2 * 2 * 3 * 2


def test_timed_grid_has_no_tune_axis():
    cells = grid([TraceSource(synthetic_scale=0.02)], ["fgd"], [1, 2], [1.0, 1.3], mode="timed")
    assert len(cells) == 2 and {c.tune for c in cells} == {None}


def test_two_nodes_are_two_clusters_in_the_table(two_clusters, tmp_path, capsys):
    code = main([
        "sim", "sweep", "--nodes", str(two_clusters / "big.csv"), "--nodes", str(two_clusters / "small.csv"),
        "--pods", str(two_clusters / "pods.csv"), "--policies", "fgd,bestfit", "--seeds", "1-2",
        "--tune", "1.0", "--tune", "1.3", "--workers", "1", "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "o" / "sweep.csv")
    assert len(table) == 2 * 2 * 2 * 2
    assert set(table.cluster) == {"big.csv", "small.csv"}
    gpus = table.groupby("cluster").total_gpus.first()
    assert gpus["small.csv"] < gpus["big.csv"]  # the second cluster really ran
    assert set(table.tune) == {1.0, 1.3}
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert len(summary) == 2 * 2 * 2 and (summary.seeds == 2).all()
    assert "small.csv" in capsys.readouterr().out


def test_timed_sweep_rows(tmp_path):
    code = main([
        "sim", "sweep", "--timed", "--synthetic-scale", "0.02", "--policies", "fgd,bestfit",
        "--seeds", "1", "--max-wait", "600", "--workers", "1", "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "o" / "sweep.csv")
    assert list(table.policy) == ["fgd", "bestfit"]
    assert table.placed_share.between(0, 1).all() and (table.pods > 0).all()


def test_pool_and_serial_give_the_same_rows():
    cells = grid([TraceSource(synthetic_scale=0.02)], ["fgd", "random"], [1, 2], [1.3])
    serial = pd.DataFrame(run_local(cells, workers=1)).drop(columns="seconds")
    pooled = pd.DataFrame(run_local(cells, workers=2)).drop(columns="seconds")
    pd.testing.assert_frame_equal(serial, pooled)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--timed", "--tune", "1.3"], "--tune is the inflation ratio"),
        (["--max-wait", "60"], "--max-wait applies to timed replays"),
        (["--nodes", "n.csv"], "give --nodes and --pods together"),
    ],
)
def test_options_that_make_no_sense_are_refused(tmp_path, capsys, extra, message):
    assert main(["sim", "sweep", *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "timed", "compare", "bound"])
def test_a_second_nodes_is_refused_by_single_cluster_commands(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", command, "--nodes", "a.csv", "--nodes", "b.csv", "--pods", "p.csv", "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "given twice (a.csv and b.csv)" in err and "sim sweep" in err


def test_a_second_policy_in_sim_run_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["sim", "run", "--policy", "fgd", "--policy", "bestfit", "--out", "x"])
    assert "--policy: given twice" in capsys.readouterr().err


def test_an_out_folder_with_another_run_is_refused_unless_force(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.csv").write_text("x\n")
    args = ["sim", "sweep", "--synthetic-scale", "0.02", "--policies", "fgd", "--seeds", "1"]
    assert main([*args, "--workers", "1", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--workers", "1", "--out", str(out), "--force"]) == 0
    assert not (out / "old.csv").exists() and (out / "sweep.csv").is_file()


def test_an_out_that_is_a_file_is_one_clear_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert main(["sim", "sweep", "--synthetic-scale", "0.02", "--seeds", "1", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_timed_sweep_plot_draws_every_policy_on_one_page(tmp_path):
    code = main([
        "sim", "sweep", "--timed", "--synthetic-scale", "0.02", "--policies", "fgd,bestfit",
        "--seeds", "1-2", "--plot", "--workers", "1", "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert code == 0
    (page,) = (tmp_path / "o").glob("timed_*/timed.html")
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2
    assert "<td>fgd</td>" in text and "<td>bestfit</td>" in text


def test_plot_without_timed_is_refused(tmp_path, capsys):
    assert main(["sim", "sweep", "--plot", "--out", str(tmp_path / "o")]) == 2
    assert "--plot draws timed replays" in capsys.readouterr().err
