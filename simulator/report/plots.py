"""PNG plots of a comparison: allocation and fragmentation curves, final bars. No global
matplotlib state is touched (figures are built on the Agg canvas), so it is thread-safe."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tessellate.simulator.report.summary import (
    _DPI,
    _WIDE,
    BOUND_LABEL,
    _arrived_columns,
    _flat,
    _sorted_policies,
    policy_colors,
)


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
