"""`tessellate sim sweep`: one grid of runs, one results table, locally or on Ray.

Every list the user gives is part of the grid (each --nodes with each --pods,
each --tune, policy and seed); an option that makes no sense in the chosen mode
(--tune with --timed, --max-wait without it) is refused, never ignored.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tessellate.placement import PAPER_POLICIES

EPILOG_SWEEP = """\
examples:
  tessellate sim sweep --synthetic-scale 0.05,0.1 --policies fgd,bestfit --seeds 42-44 --out sw/
  tessellate sim sweep --nodes A.csv --nodes B.csv --pods P1.csv --pods P2.csv \\
      --tune 1.0,1.3 --policies fgd,bestfit --seeds 42-51 --out sw/ --ray auto
  tessellate sim sweep --timed --max-wait 600 --policies fgd,bestfit,random --out sw-timed/

The grid is clusters (each --nodes, or each --synthetic-scale) x traces (each
--pods) x tune ratios x policies x seeds; all of it runs, or the command refuses.
Writes sweep.csv (one row per run) and summary.csv (mean and spread over seeds),
and prints the summary. Local processes by default (--workers); --ray local
starts Ray on this machine, --ray ADDRESS uses a running cluster (pip install
'tessellate[ray]'; workers need the same tessellate). Both give the same table.
"""

console = Console(stderr=True, soft_wrap=True)


def parse_floats(text: str) -> list[float]:
    """'0.05' or '0.05,0.1'."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 0.05,0.1, not {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers such as 0.05,0.1, not {text!r}")
    return values


def parse_tunes(text: str) -> list[float | None]:
    """'1.3' or '1.0,1.3' or 'off'."""
    from tessellate.cli import parse_tune

    return [parse_tune(part.strip()) for part in text.split(",") if part.strip()]


def add_sweep_parser(sim_commands) -> None:
    from tessellate.cli import parse_policies, parse_seeds

    sweep = sim_commands.add_parser(
        "sweep",
        help="a grid: clusters x traces x tune ratios x policies x seeds, one table (local or Ray)",
        description=(
            "Run every combination of clusters, traces, tune ratios, policies and seeds with the "
            "inflation protocol (default) or the timed replay (--timed), in parallel, and write one "
            "results table."
        ),
        epilog=EPILOG_SWEEP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = sweep.add_argument_group("grid (default: the built-in synthetic workload)")
    group.add_argument("--nodes", type=Path, action="append", help="node list; repeat for several clusters")
    group.add_argument("--pods", type=Path, action="append", help="pod list; repeat for several traces")
    group.add_argument(
        "--synthetic-scale",
        type=parse_floats,
        default=None,
        metavar="LIST",
        help="synthetic clusters by size relative to openb, e.g. 0.05,0.1 (default 1.0)",
    )
    group.add_argument("--synthetic-seed", type=int, default=0, metavar="S", help="synthetic workload seed")
    group.add_argument(
        "--tune",
        type=parse_tunes,
        action="append",
        default=None,
        metavar="LIST",
        help="inflation ratios, e.g. 1.0,1.3 or repeated (default 1.3); refused with --timed",
    )
    group.add_argument(
        "--policies",
        type=parse_policies,
        default=None,
        help=f"comma-separated (default: the paper's six: {','.join(PAPER_POLICIES)})",
    )
    group.add_argument("--seeds", type=parse_seeds, default=[42, 43, 44], help="e.g. 42-51 (default 42-44)")
    sweep.add_argument(
        "--timed", action="store_true", help="timed replays (departures, pending queue) instead"
    )
    sweep.add_argument(
        "--max-wait", type=float, default=None, metavar="SECONDS", help="--timed: give up after this wait"
    )
    sweep.add_argument("--workers", type=int, default=None, help="local processes / Ray CPUs (default: all)")
    sweep.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: 'local' (start Ray here) or a cluster address such as ray://head:10001 or auto",
    )
    sweep.add_argument(
        "--plot",
        action="store_true",
        help="--timed: per cluster and trace, timed.html with every policy's timeline and queueing-"
        "delay CDF (first seed, replayed again here)",
    )
    sweep.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    sweep.add_argument("--force", action="store_true", help="delete files of an earlier run in --out first")


def sources_of(args: argparse.Namespace) -> list:
    """Clusters x traces, each as a `TraceSource`; refuses half-given or mixed inputs."""
    from tessellate.cli import UsageError
    from tessellate.simulator.experiment import TraceSource

    nodes, pods = args.nodes or [], args.pods or []
    if bool(nodes) != bool(pods):
        raise UsageError("give --nodes and --pods together (each --nodes runs with each --pods)")
    if nodes and args.synthetic_scale is not None:
        raise UsageError("--synthetic-scale sizes the synthetic workload; drop it with --nodes/--pods")
    if nodes:
        return [TraceSource(nodes=str(n), pods=str(p)) for n in nodes for p in pods]
    return [
        TraceSource(synthetic_seed=args.synthetic_seed, synthetic_scale=scale)
        for scale in (args.synthetic_scale or [1.0])
    ]


def cells_of(args: argparse.Namespace) -> list:
    from tessellate.cli import UsageError
    from tessellate.simulator.sweep import grid

    if args.timed and args.tune is not None:
        raise UsageError("--tune is the inflation ratio; the timed replay (--timed) has none: drop it")
    if args.plot and not args.timed:
        raise UsageError("--plot draws timed replays: add --timed (sim compare plots the inflation protocol)")
    if not args.timed and args.max_wait is not None:
        raise UsageError("--max-wait applies to timed replays: add --timed or drop it")
    if args.max_wait is not None and args.max_wait < 0:
        raise UsageError("--max-wait must be >= 0 seconds")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    tunes = [t for group in (args.tune or [[1.3]]) for t in group]
    policies = args.policies or list(PAPER_POLICIES)
    mode = "timed" if args.timed else "inflation"
    sources = sources_of(args)
    for source in sources:  # a bad file fails here, before any worker starts
        source.load()
    return grid(sources, policies, args.seeds, list(dict.fromkeys(tunes)), mode, args.max_wait)


def headline(mode: str) -> list[str]:
    """The columns the summary averages over seeds."""
    if mode == "timed":
        return ["placed_share", "delay_p95_s", "alloc_ratio_mean", "frag_ratio_mean"]
    return ["alloc_at_100", "alloc_at_130", "frag_ratio_at_130"]


def summarize(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Mean and standard deviation over seeds per cluster, workload, tune and policy."""
    keys = ["cluster", "workload", "tune", "policy"]
    metrics = headline(mode)
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out.insert(0, "seeds", grouped["seed"].nunique())
    return out.reset_index()


def render(summary: pd.DataFrame, mode: str) -> Table:
    table = Table(title=f"sweep · {mode} · mean ± sd over seeds")
    for name in ("cluster", "workload", "tune", "policy", "seeds"):
        table.add_column(name, justify="right" if name in ("tune", "seeds") else "left")
    for metric in headline(mode):
        table.add_column(metric, justify="right")
    for _, row in summary.iterrows():
        tune = "" if pd.isna(row["tune"]) else f"{row['tune']:g}"
        cells = [str(row["cluster"]), str(row["workload"]), tune, str(row["policy"]), str(row["seeds"])]
        for metric in headline(mode):
            mean, sd = row[f"{metric}_mean"], row[f"{metric}_std"]
            if pd.isna(mean):  # e.g. alloc_at_130 of a tune below 1.3: that point never arrives
                cells.append("—")
                continue
            cells.append(f"{mean:.4g}" + ("" if pd.isna(sd) else f" ± {sd:.2g}"))
        table.add_row(*cells)
    return table


def cmd_sim_sweep(args: argparse.Namespace) -> None:
    from tessellate.cli import UsageError, _stdout_console
    from tessellate.simulator.outdir import OutDirError, fresh_out_dir
    from tessellate.simulator.rayrun import RayUnavailableError, run_on_ray
    from tessellate.simulator.sweep import run_local

    cells = cells_of(args)
    try:
        out = fresh_out_dir(args.out, args.force)
    except OutDirError as exc:
        raise UsageError(str(exc)) from None
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        engine = f"ray {args.ray}" if args.ray else "local"
        task = progress.add_task(f"sweep ({engine})", total=len(cells), last="")

        def done(row: dict) -> None:
            last = f"{row['cluster']} {row['workload']} {row['policy']} seed {row['seed']}"
            progress.update(task, advance=1, last=last)

        try:
            rows = (
                run_on_ray(cells, args.ray, args.workers, done)
                if args.ray
                else run_local(cells, args.workers, done)
            )
        except RayUnavailableError as exc:
            raise UsageError(str(exc)) from None
    wall = time.perf_counter() - start
    mode = "timed" if args.timed else "inflation"
    table = pd.DataFrame(rows)
    table.to_csv(out / "sweep.csv", index=False)
    summary = summarize(table, mode)
    summary.to_csv(out / "summary.csv", index=False)
    out_console = _stdout_console()
    out_console.print(render(summary, mode))
    if args.plot:
        for page in plot_timed(cells, out):
            out_console.print(f"timed report: {page}")
    out_console.print(f"{len(rows)} runs ({engine}) in {wall:.1f} s. Results in {out}/sweep.csv")


class _StoreOnce(argparse._StoreAction):
    """A single-valued option that refuses a second value instead of keeping the last one."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        seen = namespace.__dict__.setdefault("_once_seen", {})
        if self.dest in seen:
            hint = (
                "; to run several, use `tessellate sim sweep` (it takes every --nodes and --pods)"
                if self.dest in ("nodes", "pods", "policy", "seed", "tune")
                else ""
            )
            raise argparse.ArgumentError(
                self, f"given twice ({seen[self.dest]} and {values}); this command takes one{hint}"
            )
        seen[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def refuse_repeated_options(parser: argparse.ArgumentParser) -> None:
    """Make every single-valued option of `parser` (and its subcommands) refuse repeats.

    argparse keeps the last of `--nodes a --nodes b` silently; a planner who meant two
    clusters would get one without noticing."""
    for action in parser._actions:
        if type(action) is argparse._StoreAction and action.option_strings:
            action.__class__ = _StoreOnce
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                refuse_repeated_options(sub)


def plot_timed(cells: list, out: Path) -> list[Path]:
    """Per cluster and trace: every policy's first seed replayed again, drawn on one page."""
    import re

    from tessellate.simulator.causes import never_placed_causes
    from tessellate.simulator.report.timed import write_timed_report
    from tessellate.simulator.sweep import cluster_label
    from tessellate.simulator.timed import run_timed

    groups: dict[object, dict[str, object]] = {}
    for cell in cells:
        groups.setdefault(cell.source, {}).setdefault(cell.policy, cell)
    pages = []
    for source, by_policy in groups.items():
        trace = source.load()
        results, causes = {}, {}
        for policy, cell in by_policy.items():
            results[policy] = run_timed(trace, policy, cell.seed, max_wait=cell.max_wait)
            causes[policy] = never_placed_causes(trace, results[policy])
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cluster_label(source)}_{trace.name}")
        folder = out / f"timed_{slug}"
        folder.mkdir(exist_ok=True)
        pages.append(write_timed_report(folder, trace.name, results, causes))
    return pages
