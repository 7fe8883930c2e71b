"""Per-queue reports of queue-aware timed replays: CSVs, PNGs and one self-contained HTML page.

For each run (one quota split, `simulator.tenancy.TenancyResult`): a table per queue and
GPU model (quota, limit, mean and peak allocation, mean fair share, borrowed units,
queueing delay p50/p95, reclaims won and pods lost to reclaim), and per GPU model a
plot of every leaf queue's allocation over time against its quota (dashed) and its fair
share (dotted). Several runs (`sim compare --queues a.yaml --queues b.yaml`) are shown
side by side: one table with a `split` column and one column of plots per split.
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
from tessellate.simulator.tenancy import TenancyResult

_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_COLUMNS = {
    "split": "split",
    "queue": "queue",
    "gpu_model": "GPU model",
    "quota": "quota",
    "limit": "limit",
    "alloc_mean": "alloc mean",
    "alloc_peak": "alloc peak",
    "fair_mean": "fair share mean",
    "borrowed_mean": "borrowed mean",
    "pods_started": "pods started",
    "delay_p50_s": "delay p50 (s)",
    "delay_p95_s": "delay p95 (s)",
    "reclaims": "reclaims",
    "preempted": "preempted",
}


def queue_table(runs: Mapping[str, TenancyResult]) -> pd.DataFrame:
    """One row per (split, queue, model) with the numbers of `TenancyResult.rows`."""
    rows = [{"split": split, **row} for split, t in runs.items() for row in t.rows()]
    return pd.DataFrame(rows, columns=list(_COLUMNS))


def timeseries(t: TenancyResult, samples: int = 200) -> pd.DataFrame:
    """Allocation, fair share and pending per queue and model on a regular time grid."""
    if len(t.time) == 0:
        return pd.DataFrame(
            columns=["time_s", "queue", "gpu_model", "alloc", "fair_share", "quota", "pending"]
        )
    grid = np.linspace(t.time[0], t.time[-1], samples)
    rows = np.clip(np.searchsorted(t.time, grid, side="right") - 1, 0, len(t.time) - 1)
    frames = []
    for qi, queue in enumerate(t.queues):
        for mi, model in enumerate(t.models):
            frames.append(
                pd.DataFrame(
                    {
                        "time_s": grid,
                        "queue": queue,
                        "gpu_model": model,
                        "alloc": t.usage[rows, qi, mi],
                        "fair_share": t.fair[rows, qi, mi],
                        "quota": t.quota[qi, mi],
                        "pending": t.pending[rows, qi],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def plot_model(runs: Mapping[str, TenancyResult], model: str, path: Path) -> Path:
    """Per split (one panel each): each leaf queue's `model` allocation, quota and fair share."""
    fig = Figure(figsize=(6.4 * len(runs), 4.2), constrained_layout=True)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (split, t) in zip(axes, runs.items(), strict=True):
        if model not in t.models:
            ax.set_title(f"{split}: no {model}")
            continue
        mi = t.models.index(model)
        hours = (t.time - (t.time[0] if len(t.time) else 0)) / 3600
        shown = 0
        for qi, queue in enumerate(t.queues):
            if not t.leaves[qi] or (not t.usage[:, qi, mi].any() and t.quota[qi, mi] == 0):
                continue
            color = _COLORS[shown % len(_COLORS)]
            shown += 1
            ax.step(hours, t.usage[:, qi, mi], where="post", color=color, lw=1.4, label=f"{queue} allocated")
            ax.step(
                hours,
                t.fair[:, qi, mi],
                where="post",
                color=color,
                lw=1.0,
                ls=":",
                label=f"{queue} fair share",
            )
            if t.quota[qi, mi]:
                ax.axhline(t.quota[qi, mi], color=color, lw=0.9, ls="--", label=f"{queue} quota")
        ax.set_title(f"{split}: {model}")
        ax.set_xlabel("time (h)")
        ax.set_ylabel("GPUs")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, ncol=2, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, format="png", facecolor="white")
    return path


def _table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in _COLUMNS.values())
    body = []
    for _, row in table.iterrows():
        cells = []
        for key in _COLUMNS:
            value = row[key]
            if isinstance(value, float):
                text = "none" if np.isinf(value) else f"{value:,.2f}".rstrip("0").rstrip(".")
            else:
                text = str(value)
            cls = ' class="l"' if key in ("split", "queue", "gpu_model") else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table class="summary"><tr>{head}</tr>{"".join(body)}</table></div>'


def write_queue_report(
    out: Path, runs: Mapping[str, TenancyResult], meta: Mapping[str, object], title: str
) -> Path:
    """queues.csv, queue_timeseries.csv (per split), queues-<model>.png and queues.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    table = queue_table(runs)
    table.to_csv(out / "queues.csv", index=False)
    series = pd.concat([timeseries(t).assign(split=split) for split, t in runs.items()], ignore_index=True)
    series.to_csv(out / "queue_timeseries.csv", index=False)
    models = sorted({m for t in runs.values() for m in t.models})
    plots = {m: plot_model(runs, m, out / f"queues-{m}.png") for m in models}
    reclaims = []
    for split, t in runs.items():
        for e in t.reclaims[:20]:
            victims = ", ".join(f"{v} ({q})" for v, q in zip(e.victims, e.victim_queues, strict=True))
            reclaims.append(
                f"<li>{html.escape(split)} t={e.time:,.0f}s: {html.escape(e.queue)}'s {html.escape(e.pod)} "
                f"({html.escape(e.model)}) preempted {html.escape(victims)}</li>"
            )
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in meta.items())
    figures = "".join(
        f'<figure><img src="{_img(p)}" alt="{html.escape(m)}"><figcaption>{html.escape(m)}: allocated '
        "(solid), fair share (dotted), quota (dashed) per leaf queue</figcaption></figure>"
        for m, p in plots.items()
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
<p class="sub">Queues with quotas per GPU model, replayed in time (docs/queues.md).</p>
<h2>Run</h2><dl class="meta">{items}</dl>
<h2>Per queue and GPU model</h2>
{_table_html(table)}
<p>GPU units: a whole GPU is 1, a fraction its milli/1000, a time-slice 1/N, a MIG instance its share of the
GPU's memory slices. <em>borrowed</em> is allocation above quota; <em>reclaims</em> counts pods of the queue
that got in by preempting over-quota pods; <em>preempted</em> counts the queue's pods taken back.</p>
<h2>Allocation over time</h2>
{figures}
<h2>Reclaims (first 20 per split)</h2>
<ul>{"".join(reclaims) or "<li>none</li>"}</ul>
<footer>Generated by tessellate sim. CSV files with the same numbers are next to this report.</footer>
</main></body></html>
"""
    path = out / "queues.html"
    path.write_text(doc, encoding="utf-8")
    return path
