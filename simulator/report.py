"""Reporting layer of `tessellate sim compare`: summary table, CSVs, PNG plots, one HTML file.

Inputs are the three per-run frames in the FGD paper's result-file format
(fgd-protocol.md Sec. 4.3): one row per run with the index columns
`workload, sc_policy, tune, seed` (plus `total_gpus` in the allocation frame)
and the columns "0".."130" = the metric at x% of cluster GPU capacity arrived.
The index columns may be ordinary columns or the frame's (multi-)index.

Everything here is pure: no global matplotlib state is touched (figures are
built on the Agg canvas directly), so it is safe to call from worker threads.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from placement import PAPER_POLICIES

__all__ = [
    "ARRIVED",
    "INDEX_COLUMNS",
    "best_policies",
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

ARRIVED = tuple(str(x) for x in range(131))
"""The paper's x axis: arrived GPU demand in % of cluster GPU capacity, as column names."""

INDEX_COLUMNS = ("workload", "sc_policy", "tune", "seed")
"""Per-run key columns of the paper's result files (allocation adds `total_gpus`)."""

ALLOC_INDEX_COLUMNS = (*INDEX_COLUMNS, "total_gpus")

CSV_NAMES = {
    "alloc": "analysis_allo_discrete.csv",
    "frag": "analysis_frag_discrete.csv",
    "frag_ratio": "analysis_frag_ratio_discrete.csv",
    "summary": "summary.csv",
}

# The paper's six policies in the paper's order, by canonical name.  Both the
# artifact's labels ("06-FGD") and this project's CLI names ("fgd") map here.
_ALIASES = {"gpuclustering": "clustering", "gpupacking": "packing"}

# Okabe-Ito (colour-blind safe).  Fixed per paper policy so that a policy has the
# same colour in every plot and every report; FGD gets the strongest colour.
_PAPER_COLORS = {
    "random": "#E69F00",  # orange
    "dotprod": "#56B4E9",  # sky blue
    "clustering": "#009E73",  # bluish green
    "packing": "#CC79A7",  # reddish purple
    "bestfit": "#0072B2",  # blue
    "fgd": "#D55E00",  # vermillion
}
_EXTRA_COLORS = ("#000000", "#8C7A00", "#7F7F7F", "#44AA99", "#882255", "#332288", "#999933")
_PAPER_MARKERS = {
    "random": "o",
    "dotprod": "s",
    "clustering": "^",
    "packing": "v",
    "bestfit": "D",
    "fgd": "*",
}
_EXTRA_MARKERS = ("P", "X", "h", "<", ">", "p", "d")

_DPI = 120

BOUND_LABEL = "upper bound (any policy)"
PACKING_LABEL = "offline packing"
BOUND_LABELS = (BOUND_LABEL, PACKING_LABEL)
"""Summary rows `sim compare --bound` adds: the proven bracket, not policies (never 'best')."""
_WIDE = (7.5, 4.6)  # 900 x 552 px at 120 dpi


# --------------------------------------------------------------------------- frames


def _canonical(policy: str) -> str:
    """'06-FGD' -> 'fgd', '03-GpuClustering' -> 'clustering', 'bestfit' -> 'bestfit'."""
    name = re.sub(r"^\d+[-_ ]*", "", str(policy)).lower().replace("-", "").replace("_", "")
    return _ALIASES.get(name, name)


def _policy_key(policy: str) -> tuple[int, str]:
    canon = _canonical(policy)
    rank = PAPER_POLICIES.index(canon) if canon in PAPER_POLICIES else len(PAPER_POLICIES)
    return rank, str(policy)


def _sorted_policies(policies: Iterable[str]) -> list[str]:
    return sorted(set(policies), key=_policy_key)


def policy_colors(policies: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per policy: fixed for the paper's six, stable by sorted name for others."""
    out: dict[str, tuple[str, str]] = {}
    extra = 0
    for policy in _sorted_policies(policies):
        canon = _canonical(policy)
        if canon in _PAPER_COLORS:
            out[policy] = (_PAPER_COLORS[canon], _PAPER_MARKERS[canon])
        else:
            out[policy] = (
                _EXTRA_COLORS[extra % len(_EXTRA_COLORS)],
                _EXTRA_MARKERS[extra % len(_EXTRA_MARKERS)],
            )
            extra += 1
    return out


def _flat(frame: pd.DataFrame, name: str = "frame") -> pd.DataFrame:
    """The frame with index columns as ordinary columns and "0".."130" as string column names."""
    df = frame.copy()
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
    df.columns = [str(c) for c in df.columns]
    missing = [c for c in ("workload", "sc_policy", "seed") if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing key column(s) {missing}; has {list(df.columns)[:8]}...")
    return df


def _arrived_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ARRIVED if c in df.columns]


def _at(df: pd.DataFrame, x: int) -> pd.Series:
    col = str(x)
    if col in df.columns:
        return pd.to_numeric(df[col], errors="coerce")
    return pd.Series(np.nan, index=df.index)


def _stats(groups: pd.core.groupby.SeriesGroupBy, prefix: str) -> pd.DataFrame:
    out = groups.agg(["mean", "std", "min", "max"])
    out.columns = [f"{prefix}_{c}" for c in out.columns]
    return out


def _keyed(df: pd.DataFrame, x: int, prefix: str) -> pd.DataFrame:
    values = pd.DataFrame({"workload": df["workload"], "sc_policy": df["sc_policy"], "v": _at(df, x)})
    return _stats(values.groupby(["workload", "sc_policy"], sort=False)["v"], prefix)


def _order(summary: pd.DataFrame) -> pd.DataFrame:
    key = summary.apply(lambda r: (str(r["workload"]), *_policy_key(r["sc_policy"])), axis=1)
    return summary.iloc[sorted(range(len(summary)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def summarize(
    alloc: pd.DataFrame,
    frag: pd.DataFrame,
    frag_ratio: pd.DataFrame,
    extra: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (workload, sc_policy): statistics over seeds of the headline numbers.

    Columns: `workload, sc_policy, seeds`, then `<metric>_{mean,std,min,max}` for
    `alloc_at_100`, `alloc_at_130` (allocation ratio, % of cluster mGPU),
    `frag_at_130` (fragmented GPU, % of cluster capacity) and `frag_ratio_at_130`
    (fragmentation, % of idle GPU), then `<col>_mean` for every numeric per-run
    column of `extra` (keyed by workload, sc_policy, seed; e.g. `failed_pods`,
    `seconds`).  `std` is the sample standard deviation (NaN for one seed); empty
    cells are skipped.  Rows are sorted by workload, then the paper's policy order
    (Random, DotProd, GpuClustering, GpuPacking, BestFit, FGD), then other names.
    """
    a, f, r = _flat(alloc, "alloc"), _flat(frag, "frag"), _flat(frag_ratio, "frag_ratio")
    seeds = a.groupby(["workload", "sc_policy"], sort=False)["seed"].nunique().rename("seeds")
    parts = [
        seeds,
        _keyed(a, 100, "alloc_at_100"),
        _keyed(a, 130, "alloc_at_130"),
        _keyed(f, 130, "frag_at_130"),
        _keyed(r, 130, "frag_ratio_at_130"),
    ]
    summary = pd.concat(parts, axis=1)
    if extra is not None and len(extra):
        e = _flat(extra, "extra")
        skip = {"workload", "sc_policy", "seed", "tune", "total_gpus"}
        cols = [c for c in e.columns if c not in skip and pd.api.types.is_numeric_dtype(e[c])]
        if cols:
            means = e.groupby(["workload", "sc_policy"], sort=False)[cols].mean()
            means.columns = [f"{c}_mean" for c in cols]
            summary = summary.join(means, how="left")
    summary = summary.reset_index()
    summary["seeds"] = summary["seeds"].fillna(0).astype(int)
    return _order(summary)


def best_policies(summary: pd.DataFrame) -> dict[str, str]:
    """Per workload, the policy with the highest mean allocation ratio at x=130 (ties: paper order)."""
    best: dict[str, str] = {}
    for workload, rows in summary.groupby("workload", sort=False):
        rows = rows[~rows["sc_policy"].astype(str).isin(BOUND_LABELS)]
        values = pd.to_numeric(rows["alloc_at_130_mean"], errors="coerce")
        if values.notna().any():
            best[str(workload)] = str(rows.loc[values.idxmax(), "sc_policy"])
    return best


# --------------------------------------------------------------------------- CSV


def _for_csv(frame: pd.DataFrame, index_cols: tuple[str, ...]) -> pd.DataFrame:
    df = _flat(frame)
    for col in index_cols:
        if col not in df.columns:  # e.g. no tune: keep the paper's columns, cell left empty
            df[col] = np.nan
    df = df[[*index_cols, *_arrived_columns(df)]].copy()
    for col in ("seed", "total_gpus"):
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            if values.notna().all() and (values == values.round()).all():
                df[col] = values.astype("int64")
    return df


def write_csvs(
    out_dir: str | Path,
    alloc: pd.DataFrame,
    frag: pd.DataFrame,
    frag_ratio: pd.DataFrame,
    summary: pd.DataFrame,
) -> dict[str, Path]:
    """The paper's three result files (same columns and order; empty cell = NaN) and summary.csv.

    Metric cells keep full precision (shortest round-trip repr, as the paper's
    files do); summary.csv is rounded to 4 decimals.  Returns name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in CSV_NAMES.items()}
    _for_csv(alloc, ALLOC_INDEX_COLUMNS).to_csv(paths["alloc"], index=False, na_rep="")
    _for_csv(frag, INDEX_COLUMNS).to_csv(paths["frag"], index=False, na_rep="")
    _for_csv(frag_ratio, INDEX_COLUMNS).to_csv(paths["frag_ratio"], index=False, na_rep="")
    summary.round(4).to_csv(paths["summary"], index=False, na_rep="")
    return paths


# --------------------------------------------------------------------------- plots


def _mpl(text: str) -> str:
    """Text for a matplotlib label: '$' would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI, format="png", facecolor="white")
    return path


def _curves(frame: pd.DataFrame, workload: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """x values and, per policy, a (3, len(x)) array of mean / min / max over seeds."""
    df = _flat(frame)
    df = df[df["workload"].astype(str) == str(workload)]
    if df.empty:
        raise ValueError(f"no rows for workload {workload!r}")
    cols = _arrived_columns(df)
    x = np.array([int(c) for c in cols], dtype=float)
    out: dict[str, np.ndarray] = {}
    for policy in _sorted_policies(df["sc_policy"].astype(str)):
        values = df.loc[df["sc_policy"].astype(str) == policy, cols].apply(pd.to_numeric, errors="coerce")
        arr = values.to_numpy(dtype=float)
        # NaN-skipping statistics without numpy's "empty slice" warnings (a cell empty in every seed
        # stays NaN); fmin/fmax ignore NaN unless all are NaN
        count = (~np.isnan(arr)).sum(axis=0)
        total = np.where(np.isnan(arr), 0.0, arr).sum(axis=0)
        mean = np.divide(total, count, out=np.full(len(cols), np.nan), where=count > 0)
        out[policy] = np.vstack([mean, np.fmin.reduce(arr, axis=0), np.fmax.reduce(arr, axis=0)])
    return x, out


def _draw_curves(
    ax: Any, x: np.ndarray, curves: dict[str, np.ndarray], styles: dict, band: bool = True
) -> None:
    for k, (policy, (mean, lo, hi)) in enumerate(curves.items()):
        color, marker = styles[policy]
        ok = ~np.isnan(mean)
        if band and (hi[ok] - lo[ok]).max(initial=0) > 0:
            ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, linewidth=0)
        # markers (for grey-scale / colour-blind reading) staggered so that they do not stack
        step = max(1, int(ok.sum()) // 7)
        ax.plot(
            x[ok],
            mean[ok],
            color=color,
            linewidth=1.8,
            label=_mpl(policy),
            marker=marker,
            markevery=(min(step - 1, (k * step) // max(1, len(curves))), step),
            markersize=5,
        )


def _title(kind: str, workload: str, curves: dict[str, np.ndarray], frame: pd.DataFrame) -> str:
    df = _flat(frame)
    n = df.loc[df["workload"].astype(str) == str(workload), "seed"].nunique()
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    return f"{kind} — {_mpl(workload)}\n{len(curves)} policies, {seeds} (line: mean, band: min\u2013max)"


def plot_alloc_curves(
    alloc: pd.DataFrame, path: str | Path, workload: str, bound: pd.DataFrame | None = None
) -> Path:
    """GPU allocation ratio vs arrived workload (the paper's Fig. 9a) for one workload.

    Mean over seeds per policy with a min-max band, the ideal y = x line (capped at
    100 %, the cluster's capacity) and an inset zooming into the saturated region.
    With `bound` (`sim compare --bound`'s frame) the proven upper bound on any policy is a
    dashed line through the points where it was computed (mean over seeds).
    """
    x, curves = _curves(alloc, workload)
    bound_xy = _bound_line(bound, workload)
    styles = policy_colors(curves)
    fig = Figure(figsize=_WIDE, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ideal_x = np.array([0.0, 100.0, max(130.0, float(x.max(initial=130)))])
    ax.plot(
        ideal_x, np.minimum(ideal_x, 100), color="#888888", linestyle="--", linewidth=1, label="ideal (y = x)"
    )
    _draw_curves(ax, x, curves, styles)
    if bound_xy is not None:
        ax.plot(*bound_xy, color="#000000", linestyle="--", linewidth=1.4, marker="_", label=BOUND_LABEL)
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 105)
    ax.set_xticks(range(0, 131, 10))
    ax.set_xlabel("Arrived workload (% of cluster GPU capacity)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_title(_title("GPU allocation ratio", workload, curves, alloc), fontsize=11)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.legend(loc="upper left", fontsize=9, frameon=True, framealpha=0.9)

    # Inset: the policies only separate once the cluster saturates.
    tail = x >= 80
    stacked = np.concatenate([c[:, tail].ravel() for c in curves.values()]) if curves else np.array([])
    stacked = stacked[~np.isnan(stacked)]
    if stacked.size:
        lo, hi = float(stacked.min()), float(stacked.max())
        pad = max(0.5, 0.08 * (hi - lo))
        axins = ax.inset_axes([0.56, 0.07, 0.42, 0.45])
        axins.plot(ideal_x, np.minimum(ideal_x, 100), color="#888888", linestyle="--", linewidth=1)
        _draw_curves(axins, x, curves, styles)
        if bound_xy is not None:
            axins.plot(*bound_xy, color="#000000", linestyle="--", linewidth=1.4, marker="_")
            hi = max(hi, float(bound_xy[1].max()))
        axins.set_xlim(80, 130)
        axins.set_ylim(max(0.0, lo - pad), min(101.0, hi + pad))
        axins.tick_params(labelsize=8)
        axins.grid(True, color="#eeeeee", linewidth=0.5)
        axins.set_title("zoom: 80\u2013130 % arrived", fontsize=8)
        ax.indicate_inset_zoom(axins, edgecolor="#777777", alpha=0.5)
    return _save(fig, path)


def _bound_line(bound: pd.DataFrame | None, workload: str) -> tuple[np.ndarray, np.ndarray] | None:
    if bound is None or bound.empty:
        return None
    rows = bound[bound["workload"].astype(str) == str(workload)]
    if rows.empty:
        return None
    means = rows.groupby("x")["upper_pct"].mean().sort_index()
    return means.index.to_numpy(dtype=float), means.to_numpy(dtype=float)


def bound_summary(bound: pd.DataFrame) -> pd.DataFrame:
    """Summary rows for the bracket: the upper bound and the offline packing, statistics over
    seeds at x = 100 and 130 (NaN where not computed), in `summarize`'s columns."""
    rows = []
    for workload, group in bound.groupby("workload", sort=False):
        for label, column in ((BOUND_LABEL, "upper_pct"), (PACKING_LABEL, "feasible_pct")):
            row: dict[str, Any] = {"workload": workload, "sc_policy": label, "seeds": group["seed"].nunique()}
            for x in (100, 130):
                values = group.loc[group["x"] == x, column].astype(float)
                stats = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}
                for stat, value in stats.items():
                    row[f"alloc_at_{x}_{stat}"] = value if len(values) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def with_bound(summary: pd.DataFrame, bound: pd.DataFrame | None) -> pd.DataFrame:
    """`summary` with the bracket's rows after each workload's policies."""
    if bound is None or bound.empty:
        return summary
    extra = bound_summary(bound)
    frames = []
    for workload, rows in summary.groupby("workload", sort=False):
        frames += [rows, extra[extra["workload"].astype(str) == str(workload)]]
    return pd.concat(frames, ignore_index=True)


def bound_sentences(summary: pd.DataFrame, bound: pd.DataFrame | None) -> list[str]:
    """Per workload with FGD and a bound at x = 130: how many GPUs FGD leaves idle there and
    how many of them any online policy could at most recover (upper bound minus FGD, GPUs)."""
    if bound is None or bound.empty:
        return []
    out = []
    for workload, group in bound[bound["x"] == 130].groupby("workload", sort=False):
        rows = summary[
            (summary["workload"].astype(str) == str(workload))
            & (summary["sc_policy"].map(_canonical) == "fgd")
        ]
        if rows.empty:
            continue
        gpus = float(group["capacity_milli"].iloc[0]) / 1000
        fgd = float(rows["alloc_at_130_mean"].iloc[0])
        idle = gpus * (100 - fgd) / 100
        recoverable = max(0.0, gpus * (float(group["upper_pct"].mean()) - fgd) / 100)
        out.append(
            f"{workload}: FGD leaves {idle:,.0f} GPUs idle; at most {recoverable:,.0f} of them are "
            "recoverable by any online policy"
        )
    return out


def plot_frag_curves(
    frag_ratio: pd.DataFrame, path: str | Path, workload: str, *, kind: str = "ratio"
) -> Path:
    """Fragmentation vs arrived workload for one workload (mean per policy, min-max band).

    `kind="ratio"` (default) expects the analysis_frag_ratio frame (% of idle GPU);
    `kind="amount"` the analysis_frag frame (% of cluster GPU capacity).
    """
    if kind not in ("ratio", "amount"):
        raise ValueError(f"kind must be 'ratio' or 'amount', not {kind!r}")
    x, curves = _curves(frag_ratio, workload)
    styles = policy_colors(curves)
    fig = Figure(figsize=_WIDE, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    _draw_curves(ax, x, curves, styles)
    ax.set_xlim(0, 130)
    ax.set_xticks(range(0, 131, 10))
    ax.set_ylim(bottom=0)
    if kind == "ratio":
        ax.set_ylim(0, 105)
        ax.set_ylabel("Fragmentation ratio (% of idle GPU)")
        label = "GPU fragmentation ratio"
    else:
        ax.set_ylabel("Fragmented GPU (% of cluster capacity)")
        label = "Fragmented GPU amount"
    ax.set_xlabel("Arrived workload (% of cluster GPU capacity)")
    ax.set_title(_title(label, workload, curves, frag_ratio), fontsize=11)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.legend(loc="upper left", fontsize=9, frameon=True, framealpha=0.9)
    return _save(fig, path)


def _common_prefix(names: list[str]) -> str:
    if len(names) < 2:
        return ""
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    # cut at a separator so that labels stay whole words
    cut = max(prefix.rfind("_"), prefix.rfind("-"), prefix.rfind("/"))
    return prefix[: cut + 1] if cut >= 0 else ""


def plot_final_bars(summary: pd.DataFrame, path: str | Path) -> Path:
    """Bar chart of the mean allocation ratio at x = 130 per policy (whiskers: min-max over seeds).

    With several workloads the bars are grouped by workload (one colour per policy).
    """
    workloads = list(dict.fromkeys(summary["workload"].astype(str)))
    policies = _sorted_policies(summary["sc_policy"].astype(str))
    styles = policy_colors(policies)
    table = summary.assign(
        workload=summary["workload"].astype(str), sc_policy=summary["sc_policy"].astype(str)
    )
    table = table.set_index(["workload", "sc_policy"])
    means = table["alloc_at_130_mean"].astype(float)
    lows = table.get("alloc_at_130_min", means).astype(float)
    highs = table.get("alloc_at_130_max", means).astype(float)
    finite = means[np.isfinite(means)]
    floor = max(0.0, 5 * math.floor((float(finite.min()) - 3) / 5)) if len(finite) else 0.0
    top = min(100.0, float(np.nanmax(highs.to_numpy())) + 2.5) if len(finite) else 100.0

    width = max(7.5, min(16.0, 1.0 + 0.22 * len(workloads) * len(policies)))
    fig = Figure(figsize=(width, 4.8), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    single = len(workloads) == 1
    bar_w = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        xs, ys, err_lo, err_hi = [], [], [], []
        for j, workload in enumerate(workloads):
            key = (workload, policy)
            if key not in means.index or not np.isfinite(means[key]):
                continue
            xs.append(i if single else j - 0.4 + bar_w * (i + 0.5))
            ys.append(means[key])
            err_lo.append(max(0.0, means[key] - lows[key]))
            err_hi.append(max(0.0, highs[key] - means[key]))
        if not xs:
            continue
        color = styles[policy][0]
        ax.bar(
            xs,
            [y - floor for y in ys],
            bottom=floor,
            width=0.7 if single else bar_w * 0.92,
            color=color,
            edgecolor="white",
            linewidth=0.5,
            label=_mpl(policy),
            yerr=[err_lo, err_hi],
            error_kw={"ecolor": "#333333", "capsize": 3 if single else 1.5, "lw": 1},
        )
        if single or len(workloads) * len(policies) <= 12:
            for bx, by, eh in zip(xs, ys, err_hi, strict=True):
                ax.annotate(
                    f"{by:.2f}",
                    (bx, by + eh),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8 if not single else 9,
                )
    ax.set_ylim(floor, top + (1.5 if single else 0))
    ax.set_ylabel("GPU allocation ratio at 130 % arrived (%)")
    ax.grid(True, axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if single:
        ax.set_xticks(
            range(len(policies)),
            [_mpl(p) for p in policies],
            rotation=20 if len(policies) > 5 else 0,
            ha="center",
        )
        ax.set_title(
            f"Final GPU allocation ratio — {_mpl(workloads[0])}\n"
            "(bar: mean over seeds, whisker: min\u2013max)",
            fontsize=11,
        )
    else:
        prefix = _common_prefix(workloads)
        labels = [_mpl(w[len(prefix) :] or w) for w in workloads]
        ax.set_xticks(
            range(len(workloads)),
            labels,
            rotation=30 if len(workloads) > 4 else 0,
            ha="right" if len(workloads) > 4 else "center",
        )
        ax.set_xlabel(f"Workload{f' ({_mpl(prefix)}…)' if prefix else ''}")
        ax.set_title(
            "Final GPU allocation ratio per workload (bar: mean over seeds, whisker: min\u2013max)",
            fontsize=11,
        )
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.28 if len(workloads) > 4 else -0.14),
            ncol=min(len(policies), 6),
            fontsize=9,
            frameon=False,
        )
    if floor > 0:
        ax.text(
            0.0,
            1.0,
            f"y axis starts at {floor:g} %",
            transform=ax.transAxes,
            fontsize=7,
            color="#666666",
            ha="left",
            va="bottom",
        )
    return _save(fig, path)


# --------------------------------------------------------------------------- terminal


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return "\u2013" if math.isnan(v) else f"{v:.{digits}f}"


def _pm(mean: Any, std: Any) -> str:
    m, s = _fmt(mean), _fmt(std)
    return m if s in ("\u2013", "") or m == "\u2013" else f"{m} ± {s}"


def _extra_columns(summary: pd.DataFrame) -> list[str]:
    known = {"alloc_at_100", "alloc_at_130", "frag_at_130", "frag_ratio_at_130"}
    return [c for c in summary.columns if c.endswith("_mean") and c[: -len("_mean")] not in known]


def render_table(summary: pd.DataFrame) -> Table:
    """A rich table for the terminal: one row per (workload, policy), best per workload in bold green."""
    best = best_policies(summary)
    extras = _extra_columns(summary)
    table = Table(title="FGD comparison: GPU allocation and fragmentation", title_style="bold")
    table.add_column("Workload", style="cyan", no_wrap=True)
    table.add_column("Policy", no_wrap=True)
    table.add_column("Alloc@100 %", justify="right")
    table.add_column("Alloc@130 % (mean ± std)", justify="right")
    table.add_column("Frag@130 % GPU", justify="right")
    table.add_column("Frag ratio@130 %", justify="right")
    for col in extras:
        table.add_column(col[: -len("_mean")].replace("_", " "), justify="right")
    table.add_column("Seeds", justify="right")
    previous = None
    for _, row in summary.iterrows():
        workload, policy = str(row["workload"]), str(row["sc_policy"])
        if previous is not None and workload != previous:
            table.add_section()
        is_best = best.get(workload) == policy
        table.add_row(
            workload if workload != previous else "",
            f"{policy} ★" if is_best else policy,
            _fmt(row.get("alloc_at_100_mean")),
            _pm(row.get("alloc_at_130_mean"), row.get("alloc_at_130_std")),
            _fmt(row.get("frag_at_130_mean")),
            _fmt(row.get("frag_ratio_at_130_mean")),
            *(_fmt(row.get(c), 1) for c in extras),
            str(row.get("seeds", "")),
            style="bold green" if is_best else None,
        )
        previous = workload
    return table


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;
color:#1d2329;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh;
box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #e3e6ea;
padding-bottom:.2em}
.sub{color:#5b6670;margin-top:0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;font-size:.92em;background:#f8f9fb;
border:1px solid #e3e6ea;border-radius:6px;padding:10px 14px}
dl.meta dt{font-weight:600;color:#44505a}dl.meta dd{margin:0;word-break:break-word}
table.summary{border-collapse:collapse;width:100%;font-size:.88em;font-variant-numeric:tabular-nums}
table.summary th,table.summary td{padding:5px 7px;border-bottom:1px solid #e8eaed;text-align:right;
white-space:nowrap}
table.summary th{background:#f1f3f5;text-align:center;white-space:normal;vertical-align:bottom;
font-size:.95em}
table.summary td.l{text-align:left}table.summary td.w{text-align:left;white-space:normal;max-width:12em;
word-break:break-word}
table.summary tr.first td{border-top:2px solid #c9ced4}
table.summary tr.best td{background:#e3f4e8;font-weight:700;color:#0b5d2a}
.badge{display:inline-block;margin-left:6px;padding:0 6px;border-radius:8px;background:#1a7f3c;color:#fff;
font-size:.78em;font-weight:600}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:6px;vertical-align:-1px}
.scroll{overflow-x:auto}
figure{margin:22px 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{color:#5b6670;font-size:.9em;margin-top:4px}
.howto{background:#fbfaf3;border-left:4px solid #E69F00;padding:8px 14px;font-size:.93em}
footer{margin-top:32px;color:#8a949c;font-size:.8em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _wbr(text: str) -> str:
    """Escaped text with optional line breaks after '_', '-', '/' and '.' (long trace names)."""
    return re.sub(r"([_\-/.])", r"\1<wbr>", _e(text))


def _meta_label(key: str) -> str:
    return re.sub(r"_s$", "", key).replace("_", " ")


def _meta_value(key: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        if items and all(isinstance(v, (int, np.integer)) for v in items) and len(items) > 3:
            ints = sorted(int(v) for v in items)
            if ints == list(range(ints[0], ints[-1] + 1)):
                return f"{ints[0]}\u2013{ints[-1]} ({len(ints)})"
        return ", ".join(str(v) for v in items)
    if isinstance(value, float) and ("time" in key or "second" in key or key.endswith("_s")):
        minutes, seconds = divmod(value, 60)
        return f"{value:.1f} s" if value < 120 else f"{int(minutes)} min {seconds:.0f} s ({value:.0f} s)"
    return str(value)


def _summary_html(summary: pd.DataFrame) -> str:
    best = best_policies(summary)
    styles = policy_colors(summary["sc_policy"].astype(str))
    extras = _extra_columns(summary)
    head = [
        "Workload",
        "Policy",
        "Alloc@100 %<br><small>mean</small>",
        "Alloc@130 %<br><small>mean ± std</small>",
        "Alloc@130 %<br><small>min \u2013 max</small>",
        "Frag@130<br><small>% of GPUs</small>",
        "Frag ratio@130<br><small>% of idle</small>",
        *(_e(c[: -len("_mean")].replace("_", " ")) + "<br><small>mean</small>" for c in extras),
        "Seeds",
    ]
    rows = []
    previous = None
    for _, row in summary.iterrows():
        workload, policy = str(row["workload"]), str(row["sc_policy"])
        is_best = best.get(workload) == policy
        classes = [c for c in ("best" if is_best else "", "first" if workload != previous else "") if c]
        color = styles[policy][0]
        cells = [
            f'<td class="w">{_wbr(workload) if workload != previous else ""}</td>',
            f'<td class="l"><span class="swatch" style="background:{color}"></span>{_e(policy)}'
            + ('<span class="badge">best</span>' if is_best else "")
            + "</td>",
            f"<td>{_e(_fmt(row.get('alloc_at_100_mean')))}</td>",
            f"<td>{_e(_pm(row.get('alloc_at_130_mean'), row.get('alloc_at_130_std')))}</td>",
            f"<td>{_e(_fmt(row.get('alloc_at_130_min')))} \u2013 "
            f"{_e(_fmt(row.get('alloc_at_130_max')))}</td>",
            f"<td>{_e(_fmt(row.get('frag_at_130_mean')))}</td>",
            f"<td>{_e(_fmt(row.get('frag_ratio_at_130_mean')))}</td>",
            *(f"<td>{_e(_fmt(row.get(c), 1))}</td>" for c in extras),
            f"<td>{_e(row.get('seeds', ''))}</td>",
        ]
        cls = f' class="{" ".join(classes)}"' if classes else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
        previous = workload
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<div class="scroll"><table class="summary"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


_HOWTO = (
    "<p><b>Allocation ratio</b> is the share of the cluster's GPU capacity that is actually handed out to "
    "pods, counted in thousandths of a GPU (a pod asking for half a GPU counts 0.5). The simulator keeps "
    "submitting pods until their total demand reaches 130&nbsp;% of the cluster's GPUs; pods that do not "
    "fit anywhere are dropped. The x axis of the curves is how much demand has arrived so far. An ideal "
    "scheduler would follow the dashed y&nbsp;=&nbsp;x line up to 100&nbsp;%; real ones fall below it once "
    "the cluster fills up, and <b>higher is better</b>. The headline number is the allocation ratio at "
    "130&nbsp;% arrived.</p>"
    "<p><b>Fragmentation</b> (FGD's definition) is idle GPU capacity that the workload's typical pods "
    "cannot use. For each typical pod shape and each node: if the pod cannot run on the node at all (not "
    "enough whole GPUs with room, too little CPU or memory, wrong GPU model, or a CPU-only pod), all of the "
    "node's idle GPU capacity counts as fragmented for it; if it can run, only the GPUs with less room left "
    "than the pod needs count. The per-shape amounts are averaged, weighted by how common each shape is in "
    "the trace. <i>Frag@130</i> is that amount as a percentage of all the cluster's GPUs; the "
    "<i>fragmentation ratio</i> is the same amount as a percentage of the GPU capacity that is still idle. "
    "<b>Lower is better</b>: FGD places each pod where it increases fragmentation the least. Once the "
    "cluster is saturated almost every idle scrap is fragmented, so the ratio ends near 100&nbsp;% for "
    "every policy; compare the curves before saturation, and <i>Frag@130</i> at the end.</p>"
    "<p>Each number is the mean over the random seeds (different pod orders); ± is the standard deviation, "
    "the shaded bands in the curves and the whiskers on the bars span the minimum to maximum over seeds. "
    "The best policy per workload (highest mean allocation at 130&nbsp;%) is highlighted in green.</p>"
)


def _verdict(summary: pd.DataFrame) -> str:
    """One bullet per best policy: which workloads it wins and its allocation there."""
    best = best_policies(summary)
    alloc = {
        (str(w), str(p)): v
        for w, p, v in zip(
            summary["workload"], summary["sc_policy"], summary["alloc_at_130_mean"], strict=True
        )
    }
    by_policy: dict[str, list[str]] = {}
    for workload, policy in best.items():
        by_policy.setdefault(policy, []).append(workload)
    items = []
    for policy in _sorted_policies(by_policy):
        won = by_policy[policy]
        values = [float(alloc[(w, policy)]) for w in won]
        if len(won) == 1:
            items.append(
                f"<li><b>{_e(won[0])}</b>: {_e(policy)} allocates the most GPU "
                f"({_e(_fmt(values[0]))} % at 130 % arrived)</li>"
            )
        else:
            items.append(
                f"<li><b>{_e(policy)}</b> allocates the most GPU in {len(won)} of {len(best)} workloads "
                f"({_e(_fmt(min(values)))}\u2013{_e(_fmt(max(values)))} % at 130 % arrived): "
                f"{_e(', '.join(won))}</li>"
            )
    return "".join(items)


_META_ORDER = (
    "workloads",
    "traces",
    "trace",
    "policies",
    "seeds",
    "tune",
    "runs",
    "total_runs",
    "wall_time",
    "wall_time_s",
    "date",
)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def write_html(
    out_dir: str | Path,
    summary: pd.DataFrame,
    plots: Mapping[str, Path],
    meta: Mapping,
    notes: Iterable[str] = (),
) -> Path:
    """Write one self-contained `report.html` (inline CSS, images as data URIs, no JS) and return its path.

    `plots` maps a caption to a PNG file, shown in that order; `meta` is shown as a
    key/value list (`title` becomes the page title; a generation time is added).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    title = str(meta.pop("title", "Tessellate simulation report: placement policy comparison"))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    keys = [k for k in _META_ORDER if k in meta] + [k for k in meta if k not in _META_ORDER]
    items = "".join(
        f"<dt>{_e(_meta_label(str(k)))}</dt><dd>{_e(_meta_value(str(k), meta[k]))}</dd>" for k in keys
    )
    items += f"<dt>generated</dt><dd>{_e(generated)}</dd>"
    verdict = _verdict(summary) + "".join(f"<li>{_e(note)}</li>" for note in notes)
    figures = "".join(
        f'<figure><img src="{_img(Path(p))}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, p in plots.items()
    )
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="sub">GPU allocation and fragmentation per scheduling policy, FGD paper protocol (USENIX ATC'23).</p>
<h2>Run</h2>
<dl class="meta">{items}</dl>
<h2>Summary</h2>
<ul>{verdict}</ul>
{_summary_html(summary)}
<h2>How to read this</h2>
<div class="howto">{_HOWTO}</div>
<h2>Plots</h2>
{figures}
<footer>Generated by tessellate sim compare. CSV files with the same numbers are next to this report.</footer>
</main>
</body>
</html>
"""
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- all of it


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
) -> Path:
    """Summary, CSVs, an allocation and a fragmentation PNG per workload, the final-bars PNG and
    report.html, all in `out_dir`.  Returns the HTML path.  `meta` entries override derived ones.
    `bound` (`simulator.bound` results as a frame) adds the bracket's rows, a dashed line and
    the idle/recoverable sentence."""
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
    return write_html(out, summary, plots, full_meta, bound_sentences(summary, bound))
