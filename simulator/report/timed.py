"""Plots and a self-contained HTML page for timed replays (`sim timed --plot`).

Two pictures answer what a timed replay is for: how full the cluster was and how
long the queue got (allocation and pending over time), and how long pods waited
(the queueing-delay CDF: the share of placed pods that started within t). Both
take one entry per policy, so a comparison of timed replays draws the same
figures. Pods never placed are not in the CDF (they have no delay); the page
lists them by cause instead.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tessellate.simulator.report.html import _CSS, _img
from tessellate.simulator.timed import TimedResult, TimedSeries

_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, format="png", facecolor="white")
    return path


def _hours(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(seconds, dtype=float) / 3600


def plot_timeline(series: Mapping[str, TimedSeries], path: Path) -> Path:
    """Allocation ratio (top) and pending pods (bottom) against time, one line per policy."""
    fig = Figure(figsize=(9, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (label, s) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        top.step(_hours(s.time), 100 * s.alloc_ratio, where="post", color=color, label=label)
        bottom.step(_hours(s.time), s.pending, where="post", color=color, label=label)
    top.set_ylabel("GPU allocated (%)")
    top.set_ylim(0, 100)
    bottom.set_ylabel("pods pending")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("time since trace start (hours)")
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_delay_cdf(delays: Mapping[str, np.ndarray], path: Path) -> Path:
    """Share of placed pods that started within t seconds of arriving, per policy (log t)."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for i, (label, values) in enumerate(delays.items()):
        values = np.sort(np.asarray(values, dtype=float))
        if not len(values):
            continue
        share = np.arange(1, len(values) + 1) / len(values)
        immediate = float((values <= 0).mean())
        # Delays of 0 cannot sit on a log axis: they are the curve's start at 1 s.
        shown = np.maximum(values, 1.0)
        ax.step(shown, share, where="post", color=_COLORS[i % len(_COLORS)], label=f"{label}")
        ax.plot([1.0], [immediate], "o", color=_COLORS[i % len(_COLORS)])
    ax.set_xscale("log")
    ax.set_xlabel("queueing delay (s, log; 0 shown at 1 s)")
    ax.set_ylabel("share of placed pods started")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            text = f"{value:,.4g}" if isinstance(value, float) else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_timed_html(
    path: Path,
    title: str,
    summary: pd.DataFrame,
    causes: pd.DataFrame,
    plots: Mapping[str, Path],
) -> Path:
    """One page: the summary per policy, never-placed pods by cause, the plots inlined."""
    figures = "".join(
        f'<figure><img src="{_img(p)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption>'
        "</figure>"
        for c, p in plots.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>
<h2>Summary</h2>{_table(summary)}
<p>Queueing delay is start minus creation time of placed pods (0: placed on arrival);
ratios are fractions of the cluster's GPUs, averaged over time.</p>
<h2>Pods never placed, by cause</h2>{_table(causes)}
<p><b>fits no node</b>: larger than any node even when empty (more nodes of these shapes never
help; a bigger shape does). <b>timed out</b>: waited longer than --max-wait. <b>withdrawn</b>:
deleted by the trace while still pending. <b>pending at end</b>: still waiting when the trace
ended.</p>
<h2>Plots</h2>{figures}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path


def summary_rows(results: Mapping[str, TimedResult]) -> pd.DataFrame:
    """The numbers a reader compares first, one row per policy."""
    rows = []
    for label, r in results.items():
        s = r.summary()
        rows.append(
            {
                "policy": label,
                "pods": int(s["pods"]),
                "placed share": r.placed / max(1, len(r.outcome)),
                "never placed": int(s["never_placed"]),
                "delay p50 (s)": s["delay_p50_s"],
                "delay p95 (s)": s["delay_p95_s"],
                "GPU allocated (mean)": s["alloc_ratio_mean"],
                "frag ratio (mean)": s["frag_ratio_mean"],
                "pending peak": int(s["pending_peak"]),
            }
        )
    return pd.DataFrame(rows)


def write_timed_report(
    out: Path,
    workload: str,
    results: Mapping[str, TimedResult],
    causes: Mapping[str, Mapping[str, str]],
) -> Path:
    """timeline.png, delay_cdf.png and timed.html in `out`; returns the page's path."""
    from tessellate.simulator.causes import cause_counts

    plots = {
        "GPU allocation and pending pods over time": plot_timeline(
            {k: r.steps for k, r in results.items()}, out / "timeline.png"
        ),
        "Queueing delay CDF (placed pods)": plot_delay_cdf(
            {k: r.delays for k, r in results.items()}, out / "delay_cdf.png"
        ),
    }
    counts = pd.DataFrame([{"policy": k, **cause_counts(dict(causes.get(k, {})))} for k in results]).rename(
        columns=lambda c: c.replace("_", " ")
    )
    title = f"{workload} · timed replay · {', '.join(results)}"
    return write_timed_html(out / "timed.html", title, summary_rows(results), counts, plots)
