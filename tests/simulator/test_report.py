"""The reporting layer of `tessellate sim compare` (simulator/report.py)."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paths import EXPECTED
from rich.console import Console
from tessellate.simulator import report

COLUMNS = [str(x) for x in range(131)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Final allocation (%) per policy for seed 42; seed 43 adds 1.  Listed out of the paper's order on purpose.
CAPS = {"06-FGD": 95.0, "01-Random": 85.0, "05-BestFit": 90.0}
WORKLOADS = ("wl_a", "wl_b")
SEEDS = (42, 43)


def _curve(cap: float) -> list[float]:
    """Allocation follows the arrivals (y = x) until the policy's cap, then stays flat."""
    return [round(min(float(x), cap), 2) for x in range(131)]


def _frames(workloads=WORKLOADS, caps=CAPS, seeds=SEEDS) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    alloc, frag, ratio = [], [], []
    for w, workload in enumerate(workloads):
        for policy, cap in caps.items():
            for seed in seeds:
                key = {"workload": workload, "sc_policy": policy, "tune": 1.3, "seed": seed}
                c = cap + (seed - 42) - w  # workload b allocates 1 point less
                alloc.append({**key, "total_gpus": 6212, **dict(zip(COLUMNS, _curve(c), strict=True))})
                # fragmentation (% of GPUs) = what is not allocated at the end, minus 1
                frag.append(
                    {**key, **{col: round((100 - c - 1) * x / 130, 2) for x, col in enumerate(COLUMNS)}}
                )
                ratio.append({**key, **{col: 10 + x * 0.5 + (seed - 42) for x, col in enumerate(COLUMNS)}})
    return pd.DataFrame(alloc), pd.DataFrame(frag), pd.DataFrame(ratio)


def _real(name: str, policies=("01-Random", "06-FGD"), seeds=(42, 43)) -> pd.DataFrame:
    df = pd.read_csv(EXPECTED / name)
    keep = (df.workload == "openb_pod_list_default") & df.sc_policy.isin(policies) & df.seed.isin(seeds)
    return df[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def frames():
    return _frames()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, frames):
    """One full report over the made-up frames (a hostile workload name included)."""
    alloc, frag, ratio = _frames(workloads=("wl_a", "<script>alert(1)</script>"))
    extra = alloc[["workload", "sc_policy", "seed"]].assign(failed_pods=3, seconds=2.0)
    out = tmp_path_factory.mktemp("report")
    meta = {"traces": ["wl_a", "<b>x</b>"], "wall_time_s": 200.0, "note": 'a "quoted" & <tagged> value'}
    path = report.write_report(out, alloc, frag, ratio, extra=extra, meta=meta)
    return out, path


# --------------------------------------------------------------------------- summarize


def test_summarize_means_and_spread(frames):
    s = report.summarize(*frames)
    assert len(s) == 6
    assert list(s.columns[:3]) == ["workload", "sc_policy", "seeds"]
    row = s[(s.workload == "wl_a") & (s.sc_policy == "01-Random")].iloc[0]
    assert row.seeds == 2
    assert row.alloc_at_130_mean == pytest.approx(85.5)
    assert row.alloc_at_130_std == pytest.approx(math.sqrt(0.5))  # sample std of 85, 86
    assert (row.alloc_at_130_min, row.alloc_at_130_max) == (85.0, 86.0)
    assert row.alloc_at_100_mean == pytest.approx(85.5)  # capped below 100 already
    assert row.frag_at_130_mean == pytest.approx(13.5)  # 100 - 85.5 - 1
    assert row.frag_ratio_at_130_mean == pytest.approx(10 + 65 + 0.5)
    fgd_b = s[(s.workload == "wl_b") & (s.sc_policy == "06-FGD")].iloc[0]
    assert fgd_b.alloc_at_130_mean == pytest.approx(94.5)


def test_summarize_sorts_by_workload_then_paper_order(frames):
    s = report.summarize(*frames)
    assert list(s.workload) == ["wl_a"] * 3 + ["wl_b"] * 3
    assert list(s.sc_policy[:3]) == ["01-Random", "05-BestFit", "06-FGD"]


def test_summarize_orders_cli_names_and_unknown_policies():
    caps = {"zeta": 80.0, "fgd": 95.0, "alpha": 81.0, "random": 85.0, "clustering": 90.0, "06-FGD": 94.0}
    s = report.summarize(*_frames(workloads=("w",), caps=caps))
    assert list(s.sc_policy) == ["random", "clustering", "06-FGD", "fgd", "alpha", "zeta"]


def test_summarize_single_seed_has_nan_std_and_skips_empty_cells():
    alloc, frag, ratio = _frames(workloads=("w",), seeds=(42,))
    alloc.loc[0, "100"] = np.nan
    s = report.summarize(alloc, frag, ratio)
    assert s.seeds.tolist() == [1, 1, 1]
    assert s.alloc_at_130_std.isna().all()
    assert math.isnan(s.alloc_at_100_mean.iloc[s.sc_policy.tolist().index("06-FGD")])


def test_summarize_accepts_index_columns_as_index(frames):
    alloc, frag, ratio = frames
    indexed = [f.set_index(["workload", "sc_policy", "tune", "seed"]) for f in frames]
    pd.testing.assert_frame_equal(report.summarize(*indexed), report.summarize(alloc, frag, ratio))


def test_summarize_averages_extra_columns(frames):
    alloc = frames[0]
    extra = alloc[["workload", "sc_policy", "seed"]].copy()
    extra["failed_pods"] = np.where(extra.seed == 42, 10, 20)
    extra["seconds"] = 1.5
    extra["label"] = "text columns are ignored"
    s = report.summarize(*frames, extra=extra)
    assert s.failed_pods_mean.tolist() == [15.0] * 6
    assert s.seconds_mean.tolist() == [1.5] * 6
    assert not any(c.startswith("label") for c in s.columns)


def test_best_policies(frames):
    assert report.best_policies(report.summarize(*frames)) == {"wl_a": "06-FGD", "wl_b": "06-FGD"}


def test_summarize_real_rows():
    files = ("analysis_allo_discrete.csv", "analysis_frag_discrete.csv", "analysis_frag_ratio_discrete.csv")
    alloc, frag, ratio = (_real(f) for f in files)
    assert len(alloc) == 4
    s = report.summarize(alloc, frag, ratio)
    assert list(s.sc_policy) == ["01-Random", "06-FGD"]
    for policy, got in zip(s.sc_policy, s.itertuples(), strict=True):
        rows = alloc[alloc.sc_policy == policy]
        assert got.seeds == 2
        assert got.alloc_at_130_mean == pytest.approx(rows["130"].mean())
        assert got.alloc_at_100_mean == pytest.approx(rows["100"].mean())
        assert got.alloc_at_130_std == pytest.approx(rows["130"].std())
        assert got.frag_at_130_mean == pytest.approx(frag[frag.sc_policy == policy]["130"].mean())
    # the paper's headline: FGD allocates more than Random
    assert s.alloc_at_130_mean.iloc[1] > s.alloc_at_130_mean.iloc[0] + 5


def test_summarize_matches_reference_summary():
    files = ("analysis_allo_discrete.csv", "analysis_frag_discrete.csv", "analysis_frag_ratio_discrete.csv")
    s = report.summarize(*(pd.read_csv(EXPECTED / f) for f in files))
    ref = pd.read_csv(EXPECTED / "summary.csv").rename(columns={"policy": "sc_policy"})
    merged = ref.merge(s, on=["workload", "sc_policy"], suffixes=("_ref", ""))
    assert len(merged) == len(ref) == len(s)
    assert (merged.seeds_ref == merged.seeds).all()
    for col in ("alloc_at_100_mean", "alloc_at_130_mean", "alloc_at_130_min", "alloc_at_130_max"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_ref"], atol=0.0051)


# --------------------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path, frames):
    alloc, frag, ratio = frames
    alloc = alloc.copy()
    alloc.loc[1, "7"] = np.nan
    summary = report.summarize(alloc, frag, ratio)
    paths = report.write_csvs(tmp_path, alloc, frag, ratio, summary)
    assert {p.name for p in paths.values()} == {
        "analysis_allo_discrete.csv",
        "analysis_frag_discrete.csv",
        "analysis_frag_ratio_discrete.csv",
        "summary.csv",
    }
    header = tmp_path.joinpath("analysis_allo_discrete.csv").read_text().splitlines()[0]
    assert header.split(",") == ["workload", "sc_policy", "tune", "seed", "total_gpus", *COLUMNS]
    header = tmp_path.joinpath("analysis_frag_discrete.csv").read_text().splitlines()[0]
    assert header.split(",") == ["workload", "sc_policy", "tune", "seed", *COLUMNS]
    assert ",," in tmp_path.joinpath("analysis_allo_discrete.csv").read_text()  # NaN is an empty cell
    for frame, path in ((alloc, paths["alloc"]), (frag, paths["frag"]), (ratio, paths["frag_ratio"])):
        back = pd.read_csv(path)
        assert list(back.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    back = pd.read_csv(paths["summary"])
    assert list(back.columns) == list(summary.columns)
    np.testing.assert_allclose(back.alloc_at_130_mean, summary.alloc_at_130_mean, atol=1e-4)


def test_csv_keeps_paper_column_order_and_adds_missing_tune(tmp_path, frames):
    alloc, frag, ratio = frames
    shuffled = alloc[[*COLUMNS[::-1], "seed", "total_gpus", "sc_policy", "workload"]]  # tune dropped
    paths = report.write_csvs(tmp_path, shuffled, frag, ratio, report.summarize(*frames))
    back = pd.read_csv(paths["alloc"])
    assert list(back.columns) == ["workload", "sc_policy", "tune", "seed", "total_gpus", *COLUMNS]
    assert back.tune.isna().all()
    assert back.seed.dtype.kind == "i"


def test_csv_reproduces_paper_rows_byte_for_byte(tmp_path):
    names = ("analysis_allo_discrete.csv", "analysis_frag_discrete.csv", "analysis_frag_ratio_discrete.csv")
    frames = [_real(n, policies=("01-Random", "03-GpuClustering", "06-FGD"), seeds=(42,)) for n in names]
    report.write_csvs(tmp_path, *frames, report.summarize(*frames))
    for name in names:
        lines = EXPECTED.joinpath(name).read_text().splitlines()
        wanted = [lines[0]] + [
            ln
            for ln in lines[1:]
            if re.match(r"openb_pod_list_default,(01-Random|03-GpuClustering|06-FGD),1\.3,42,", ln)
        ]
        assert tmp_path.joinpath(name).read_text().splitlines() == wanted


# --------------------------------------------------------------------------- plots


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _assert_png(path: Path, min_width: int = 800) -> None:
    assert path.exists()
    width, height = _png_size(path)
    assert min_width <= width <= 2000
    assert 400 <= height <= 1200
    assert 10_000 < path.stat().st_size < 2_000_000


def test_plot_alloc_curves(tmp_path, frames):
    path = report.plot_alloc_curves(frames[0], tmp_path / "sub" / "alloc.png", "wl_a")
    assert path == tmp_path / "sub" / "alloc.png"
    _assert_png(path)
    assert _png_size(path) == (900, 552)


def test_plot_frag_curves(tmp_path, frames):
    _assert_png(report.plot_frag_curves(frames[2], tmp_path / "ratio.png", "wl_b"))
    _assert_png(report.plot_frag_curves(frames[1], tmp_path / "amount.png", "wl_b", kind="amount"))
    with pytest.raises(ValueError, match="kind"):
        report.plot_frag_curves(frames[2], tmp_path / "x.png", "wl_b", kind="nope")


def test_plot_unknown_workload_is_an_error(tmp_path, frames):
    with pytest.raises(ValueError, match="no rows"):
        report.plot_alloc_curves(frames[0], tmp_path / "x.png", "missing")


def test_plot_tolerates_empty_cells_and_dollar_signs(tmp_path):
    alloc, _, _ = _frames(workloads=("cost $5 $6",), caps={"$x$": 90.0, "fgd": 95.0})
    alloc.loc[:, [str(x) for x in range(120, 131)]] = np.nan  # arrivals stopped early
    alloc.loc[0, "50"] = np.nan
    _assert_png(report.plot_alloc_curves(alloc, tmp_path / "a.png", "cost $5 $6"))


def test_plot_final_bars_single_and_grouped(tmp_path, frames):
    summary = report.summarize(*frames)
    _assert_png(report.plot_final_bars(summary[summary.workload == "wl_a"], tmp_path / "one.png"))
    _assert_png(report.plot_final_bars(summary, tmp_path / "many.png"))


def test_policy_colours_are_stable_across_subsets():
    full = report.policy_colors(["01-Random", "06-FGD", "custom", "05-BestFit"])
    assert report.policy_colors(["06-FGD"])["06-FGD"] == full["06-FGD"]
    assert report.policy_colors(["fgd"])["fgd"] == full["06-FGD"]  # CLI name, same colour
    assert len({c for c, _ in full.values()}) == len(full)


# --------------------------------------------------------------------------- HTML


def test_report_writes_every_file(rendered):
    out, path = rendered
    assert path == out / "report.html"
    names = {p.name for p in out.iterdir()}
    assert {
        "analysis_allo_discrete.csv",
        "analysis_frag_discrete.csv",
        "analysis_frag_ratio_discrete.csv",
        "summary.csv",
        "final_alloc.png",
        "alloc_wl_a.png",
        "frag_wl_a.png",
    } <= names
    pngs = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert len(pngs) == 5  # alloc + frag per workload, one bar chart
    for png in pngs:
        _assert_png(png)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) for p in out.iterdir())


def test_html_is_self_contained(rendered):
    _, path = rendered
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"@import|url\(|<link|<script|<iframe", text, re.I)
    assert text.count('src="data:image/png;base64,') == 5
    assert "<style>" in text


def test_html_content(rendered):
    _, path = rendered
    text = path.read_text(encoding="utf-8")
    for policy in CAPS:
        assert policy in text
    assert re.search(r'<tr class="best[^"]*">.*?06-FGD<span class="badge">best</span>', text)
    assert text.count('<span class="badge">best</span>') == 2  # one per workload
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text
    assert "a &quot;quoted&quot; &amp; &lt;tagged&gt; value" in text
    assert "How to read this" in text and "Fragmentation" in text and "Allocation ratio" in text
    assert "3 min 20 s" in text  # wall time
    assert "failed pods" in text


def test_write_html_with_explicit_plots(tmp_path, frames):
    summary = report.summarize(*frames)
    png = report.plot_final_bars(summary, tmp_path / "bars.png")
    path = report.write_html(
        tmp_path / "html", summary, {"Bars <&>": png}, {"title": "T <1>", "seeds": [1, 2]}
    )
    text = path.read_text(encoding="utf-8")
    assert "<title>T &lt;1&gt;</title>" in text
    assert "Bars &lt;&amp;&gt;" in text
    assert text.count("data:image/png;base64,") == 1


# --------------------------------------------------------------------------- terminal


def test_render_table(frames):
    summary = report.summarize(*frames)
    table = report.render_table(summary)
    assert table.row_count == len(summary) == 6
    styles = [row.style for row in table.rows]
    assert styles.count("bold green") == 2
    assert [c.header for c in table.columns][:2] == ["Workload", "Policy"]
    console = Console(width=160, record=True, color_system=None)
    console.print(table)
    rendered = console.export_text()
    assert "85.50 ± 0.71" in rendered
    assert "06-FGD ★" in rendered


def test_the_report_explains_the_topology_and_mig_columns_it_shows(tmp_path):
    from tessellate.cli import main

    out = tmp_path / "topo"
    assert main(["sim", "compare", "--synthetic-kind", "mixed-topology", "--policies", "fgd-blind,fgd",
                 "--seeds", "1", "--out", str(out)]) == 0  # fmt: skip
    html = (out / "report.html").read_text()
    how_to = html[html.index("How to read this") :]
    for column in ("multi gpu on best set pct", "multi gpu bottleneck gbps"):
        assert f"<b>{column}</b>" in how_to
    assert "mig frag slices" not in how_to  # only what the table shows is explained
