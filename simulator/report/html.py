"""One self-contained report.html: summary, verdict, plots inlined as base64 PNGs."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tessellate.simulator.report.summary import (
    _sorted_policies,
    best_policies,
    best_verdicts,
    policy_colors,
)
from tessellate.simulator.report.terminal import _extra_columns, _fmt, _pm

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
    "The best policy per workload (highest mean allocation at 130&nbsp;%) is highlighted in green, "
    "but only where its lead over the runner-up is larger than the seed-to-seed spread (the larger "
    "standard deviation of the two); otherwise the summary says there is no significant difference.</p>"
)


EXTRA_COLUMNS_EXPLAINED = {
    "multi_gpu_on_best_set_pct": (
        "<b>multi gpu on best set pct</b> (clusters with known GPU wiring): of the pods asking for two "
        "or more whole GPUs, the share placed on the best-connected set of free GPUs their node had "
        "(NVSwitch, then NVLink, then PCIe and NUMA); <b>higher is better</b>."
    ),
    "multi_gpu_bottleneck_gbps": (
        "<b>multi gpu bottleneck gbps</b>: for those pods, the mean of the slowest link between two of "
        "their GPUs, in GB/s (what an all-reduce waits for); <b>higher is better</b>."
    ),
    "mig_pods_placed": (
        "<b>mig pods placed</b> (clusters with MIG GPUs): pods asking for MIG instances that got them."
    ),
    "mig_frag_slices": (
        "<b>mig frag slices</b>: free MIG memory slices that the expected MIG demand could not use, summed "
        "over the GPUs in MIG mode at the end (MIG's own fragmentation, not FGD's); <b>lower is better</b>."
    ),
}
"""What the summary's extra columns mean, for the report's "How to read this"."""


def _extras_howto(summary: pd.DataFrame) -> str:
    names = [c.removesuffix("_mean") for c in _extra_columns(summary)]
    notes = [EXTRA_COLUMNS_EXPLAINED[n] for n in names if n in EXTRA_COLUMNS_EXPLAINED]
    return "".join(f"<p>{note}</p>" for note in notes)


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
    for workload, (policy, why) in best_verdicts(summary).items():
        if policy is None:
            items.append(f"<li><b>{_e(workload)}</b>: {_e(why)}</li>")
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
    extra_html: str = "",
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
{extra_html}
<h2>How to read this</h2>
<div class="howto">{_HOWTO}{_extras_howto(summary)}</div>
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
