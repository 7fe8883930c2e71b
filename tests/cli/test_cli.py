"""The `tessellate` command as a user runs it: files written, errors that say what to do."""

from __future__ import annotations

import pandas as pd
import pytest
from paths import OPENB

from tessellate.cli import main, parse_seeds

PAPER_COLUMNS = ["workload", "sc_policy", "tune", "seed", "total_gpus"] + [str(x) for x in range(131)]


def test_sim_run_on_the_openb_trace_writes_the_papers_three_files(tmp_path, capsys):
    code = main([
        "sim", "run", "--nodes", str(OPENB / "openb_node_list_gpu_node.csv"),
        "--pods", str(OPENB / "openb_pod_list_multigpu20.csv"),
        "--policy", "bestfit", "--seed", "42", "--out", str(tmp_path), "--plot",
    ])  # fmt: skip
    assert code == 0
    alloc = pd.read_csv(tmp_path / "analysis_allo_discrete.csv")
    assert list(alloc.columns) == PAPER_COLUMNS
    assert alloc.loc[0, "workload"] == "openb_pod_list_multigpu20"
    assert alloc.loc[0, "sc_policy"] == "05-BestFit"
    frag = pd.read_csv(tmp_path / "analysis_frag_discrete.csv")
    assert list(frag.columns) == PAPER_COLUMNS[:4] + PAPER_COLUMNS[5:]
    assert (tmp_path / "analysis_frag_ratio_discrete.csv").is_file()
    assert (tmp_path / "alloc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    failed = pd.read_csv(tmp_path / "failed_pods.csv")
    assert failed.reason.str.startswith("0/1213 nodes are available:").all()
    assert "130" in capsys.readouterr().out


def test_sim_compare_on_the_synthetic_default_writes_a_report(tmp_path, capsys):
    code = main([
        "sim", "compare", "--synthetic-scale", "0.05", "--policies", "fgd,bestfit",
        "--seeds", "1-2", "--workers", "1", "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    alloc = pd.read_csv(tmp_path / "analysis_allo_discrete.csv")
    assert sorted(alloc.sc_policy.unique()) == ["05-BestFit", "06-FGD"]
    assert sorted(alloc.seed.unique()) == [1, 2]
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "06-FGD" in html
    assert "report.html" in capsys.readouterr().out


def test_sim_timed_on_the_synthetic_default(tmp_path):
    code = main(["sim", "timed", "--synthetic-scale", "0.05", "--out", str(tmp_path)])
    assert code == 0
    series = pd.read_csv(tmp_path / "timeseries.csv")
    assert series.alloc_ratio.between(0, 1).all() and series.alloc_ratio.max() > 0
    pods = pd.read_csv(tmp_path / "pods.csv")
    assert set(pods.outcome) <= {"placed", "timed_out", "withdrawn", "pending"}


def test_a_broken_trace_row_is_one_clear_error_line(tmp_path, capsys):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\n")
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,one,1000\n")
    code = main(["sim", "run", "--nodes", str(nodes), "--pods", str(pods), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "pods.csv, line 2, column 'num_gpu'" in err and "Traceback" not in err


def test_an_unknown_gpu_model_lists_the_known_ones(tmp_path, capsys):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P1000\n")
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,1,1000\n")
    assert main(["sim", "run", "--nodes", str(nodes), "--pods", str(pods), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown GPU model 'P1000'" in err and "V100M32" in err


def test_pods_without_nodes_is_a_usage_error_and_missing_nodes_say_so(tmp_path, capsys):
    assert main(["sim", "run", "--pods", str(tmp_path / "p.csv"), "--out", str(tmp_path)]) == 2
    assert "--pods needs its cluster: give --nodes too" in capsys.readouterr().err
    # --nodes alone sizes the synthetic workload to them (test_trace_cli.py); a missing file says so
    assert main(["sim", "run", "--nodes", str(tmp_path / "n.csv"), "--out", str(tmp_path)]) == 2
    assert "n.csv: no such file" in capsys.readouterr().err


def test_unknown_policy_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["sim", "compare", "--policies", "fgd,tetris", "--out", "x"])
    err = capsys.readouterr().err
    assert "unknown policy tetris" in err and "bestfit" in err


@pytest.mark.parametrize(
    ("text", "seeds"), [("42", [42]), ("42,44", [42, 44]), ("42-45", [42, 43, 44, 45]), ("1,5-6", [1, 5, 6])]
)
def test_seed_ranges(text, seeds):
    assert parse_seeds(text) == seeds


def test_sim_compare_shows_topology_aware_against_blind_side_by_side(tmp_path, capsys):
    code = main([
        "sim", "compare", "--synthetic-kind", "mixed-topology", "--policies", "fgd-blind,fgd",
        "--seeds", "42", "--workers", "1", "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("sc_policy")
    on_best = summary["multi_gpu_on_best_set_pct_mean"]
    assert on_best["06-FGD"] == 100.0 and on_best["fgd-blind"] < 100.0
    assert summary.loc["06-FGD", "alloc_at_130_mean"] == summary.loc["fgd-blind", "alloc_at_130_mean"]
    assert "best set" in capsys.readouterr().out  # the new columns reach the terminal table


def test_sim_compare_shows_mig_aware_against_first_fit_side_by_side(tmp_path):
    code = main([
        "sim", "compare", "--synthetic-kind", "mig", "--policies", "bestfit",
        "--mig-choice", "aware,firstfit", "--seeds", "1-2", "--workers", "1", "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("sc_policy")
    assert set(summary.index) == {"05-BestFit", "05-BestFit+mig-firstfit"}
    assert (summary["mig_pods_placed_mean"] > 0).all()
    assert summary["mig_frag_slices_mean"].notna().all()


def test_a_bad_mig_choice_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["sim", "compare", "--mig-choice", "best", "--out", "x"])
    assert "--mig-choice takes aware, firstfit or both" in capsys.readouterr().err


def test_a_rerun_into_a_used_folder_is_refused_unless_forced_and_version_is_printed(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sim", "run", "--synthetic-scale", "0.02", "--policy", "bestfit", "--out", str(out)]
    assert main(args) == 0
    (out / "stale-from-another-run.csv").write_text("x\n")
    assert main(args) == 2
    assert "already holds files of another run" in capsys.readouterr().err.replace("\n", "")
    assert main([*args, "--force"]) == 0 and not (out / "stale-from-another-run.csv").exists()
    is_a_file = str(out / "analysis_allo_discrete.csv")
    assert main(["sim", "run", "--synthetic-scale", "0.02", "--out", is_a_file]) == 2
    shown = capsys.readouterr()
    assert "is a file; give a folder" in (shown.out + shown.err).replace("\n", "")
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and "\ntessellate " in "\n" + capsys.readouterr().out


def test_the_synthetic_mix_is_settable_from_the_command_line(tmp_path, capsys):
    from tessellate.simulator.experiment import TraceSource

    shares = TraceSource(synthetic_scale=0.05, synthetic_mix="cpu=0,frac=1,whole=0").load().pods
    assert shares and all(p.request.gpu_count == 1 and p.request.gpu_milli < 1000 for p in shares)
    whole = TraceSource(synthetic_scale=0.05, synthetic_mix="whole=1,spec=0").load().pods
    assert all(p.request.gpu_milli == 1000 and not p.request.gpu_models for p in whole)
    args = ["sim", "run", "--synthetic-scale", "0.05", "--out", str(tmp_path / "o")]
    assert main([*args, "--synthetic-mix", "frac=0.5,whole=0.5"]) == 0
    for bad, said in (("frac=lots", "KEY=NUMBER"), ("gpu=1", "unknown key 'gpu'"), ("spec=2", "0..1")):
        assert main([*args, "--force", "--synthetic-mix", bad]) == 2
        shown = capsys.readouterr()
        assert said in (shown.out + shown.err).replace("\n", ""), bad
