"""`sim compare`: per GPU model breakdown, stranded GPUs in GPUs and money, "best" only when
the lead is larger than the seeds' spread."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from tessellate.simulator import report
from tessellate.simulator.experiment import run_shares
from tessellate.simulator.replay import run_inflation
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

from tessellate.cli import main


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    code = main([
        "sim", "compare", "--synthetic-scale", "0.1", "--policies", "fgd,bestfit", "--seeds", "1-3",
        "--workers", "1", "--gpu-hour-price", "2", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    return out


def test_models_csv_has_every_model_and_policy(compared):
    models = pd.read_csv(compared / "models.csv")
    assert set(models.sc_policy) == {"06-FGD", "05-BestFit"}
    assert models.gpu_model.nunique() > 1
    assert set(models.arrived_pct) == {100, 130}
    assert (models.groupby(["sc_policy", "arrived_pct"]).size() == models.gpu_model.nunique()).all()
    assert models.alloc_pct_mean.between(0, 100).all() and (models.frag_gpus_mean >= 0).all()


def test_models_csv_allocation_at_100_is_at_most_that_at_130(compared):
    """No departures in the paper's protocol: a model's GPUs only fill up between the two points."""
    models = pd.read_csv(compared / "models.csv")
    wide = models.pivot_table(
        index=["sc_policy", "gpu_model"], columns="arrived_pct", values="alloc_pct_mean"
    )
    assert not wide.isna().any().any(), "both points for every policy and model"
    assert (wide[100] <= wide[130] + 1e-9).all()
    assert (wide[100].groupby("sc_policy").sum() < wide[130].groupby("sc_policy").sum()).all()


def test_the_100_pct_snapshot_is_where_the_papers_column_100_starts():
    trace = generate(SyntheticConfig(seed=3, scale=0.05))
    result = run_inflation(trace, "fgd", 42)
    shares = run_shares(result, trace)
    at = {pct: {m.gpu_model: m for m in shares if m.arrived_pct == pct} for pct in (100, 130)}
    assert len(shares) == 2 * len(at[130]) and at[100].keys() == at[130].keys() and len(at[100]) > 1
    for model, full in at[100].items():
        assert full.gpus == at[130][model].gpus
        assert full.allocated_milli <= at[130][model].allocated_milli
    arrived = np.round(result.series.arrived_milli / result.total_gpus / 10, 0)
    first = int(np.argmax(arrived >= 100))  # the first event of the paper's column 100
    held = sum(m.allocated_milli for m in at[100].values())
    assert held == result.series.used_milli[first] < result.series.used_milli[-1]
    assert sum(m.allocated_milli for m in at[130].values()) == result.series.used_milli[-1]


def test_a_run_that_ends_at_100_pct_has_one_point():
    trace = generate(SyntheticConfig(seed=3, scale=0.05))
    shares = run_shares(run_inflation(trace, "bestfit", 42, tune=1.0), trace)
    assert {m.arrived_pct for m in shares} == {100}
    assert len(shares) == len({m.gpu_model for m in shares})


def test_money_is_the_saved_gpus_at_the_price(compared, capsys):
    models = pd.read_csv(compared / "models.csv")
    frag = models[models.arrived_pct == 130].groupby("sc_policy").frag_gpus_mean.sum()
    saved = frag["05-BestFit"] - frag["06-FGD"]
    page = (compared / "report.html").read_text()
    match = re.search(r"saves (\d+) GPUs over 05-BestFit \(≈ \$([\d,]+) per month at \$2\.00", page)
    assert match, "the saving sentence is in the report"
    assert int(match.group(1)) == round(saved)
    assert int(match.group(2).replace(",", "")) == pytest.approx(saved * 2 * 730, rel=1e-3)
    assert "at 130 % arrived (end of run): 06-FGD leaves" in page  # the sentence names its point
    assert "Per GPU model at 100 % arrived" in page and "Per GPU model at 130 % arrived" in page


def test_the_terminal_shows_the_models_and_the_sentence(tmp_path, capsys):
    args = ["sim", "compare", "--synthetic-scale", "0.05", "--policies", "fgd,bestfit", "--seeds", "1-2"]
    assert main([*args, "--workers", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "per GPU model at 100 % arrived" in out and "per GPU model at 130 % arrived" in out
    assert "GPUs idle but unusable" in out
    assert "add --gpu-hour-price" in out  # no price given: GPUs only, and how to get money


def _summary(means: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"workload": "w", "sc_policy": p, "alloc_at_130_mean": pd.Series(v).mean(),
         "alloc_at_130_std": pd.Series(v).std()}
        for p, v in means.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_lead_inside_the_seeds_spread_is_no_best():
    verdict = report.best_verdicts(_summary({"06-FGD": [90, 94], "05-BestFit": [89, 93]}))["w"]
    assert verdict[0] is None and verdict[1].startswith("no significant difference")
    assert report.best_policies(_summary({"06-FGD": [90, 94], "05-BestFit": [89, 93]})) == {}


def test_a_lead_beyond_the_spread_is_best():
    assert report.best_policies(_summary({"06-FGD": [95, 96], "05-BestFit": [90, 91]})) == {"w": "06-FGD"}


def test_one_seed_awards_nothing():
    verdict = report.best_verdicts(_summary({"06-FGD": [95], "05-BestFit": [90]}))["w"]
    assert verdict[0] is None and "one seed" in verdict[1]
