"""`sim timed --queues` and `sim compare --queues`: replay a trace under quota splits.

Kept apart from cli.py so the queue options, the choice of queue tree and the
per-queue outputs live in one place; cli.py only wires them in.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

QUEUES_HELP = (
    "YAML list of Queue objects (or {name, spec} items) in the CRD's spec form: per queue an "
    "optional parent and resources [{gpuModel, quota, limit, overQuotaWeight}]; pods pick their "
    "queue by the trace's queue column (empty: 'default'). See docs/queues.md"
)

EPILOG_QUEUES = """\
queues (docs/queues.md):
  tessellate sim timed --synthetic-kind multi-tenant --out out/mt      # built-in 'even' split
  tessellate sim timed --synthetic-kind multi-tenant --queues q.yaml --out out/mt
  tessellate sim compare --synthetic-kind multi-tenant --queues a.yaml --queues b.yaml --out cmp/

With queues, pending pods are tried queue by queue (furthest below fair share first, then
priority, then arrival), limits hold, pods within quota reclaim borrowed GPUs, and pod groups
start whole. Also writes queues.csv, queue_timeseries.csv, reclaims.csv, queues-<model>.png
and queues.html (allocation per queue and GPU model against quota and fair share).
"""


def add_timed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queues")
    group.add_argument("--queues", type=Path, metavar="FILE", help=QUEUES_HELP)
    group.add_argument(
        "--no-reclaim",
        action="store_true",
        help="with queues: never preempt over-quota pods (a queue below quota waits for idle GPUs)",
    )


def add_compare_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queues",
        type=Path,
        action="append",
        metavar="FILE",
        help="compare quota splits instead of policies: one timed replay per file (x --policies, "
        "first --seeds value), side by side in queues.html. " + QUEUES_HELP,
    )


def queue_tree_for(args: argparse.Namespace, trace):
    """The queue tree a `sim timed` run uses and a sentence saying where it came from;
    (None, "") for a plain replay (no --queues and a trace without queue columns)."""
    from tessellate.simulator.queued import needs_queues
    from tessellate.simulator.queuefile import load_queue_file, queues_from_trace, tree_of

    if args.queues is not None:
        tree = load_queue_file(args.queues)
        _warn_missing(tree, trace, str(args.queues))
        return tree, f"queues from {args.queues}"
    if not args.pods and args.synthetic_kind == "multi-tenant":
        from tessellate.placement.quota import parse_queues
        from tessellate.simulator.traces.tenants import split

        specs = parse_queues(split("even", args.synthetic_scale))
        return tree_of(specs, "built-in split"), "queues: the multi-tenant workload's built-in 'even' split"
    if needs_queues(trace):
        return queues_from_trace(trace), "queues: one per queue name in the trace, no quotas (give --queues)"
    return None, ""


def _warn_missing(tree, trace, source: str) -> None:
    """Pods naming no leaf of `tree` wait for good (as live): say so before the run, not after."""
    from tessellate.cli import console
    from tessellate.simulator.queuefile import missing_queues

    missing = missing_queues(tree, trace)
    if missing:
        listed = ", ".join(f"{name} ({count} pods)" for name, count in sorted(missing.items()))
        console.print(
            f"[yellow]warning:[/] {source} has no leaf queue {listed}; those pods will wait, as they "
            "would live. Add the queues, or fix the trace's queue column.",
            highlight=False,
        )


def run_with_queues(args: argparse.Namespace, trace, tree, progress=None):
    from tessellate.simulator.queued import run_queued

    if args.batch:
        from tessellate.cli import UsageError

        raise UsageError("--batch does not combine with queues; drop --batch (or the queues)")
    return run_queued(
        trace,
        args.policy,
        args.seed,
        queues=tree,
        reclaim=not args.no_reclaim,
        max_wait=args.max_wait,
        samples=args.samples,
        progress=progress,
        mig_choice=args.mig_choice,
        mig_reconfig_s=args.mig_reconfig_s,
    )


def write_outputs(out: Path, result, label: str, note: str, seconds: float) -> Path:
    """The per-queue files of one queue-aware run; returns the HTML report's path."""
    import pandas as pd

    from tessellate.simulator.report.queues import write_queue_report

    tenancy = result.tenancy
    pd.DataFrame(
        [
            {
                "time_s": e.time,
                "queue": e.queue,
                "pod": e.pod,
                "gpu_model": e.model,
                "victims": " ".join(e.victims),
                "victim_queues": " ".join(e.victim_queues),
            }
            for e in tenancy.reclaims
        ],
        columns=["time_s", "queue", "pod", "gpu_model", "victims", "victim_queues"],
    ).to_csv(out / "reclaims.csv", index=False)
    meta = {
        "workload": result.workload,
        "policy": result.policy,
        "queues": note,
        "wall time (s)": f"{seconds:.2f}",
    }
    return write_queue_report(out, {label: tenancy}, meta, f"{result.workload} · queues · timed replay")


def queue_table(runs: dict) -> Table:
    """The terminal table: per split, queue and model, what the HTML table shows."""
    from tessellate.simulator.report.queues import queue_table as frame_of

    frame = frame_of(runs)
    table = Table(title="per queue and GPU model (GPU units; delays in seconds)")
    for column in (
        "split",
        "queue",
        "GPU model",
        "quota",
        "limit",
        "alloc mean",
        "fair mean",
        "borrowed",
        "delay p50",
        "delay p95",
        "reclaims",
        "preempted",
    ):
        table.add_column(column, justify="left" if column in ("split", "queue", "GPU model") else "right")
    for _, row in frame.iterrows():
        limit = "none" if row["limit"] == float("inf") else f"{row['limit']:g}"
        table.add_row(
            str(row["split"]),
            str(row["queue"]),
            str(row["gpu_model"]),
            f"{row['quota']:g}",
            limit,
            f"{row['alloc_mean']:.1f}",
            f"{row['fair_mean']:.1f}",
            f"{row['borrowed_mean']:.1f}",
            f"{row['delay_p50_s']:,.0f}",
            f"{row['delay_p95_s']:,.0f}",
            str(row["reclaims"]),
            str(row["preempted"]),
        )
    return table


def cmd_compare_queues(args: argparse.Namespace) -> None:
    """`sim compare --queues a.yaml --queues b.yaml`: one timed replay per split (x policy)."""
    import pandas as pd

    from tessellate.cli import UsageError, _sources, _stdout_console, console
    from tessellate.simulator.queued import run_queued
    from tessellate.simulator.queuefile import load_queue_file
    from tessellate.simulator.report.queues import write_queue_report

    sources = _sources(args)
    if len(sources) != 1:
        raise UsageError("--queues compares quota splits on one trace; give one --pods file")
    trace = sources[0].load()
    trees = {}
    for path in args.queues:
        label = path.stem if sum(p.stem == path.stem for p in args.queues) == 1 else str(path)
        trees[label] = load_queue_file(path)
        _warn_missing(trees[label], trace, str(path))
    runs, rows = {}, []
    start = time.perf_counter()
    for label, tree in trees.items():
        for policy in args.policies:
            name = label if len(args.policies) == 1 else f"{label} · {policy}"
            with console.status(f"timed replay: {name}"):
                began = time.perf_counter()
                result = run_queued(trace, policy, args.seeds[0], queues=tree)
            runs[name] = result.tenancy
            rows.append(
                {"split": name, "policy": policy, "wall_s": time.perf_counter() - began, **result.summary()}
            )
    wall = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "summary.csv", index=False)
    meta = {
        "workload": trace.name,
        "splits": ", ".join(f"{k} ({p})" for k, p in zip(trees, args.queues, strict=True)),
        "policies": ", ".join(args.policies),
        "seed": args.seeds[0],
        "wall time (s)": f"{wall:.1f}",
    }
    html = write_queue_report(args.out, runs, meta, f"{trace.name} · quota splits compared")
    out_console = _stdout_console()
    out_console.print(queue_table(runs))
    overall = Table(title="per split")
    for column in ("split", "alloc ratio mean", "delay p95 (s)", "reclaims", "preempted", "never placed"):
        overall.add_column(column, justify="left" if column == "split" else "right")
    for row in rows:
        overall.add_row(
            row["split"],
            f"{row['alloc_ratio_mean']:.3f}",
            f"{row['delay_p95_s']:,.0f}",
            f"{row['reclaims']:.0f}",
            f"{row['preempted']:.0f}",
            f"{row['never_placed']:.0f}",
        )
    out_console.print(overall)
    out_console.print(f"{len(rows)} replays in {wall:.1f} s. Report: {html}")
