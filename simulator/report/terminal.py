"""The comparison as a rich table in the terminal."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.table import Table
from tessellate.simulator.report.summary import best_policies


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
