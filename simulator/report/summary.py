"""Frames in the paper's result-file format → the per-(workload, policy) summary, the CSVs,
and the bound rows beside it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tessellate.placement import PAPER_POLICIES

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


def best_verdicts(summary: pd.DataFrame) -> dict[str, tuple[str | None, str]]:
    """Per workload: (the best policy or None, why), by mean allocation ratio at x=130.

    A policy is best only where its lead over the runner-up is larger than the seed-to-seed
    spread (the larger of the two standard deviations over seeds): a lead inside the noise
    of the seeds is "no significant difference", and one seed gives no spread to judge by."""
    verdicts: dict[str, tuple[str | None, str]] = {}
    for workload, rows in summary.groupby("workload", sort=False):
        rows = rows[~rows["sc_policy"].astype(str).isin(BOUND_LABELS)]
        values = pd.to_numeric(rows["alloc_at_130_mean"], errors="coerce")
        if not values.notna().any():
            continue
        ranked = values.sort_values(ascending=False, kind="stable")
        top = ranked.index[0]
        name = str(rows.loc[top, "sc_policy"])
        if len(ranked) == 1:
            verdicts[str(workload)] = (name, "the only policy")
            continue
        second = ranked.index[1]
        lead = float(ranked.iloc[0] - ranked.iloc[1])
        stds = pd.to_numeric(rows.loc[[top, second], "alloc_at_130_std"], errors="coerce")
        if stds.isna().any():
            verdicts[str(workload)] = (None, "one seed: no spread to judge a difference by (use --seeds)")
        elif lead > float(stds.max()):
            verdicts[str(workload)] = (name, f"leads by {lead:.2f} pp, more than the seeds' spread")
        else:
            verdicts[str(workload)] = (
                None,
                f"no significant difference: {name} leads {rows.loc[second, 'sc_policy']} by {lead:.2f} "
                f"pp, within the seeds' spread (sd {float(stds.max()):.2f})",
            )
    return verdicts


def best_policies(summary: pd.DataFrame) -> dict[str, str]:
    """Per workload, the policy with the highest mean allocation ratio at x=130, where its lead
    is significant (`best_verdicts`); workloads without a significant winner are left out."""
    return {w: p for w, (p, _) in best_verdicts(summary).items() if p is not None}


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
