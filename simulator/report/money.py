"""Fragmentation in GPUs and money, per GPU model: what a planner can put in a budget.

A fragmentation ratio of 97 % says little; "86 GPUs idle but unusable, FGD saves
53 of them over BestFit, about $77,000 a month" is a decision. The numbers are
the paper's fragmentation F (idle GPU the target workload cannot use), summed
per GPU model, averaged over seeds, at two points of each run: 100 % of GPU
capacity arrived (the cluster a planner sizes for) and the end (130 % arrived).
The sentences (the saving and its money) use the end of the run, where policies
differ most; the table shows both. A saving is claimed only where it is larger
than the seed-to-seed spread. Money is GPUs x price per GPU-hour x 730 hours
(a mean month, 8,760 / 12).
"""

from __future__ import annotations

import html

import pandas as pd
from tessellate.simulator.report.summary import _canonical, _sorted_policies

HOURS_PER_MONTH = 730.0


def _points(models: pd.DataFrame) -> pd.DataFrame:
    """`models` with its `arrived_pct` column (frames from before it: the end, 130)."""
    return models if "arrived_pct" in models.columns else models.assign(arrived_pct=130)


def end_rows(models: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of the end of the runs (the largest `arrived_pct`) and that percentage."""
    models = _points(models)
    end = int(models["arrived_pct"].max())
    return models[models["arrived_pct"] == end], end


def model_summary(models: pd.DataFrame) -> pd.DataFrame:
    """Per workload, policy, arrived point (`arrived_pct`) and GPU model: GPUs, mean and sd over
    seeds of allocation (%) and fragmented GPUs."""
    keys = ["workload", "sc_policy", "arrived_pct", "gpu_model"]
    grouped = _points(models).groupby(keys, sort=False)
    out = grouped.agg(
        gpus=("gpus", "first"),
        alloc_pct_mean=("alloc_pct", "mean"),
        alloc_pct_std=("alloc_pct", "std"),
        frag_gpus_mean=("frag_gpus", "mean"),
        frag_gpus_std=("frag_gpus", "std"),
    )
    return out.reset_index()


def _per_seed_totals(models: pd.DataFrame, workload: str) -> pd.DataFrame:
    rows = models[models["workload"].astype(str) == workload]
    return rows.groupby(["sc_policy", "seed"], sort=False)["frag_gpus"].sum().reset_index()


def _pick(policies: list[str], wanted: str) -> str | None:
    return next((p for p in policies if _canonical(p) == wanted), None)


def _money(gpus: float, price: float | None) -> str:
    if price is None:
        return " (add --gpu-hour-price to see it in money)"
    return f" (≈ ${gpus * price * HOURS_PER_MONTH:,.0f} per month at ${price:,.2f} per GPU-hour)"


def fragmentation_sentences(models: pd.DataFrame, price: float | None = None) -> list[str]:
    """Per workload, at the end of the runs: how many GPUs the best policy leaves idle but
    unusable (per model), and what it saves over the comparison policy (BestFit where present,
    else the worst)."""
    out: list[str] = []
    if models.empty:
        return out
    models, end = end_rows(models)
    for workload in dict.fromkeys(models["workload"].astype(str)):
        totals = _per_seed_totals(models, workload)
        stats = totals.groupby("sc_policy", sort=False)["frag_gpus"].agg(["mean", "std"])
        policies = _sorted_policies(stats.index.astype(str))
        ours = _pick(policies, "fgd") or str(stats["mean"].idxmin())
        other = _pick([p for p in policies if p != ours], "bestfit")
        rest = stats.drop(index=ours)
        if other is None and not rest.empty:
            other = str(rest["mean"].idxmax())
        per_model = model_summary(models[models["workload"].astype(str) == workload])
        mine = per_model[per_model["sc_policy"] == ours]
        detail = ", ".join(
            f"{m} {v:,.0f}" for m, v in zip(mine["gpu_model"], mine["frag_gpus_mean"], strict=True)
        )
        sentence = (
            f"{workload} at {end} % arrived (end of run): {ours} leaves {stats.loc[ours, 'mean']:,.0f} "
            f"GPUs idle but unusable ({detail})"
        )
        if other is not None:
            saved = float(stats.loc[other, "mean"] - stats.loc[ours, "mean"])
            spread = stats.loc[[ours, other], "std"]
            theirs = per_model[per_model["sc_policy"] == other].set_index("gpu_model")["frag_gpus_mean"]
            by_model = ", ".join(
                f"{m} {round(theirs.get(m, 0.0) - v) or 0:,}"
                for m, v in zip(mine["gpu_model"], mine["frag_gpus_mean"], strict=True)
            )
            if spread.isna().any():
                sentence += (
                    f"; {other} leaves {stats.loc[other, 'mean']:,.0f} (one seed: no spread to judge the "
                    "difference by; use more seeds)"
                )
            elif abs(saved) > float(spread.max()):
                verb = "saves" if saved > 0 else "loses"
                sentence += (
                    f"; {ours} {verb} {abs(saved):,.0f} GPUs over {other}{_money(abs(saved), price)}; "
                    f"per model: {by_model}"
                )
            else:
                sentence += (
                    f"; no significant difference from {other} ({saved:+,.0f} GPUs, within the seeds' "
                    f"spread, sd {float(spread.max()):,.1f})"
                )
        out.append(sentence)
    return out


def point_title(pct: int, end: int) -> str:
    """How a per-model table names its point of the runs."""
    return f"at {pct} % arrived" + (" (end of run)" if pct == end else "")


def model_table_html(summary: pd.DataFrame) -> str:
    """The per-model tables for report.html, one per arrived point (100 %, then the end)."""
    summary = _points(summary)
    end = int(summary["arrived_pct"].max())
    return "".join(
        _one_table_html(summary[summary["arrived_pct"] == pct], point_title(pct, end))
        for pct in sorted(summary["arrived_pct"].unique())
    ) + (
        "<p>Allocated: share of the model's GPUs held by pods. Fragmented GPUs: idle GPU on the "
        "model's nodes that the trace's own pod mix cannot use (the paper's F), in GPUs. The "
        "sentences above use the end of the run.</p>"
    )


def _one_table_html(summary: pd.DataFrame, title: str) -> str:
    head = (
        "<tr><th>workload</th><th>policy</th><th>GPU model</th><th>GPUs</th>"
        "<th>allocated % (mean ± sd)</th><th>fragmented GPUs (mean ± sd)</th></tr>"
    )
    rows = []
    for _, r in summary.iterrows():
        cells = [
            r["workload"],
            r["sc_policy"],
            r["gpu_model"],
            f"{int(r['gpus']):,}",
            _pm(r["alloc_pct_mean"], r["alloc_pct_std"]),
            _pm(r["frag_gpus_mean"], r["frag_gpus_std"], 1),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (
        f"<h2>Per GPU model {html.escape(title)}</h2><table>"
        f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if pd.isna(mean):
        return "\u2013"
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")
