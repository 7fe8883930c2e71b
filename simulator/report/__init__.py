"""Reporting layer of `tessellate sim compare`: summary table, CSVs, PNG plots, one HTML file.

One module per output: `summary` (frames, summary, CSVs, bound rows), `plots`, `terminal`,
`html`; `write_report` writes them all.

Inputs are the three per-run frames in the FGD paper's result-file format
(fgd-protocol.md Sec. 4.3): one row per run with the index columns
`workload, sc_policy, tune, seed` (plus `total_gpus` in the allocation frame)
and the columns "0".."130" = the metric at x% of cluster GPU capacity arrived.
The index columns may be ordinary columns or the frame's (multi-)index.

Everything here is pure: no global matplotlib state is touched (figures are
built on the Agg canvas directly), so it is safe to call from worker threads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from tessellate.simulator.report.html import write_html
from tessellate.simulator.report.plots import plot_alloc_curves, plot_final_bars, plot_frag_curves
from tessellate.simulator.report.summary import (
    ARRIVED,
    INDEX_COLUMNS,
    _flat,
    _sorted_policies,
    best_policies,
    best_verdicts,
    bound_sentences,
    policy_colors,
    summarize,
    with_bound,
    write_csvs,
)
from tessellate.simulator.report.terminal import render_table

__all__ = [
    "ARRIVED",
    "INDEX_COLUMNS",
    "best_policies",
    "best_verdicts",
    "plot_alloc_curves",
    "plot_final_bars",
    "plot_frag_curves",
    "policy_colors",
    "render_table",
    "summarize",
    "write_csvs",
    "write_html",
    "write_report",
]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "workload"


def _derived_meta(alloc: pd.DataFrame) -> dict[str, Any]:
    df = _flat(alloc, "alloc")
    meta: dict[str, Any] = {
        "workloads": sorted(df["workload"].astype(str).unique()),
        "policies": _sorted_policies(df["sc_policy"].astype(str)),
        "seeds": sorted(int(s) if float(s).is_integer() else s for s in pd.to_numeric(df["seed"]).unique()),
        "total_runs": len(df),
    }
    if "tune" in df.columns:
        tunes = [t for t in df["tune"].unique() if pd.notna(t)]
        meta["tune"] = ", ".join(str(t) for t in sorted(tunes)) if tunes else "none"
    return meta


def write_report(
    out_dir: str | Path,
    alloc: pd.DataFrame,
    frag: pd.DataFrame,
    frag_ratio: pd.DataFrame,
    extra: pd.DataFrame | None = None,
    meta: Mapping | None = None,
    bound: pd.DataFrame | None = None,
    models: pd.DataFrame | None = None,
    gpu_hour_price: float | None = None,
) -> Path:
    """Summary, CSVs, an allocation and a fragmentation PNG per workload, the final-bars PNG and
    report.html, all in `out_dir`.  Returns the HTML path.  `meta` entries override derived ones.
    `bound` (`simulator.bound` results as a frame) adds the bracket's rows, a dashed line and
    the idle/recoverable sentence. `models` (`experiment.model_frame`) adds the per GPU model
    tables at 100 % and 130 % arrived (and models.csv, with an `arrived_pct` column) and the
    stranded GPUs at the end of the runs in GPUs and money at `gpu_hour_price`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = with_bound(summarize(alloc, frag, frag_ratio, extra), bound)
    write_csvs(out, alloc, frag, frag_ratio, summary)
    plots: dict[str, Path] = {}
    used: set[str] = set()
    workloads = list(dict.fromkeys(summary["workload"].astype(str)))
    bars_caption = "Final GPU allocation ratio at 130 % arrived, per policy"
    if len(workloads) > 1:  # the overview first; with one workload the Fig. 9a curve leads
        plots[bars_caption] = plot_final_bars(summary, out / "final_alloc.png")
    for workload in workloads:
        slug = _slug(workload)
        while slug in used:
            slug += "_"
        used.add(slug)
        plots[f"GPU allocation ratio vs arrived workload: {workload}"] = plot_alloc_curves(
            alloc, out / f"alloc_{slug}.png", workload, bound
        )
        plots[f"GPU fragmentation ratio vs arrived workload: {workload}"] = plot_frag_curves(
            frag_ratio, out / f"frag_{slug}.png", workload
        )
    if len(workloads) == 1:
        plots[bars_caption] = plot_final_bars(summary, out / "final_alloc.png")
    full_meta = {**_derived_meta(alloc), **dict(meta or {})}
    notes = bound_sentences(summary, bound)
    extra_html = ""
    if models is not None and not models.empty:
        from tessellate.simulator.report.money import (
            fragmentation_sentences,
            model_summary,
            model_table_html,
        )

        per_model = model_summary(models)
        per_model.round(4).to_csv(out / "models.csv", index=False)
        notes = [*notes, *fragmentation_sentences(models, gpu_hour_price)]
        extra_html = model_table_html(per_model)
    return write_html(out, summary, plots, full_meta, notes, extra_html)
