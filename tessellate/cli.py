"""The `tessellate` command: `tessellate sim ...` today; the scheduler and agent join later.

Errors a user can fix (a bad trace row, an unknown policy) are printed as one
line that says what to do, with exit status 2; they never end in a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tessellate import plan_cli, queues_cli, sweep_cli
from tessellate.agent_cli import add_agent_command, run_agent_command
from tessellate.mig_cli import add_mig_commands, run_mig_command
from tessellate.placement import PAPER_POLICIES, POLICIES, InvalidRequestError
from tessellate.placement.catalogue import CatalogueFileError, UnknownGpuModelError, extend_catalogue
from tessellate.scheduler_cli import add_scheduler_command, run_scheduler_command
from tessellate.simulator.kinds import SYNTHETIC_KINDS
from tessellate.simulator.outdir import OutDirError, fresh_out_dir
from tessellate.simulator.queuefile import QueueFileError
from tessellate.simulator.trace import TraceError
from tessellate.trace_cli import add_trace_parser, run_trace_command

console = Console(stderr=True, soft_wrap=True)

EPILOG_RUN = """\
examples:
  tessellate sim run --policy fgd --out out/fgd            # built-in synthetic workload
  tessellate sim run --nodes openb_node_list_gpu_node.csv \\
      --pods openb_pod_list_default.csv --policy fgd --tune 1.3 --seed 42 --out out/ --plot

Writes analysis_allo_discrete.csv, analysis_frag_discrete.csv and
analysis_frag_ratio_discrete.csv (the FGD paper's columns: allocation ratio,
fragmentation and fragmentation ratio at 0..130 % of GPU capacity arrived),
plus failed_pods.csv with the reason each unplaced pod was refused.
"""

EPILOG_TIMED = """\
examples:
  tessellate sim timed --policy fgd --out out/timed         # synthetic workload
  tessellate sim timed --synthetic-kind mig --mig-choice firstfit --max-wait 0 --out out/mig
  tessellate sim timed --nodes N.csv --pods P.csv --policy bestfit --max-wait 3600 --out out/

Writes timeseries.csv (time, allocation ratio, fragmentation, pending, running),
pods.csv (per pod: outcome, never_placed_cause, creation_s, start_s, delay_s = start -
creation, GPU request, the scheduler's message on arrival) and summary.csv; never_placed
is split into its causes: fits_no_node (larger than any empty node: more nodes of these
shapes never help), timed_out (waited past --max-wait), withdrawn (deleted while
pending), pending_at_end. With --plot also timeline.png (allocation and pending over
time), delay_cdf.png (queueing-delay CDF) and timed.html (all of it on one page).
"""

EPILOG_COMPARE = """\
examples:
  tessellate sim compare --out report/                      # 6 policies x 3 seeds, synthetic
  tessellate sim compare --nodes N.csv --pods P1.csv --pods P2.csv \\
      --policies fgd,bestfit --seeds 42-51 --out report/

Writes the three analysis CSVs (one row per run), summary.csv, PNG plots and
report.html (self-contained: open it in a browser, or mail it).

  tessellate sim compare --synthetic-kind multi-tenant --policies fgd \\
      --queues even.yaml --queues training-first.yaml --out cmp/

With --queues: quota splits instead of policies, each a timed replay with queues
(docs/queues.md); writes summary.csv, queues.csv, queues-<model>.png and queues.html.
"""


EPILOG_BOUND = """\
examples:
  tessellate sim bound                                      # synthetic workload, seed 42
  tessellate sim bound --nodes openb_node_list_gpu_node.csv \\
      --pods openb_pod_list_default.csv --tune 1.3 --seed 42 --at 100,130 --policies fgd,bestfit

For the first n arrivals of the FGD protocol (the last event the paper's column x averages),
prints an upper bound no policy can beat and a feasible offline packing (replayed through the
cluster state's own checks). The upper bound is the smaller of two, each a dual certificate
that stays valid when the time limit stops its solver early:
  aggregate LP (about a second): fractions packed GPU by GPU exactly, as patterns (milli-GPU,
    GPU memory, sharer limits; no GPU shared with a whole-GPU pod), whole GPUs, GPU models,
    time-sliced GPUs; relaxed: CPU, memory and pod count are pooled per node type (summed
    over its identical nodes), not per node. This is the bound that is usually tight.
  configuration LP (column generation, the rest of the time): also CPU, memory and pod count
    per node exactly, but only as tight as its pricing's proven bounds, which on 8-GPU nodes
    rarely close in time; its configurations are what the packing is built from (an integer
    program picks whole copies of them, then a greedy fill).
Relaxed in both (the bound stays valid): MIG instances count by compute share against the
node's GPU capacity, without slot positions. CPU-only pods hold no GPU and are left out.
A longer --time-limit mostly raises the offline packing; the upper bound comes early.
"""


def parse_seeds(text: str) -> list[int]:
    """'42' or '42,45' or '42-51' (inclusive) or a mix: '1,5-7'."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 42, 42,43 or 42-51, not {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def parse_mig_choices(text: str) -> list[str]:
    choices = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in choices if c not in ("aware", "firstfit")]
    if bad or not choices:
        raise argparse.ArgumentTypeError(f"--mig-choice takes aware, firstfit or both, not {text!r}")
    return choices


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown policy {', '.join(unknown)}; choose from {', '.join(sorted(POLICIES))}"
        )
    return names


def parse_tune(text: str) -> float | None:
    if text.lower() in {"none", "off", "0"}:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tune takes a number such as 1.3 (or 'off'), not {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--tune must be positive (or 'off')")
    return value


def _trace_options(parser: argparse.ArgumentParser, many_pods: bool, tune: bool = True) -> None:
    group = parser.add_argument_group("workload (default: the built-in synthetic openb-like workload)")
    group.add_argument(
        "--nodes",
        type=Path,
        help="node list (openb CSV or generic CSV/Parquet); without --pods, the synthetic openb-like "
        "workload is sized to these nodes",
    )
    if many_pods:
        group.add_argument(
            "--pods", type=Path, action="append", help="pod list; repeat to compare several traces"
        )
    else:
        group.add_argument("--pods", type=Path, help="pod list (openb CSV or generic CSV/Parquet)")
    group.add_argument(
        "--synthetic-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="size of the synthetic workload relative to the openb cluster (default 1.0 = 1213 nodes)",
    )
    group.add_argument("--synthetic-seed", type=int, default=0, metavar="S", help="synthetic workload seed")
    group.add_argument(
        "--synthetic-mix",
        default="",
        metavar="MIX",
        help="what-if mix of the openb-like workload: relative weights of CPU-only, fraction and "
        "whole-GPU pods, and the share of GPU pods naming their models, "
        "e.g. cpu=0.1,frac=0.5,whole=0.4,spec=0.3",
    )
    group.add_argument(
        "--synthetic-kind",
        choices=SYNTHETIC_KINDS,
        default="openb",
        help="synthetic workload: openb-like (default); mig (MIG inference + whole-GPU training; "
        "scale 1.0 = 16 nodes x 8 GPUs, 3000 pods); mixed-topology (DGX-1, PCIe-bridged, PCIe-only "
        "and NVSwitch nodes) or nvswitch-spot (the spot-gpu-2026 NVSwitch nodes, from ../shared), "
        "both with 30%% multi-GPU training jobs: compare fgd-blind, fgd and fgd-topo there",
    )
    if not tune:
        return
    parser.add_argument(
        "--tune",
        type=parse_tune,
        default=1.3,
        metavar="R",
        help="FGD inflation: add sampled pods until GPU demand is R x capacity (default 1.3; 'off')",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessellate")
    except PackageNotFoundError:  # a source tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessellate",
        description="GPU-aware Kubernetes scheduling: run the scheduler, simulate and compare policies.",
    )
    parser.add_argument("--version", action="version", version=f"tessellate {_version()}")
    parser.add_argument(
        "--gpu-catalogue",
        metavar="YAML",
        action="append",
        default=[],
        help="add GPU models (and product labels that mean them) from a YAML list, e.g. "
        "[{name: L20-48GB, memoryGiB: 48, products: [NVIDIA-L20]}]; repeatable",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_trace_parser(commands)
    sim = commands.add_parser(
        "sim",
        help="replay traces through the placement core",
        description="Replay GPU cluster traces through Tessellate's placement core.",
    )
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND")

    run = sim_commands.add_parser(
        "run",
        help="one policy, one seed: the paper's result rows",
        description="Replay one trace with one policy and seed (the FGD paper's inflation protocol).",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_options(run, many_pods=False)
    run.add_argument(
        "--policy", default="fgd", choices=sorted(POLICIES), help="placement policy (default fgd)"
    )
    run.add_argument("--seed", type=int, default=42, help="shuffle/tuning/tie-break seed (default 42)")
    run.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    run.add_argument(
        "--force", action="store_true", help="--out may hold an earlier run: its files are deleted first"
    )
    run.add_argument("--plot", action="store_true", help="also write PNG plots")

    timed = sim_commands.add_parser(
        "timed",
        help="replay in time with departures and a pending queue",
        description=(
            "Replay a trace by its creation/deletion times: pods arrive, wait in a FIFO queue when "
            "nothing fits (retried whenever capacity is released) and depart. Reports utilisation, "
            "fragmentation and queueing delay over time. With --queues, pods wait in per-team queues "
            "with quotas per GPU model instead (docs/queues.md)."
        ),
        epilog=EPILOG_TIMED + "\n" + queues_cli.EPILOG_QUEUES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_options(timed, many_pods=False, tune=False)
    queues_cli.add_timed_options(timed)
    timed.add_argument("--policy", default="fgd", choices=sorted(POLICIES), help="placement policy")
    timed.add_argument("--seed", type=int, default=0, help="seed for the random policy (default 0)")
    timed.add_argument(
        "--max-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a pod waiting longer than this counts as failed (default: waits until it departs)",
    )
    timed.add_argument("--samples", type=int, default=200, help="points in the time series (default 200)")
    timed.add_argument(
        "--mig-choice",
        choices=("aware", "firstfit"),
        default="aware",
        help="where MIG instances go: least MIG fragmentation growth (default) or first fit",
    )
    timed.add_argument(
        "--mig-reconfig-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="a pod whose MIG instances must be created starts this much later (default 0)",
    )
    timed.add_argument(
        "--batch",
        action="store_true",
        help="decide the head of the pending queue (and arrival bursts) together with CP-SAT, "
        "never worse than one at a time (placement/batch.py)",
    )
    timed.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="pods per batch with --batch (default 16)"
    )
    timed.add_argument(
        "--batch-time-limit",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="solver time per batch with --batch (default 0.2)",
    )
    timed.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    timed.add_argument(
        "--force", action="store_true", help="--out may hold an earlier run: its files are deleted first"
    )
    timed.add_argument(
        "--plot", action="store_true", help="also write timeline.png, delay_cdf.png and timed.html"
    )

    compare = sim_commands.add_parser(
        "compare",
        help="several policies x seeds (x traces) side by side, with an HTML report",
        description="Run policies x seeds x traces in parallel and write a comparison report.",
        epilog=EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_options(compare, many_pods=True)
    compare.add_argument(
        "--policies",
        type=parse_policies,
        default=list(PAPER_POLICIES),
        help=f"comma-separated (default: the paper's six: {','.join(PAPER_POLICIES)})",
    )
    compare.add_argument("--seeds", type=parse_seeds, default=[42, 43, 44], help="e.g. 42-51 (default 42-44)")
    queues_cli.add_compare_options(compare)
    compare.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    compare.add_argument(
        "--mig-choice",
        type=parse_mig_choices,
        default=["aware"],
        metavar="LIST",
        help="MIG placement(s) to compare: aware, firstfit or aware,firstfit (default aware); "
        "firstfit runs are labelled <policy>+mig-firstfit",
    )
    compare.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    compare.add_argument(
        "--force", action="store_true", help="--out may hold an earlier run: its files are deleted first"
    )
    compare.add_argument(
        "--bound",
        action="store_true",
        help="also compute the proven upper bound and an offline packing per trace and seed at "
        "x=100 and 130 (a row, a dashed line, and how many idle GPUs any policy could recover)",
    )
    compare.add_argument(
        "--bound-time-limit", type=float, default=60.0, metavar="S", help="seconds per bound (default 60)"
    )
    compare.add_argument(
        "--gpu-hour-price",
        type=float,
        default=None,
        metavar="USD",
        help="price of one GPU-hour: stranded GPUs at the end of the runs (130 %% arrived) are also "
        "shown in money per month (730 h)",
    )
    _add_bound_parser(sim_commands)
    sweep_cli.add_sweep_parser(sim_commands)
    sweep_cli.refuse_repeated_options(sim)
    add_mig_commands(commands)
    plan_cli.add_plan_commands(commands)
    add_scheduler_command(commands)
    add_agent_command(commands)
    return parser


def parse_percentages(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at takes percentages such as 100,130, not {text!r}") from None
    if not values or any(not 1 <= v <= 130 for v in values):
        raise argparse.ArgumentTypeError("--at takes percentages 1..130 of GPU capacity, e.g. 100,130")
    return values


def _add_bound_parser(sim_commands) -> None:
    bound = sim_commands.add_parser(
        "bound",
        help="a proven upper bound on what any policy can allocate, and an offline packing",
        description=(
            "Bracket OPT, the most GPU any subset of the first arrivals can hold at once: an upper "
            "bound that no online policy can beat, and a feasible offline packing below it."
        ),
        epilog=EPILOG_BOUND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_options(bound, many_pods=False)
    bound.add_argument("--seed", type=int, default=42, help="shuffle/tuning seed (default 42)")
    bound.add_argument(
        "--at", type=parse_percentages, default=[100, 130], metavar="LIST", help="arrived %%, default 100,130"
    )
    bound.add_argument(
        "--time-limit", type=float, default=60.0, metavar="S", help="solver seconds per point (default 60)"
    )
    bound.add_argument(
        "--policies", type=parse_policies, default=[], help="also replay these (e.g. fgd,bestfit)"
    )
    bound.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _bound_row(point, trace, policies: dict[str, int]) -> dict:
    r = point.result
    pct = 100 / r.capacity_milli
    return {
        "workload": trace.name,
        "x": point.x,
        "arrivals": point.arrivals,
        "arrived_pct": round(point.arrived_milli * pct, 3),
        "upper_milli": r.upper_milli,
        "feasible_milli": r.feasible_milli,
        "upper_pct": round(r.upper_milli * pct, 3),
        "feasible_pct": round(r.feasible_milli * pct, 3),
        "gap_gpus": r.gap_milli / 1000,
        "capacity_milli": r.capacity_milli,
        "lp_optimal": r.lp_optimal,
        "seconds": round(r.seconds, 2),
        "relaxed": list(r.relaxed),
        "packing": r.packing,
        "policies": {
            name: {"milli": v, "pct": round(v * pct, 3), "recoverable_gpus": (r.upper_milli - v) / 1000}
            for name, v in policies.items()
        },
    }


def cmd_sim_bound(args: argparse.Namespace) -> None:
    import json

    from tessellate.simulator.bound import bound_points, policy_at

    trace = _sources(args)[0].load()
    if args.time_limit <= 0:
        raise UsageError("--time-limit must be positive (seconds per point)")
    with console.status(f"bounding {trace.name} at {', '.join(map(str, args.at))} % arrived"):
        points = bound_points(trace, args.seed, args.tune, args.at, time_limit=args.time_limit)
        ns = [pt.arrivals for pt in points]
        held = {p: policy_at(trace, p, args.seed, args.tune, ns) for p in args.policies}
    rows = [_bound_row(pt, trace, {p: held[p][i] for p in args.policies}) for i, pt in enumerate(points)]
    out_console = _stdout_console()
    if args.json:
        out_console.print_json(json.dumps(rows))
        return
    table = Table(title=f"{trace.name} · seed {args.seed} · tune {args.tune}: what any policy can reach")
    for name in ("x %", "arrivals", "upper bound %", "offline packing %", "gap GPUs", "LP closed", "s"):
        table.add_column(name, justify="right")
    for name in args.policies:
        table.add_column(f"{name} % (≤ GPUs recoverable)", justify="right")
    for row in rows:
        table.add_row(
            str(row["x"]),
            f"{row['arrivals']:,}",
            f"{row['upper_pct']:.2f}",
            f"{row['feasible_pct']:.2f}",
            f"{row['gap_gpus']:,.1f}",
            "yes" if row["lp_optimal"] else "no",
            f"{row['seconds']:.1f}",
            *(
                f"{v['pct']:.2f} (≤ {v['recoverable_gpus']:,.1f})"
                for v in (row["policies"][name] for name in args.policies)
            ),
        )
    out_console.print(table)
    relaxed = sorted({text for row in rows for text in row["relaxed"]})
    out_console.print("relaxed: " + ("; ".join(relaxed) if relaxed else "nothing this trace uses"))


def _compare_bounds(sources, seeds, tune, time_limit: float, workers: int | None):
    """The bracket at x = 100 and 130 per trace and seed, as `simulator.report`'s bound frame."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    jobs = [(source, seed) for source in sources for seed in seeds]
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_bound_job, jobs, [tune] * len(jobs), [time_limit] * len(jobs)))
    return pd.DataFrame([row for rows in results for row in rows])


def _bound_job(job, tune, time_limit) -> list[dict]:
    from tessellate.simulator.bound import bound_points

    source, seed = job
    trace = source.load()
    rows = []
    for point in bound_points(trace, seed, tune, (100, 130), time_limit=time_limit):
        row = _bound_row(point, trace, {})
        rows.append({**{k: v for k, v in row.items() if k not in ("relaxed", "policies")}, "seed": seed})
    return rows


def _sources(args: argparse.Namespace) -> list:
    from tessellate.simulator.experiment import TraceSource

    pods = args.pods if isinstance(args.pods, list) else ([args.pods] if args.pods else [])
    if pods and not args.nodes:
        raise UsageError(
            "--pods needs its cluster: give --nodes too (or neither, for the synthetic workload)"
        )
    mix = getattr(args, "synthetic_mix", "")
    try:
        if args.nodes and not pods:  # the synthetic workload, sized to these nodes
            return [TraceSource(nodes=str(args.nodes), synthetic_seed=args.synthetic_seed, synthetic_mix=mix)]
        if not pods:
            return [
                TraceSource(
                    synthetic_seed=args.synthetic_seed,
                    synthetic_scale=args.synthetic_scale,
                    synthetic_kind=args.synthetic_kind,
                    synthetic_mix=mix,
                )
            ]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if mix:
        raise UsageError("--synthetic-mix shapes the synthetic workload; drop it with --pods")
    return [TraceSource(nodes=str(args.nodes), pods=str(p)) for p in pods]


def _stdout_console() -> Console:
    """Results go to stdout; when it is a file or pipe, keep tables wide instead of 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=160)


class UsageError(Exception):
    """A mistake in how the command was called."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeRemainingColumn(),
        console=console,
    )


def cmd_sim_run(args: argparse.Namespace) -> None:
    from tessellate.simulator import report
    from tessellate.simulator.experiment import frames, record_of
    from tessellate.simulator.replay import run_inflation

    source = _sources(args)[0]
    trace = source.load()
    with _progress() as progress:
        task = progress.add_task(f"{args.policy} seed {args.seed}", total=None, last="")
        start = time.perf_counter()
        result = run_inflation(
            trace,
            args.policy,
            args.seed,
            args.tune,
            progress=lambda n: progress.update(task, advance=n),
        )
        seconds = time.perf_counter() - start
        progress.update(task, total=len(result.series.placed), completed=len(result.series.placed))
    record = record_of(result, seconds)
    alloc, frag, frag_ratio, extra = frames([record])
    fresh_out_dir(args.out, args.force)
    summary = report.summarize(alloc, frag, frag_ratio, extra)
    report.write_csvs(args.out, alloc, frag, frag_ratio, summary)
    _write_failures(args.out / "failed_pods.csv", result)
    if args.plot:
        report.plot_alloc_curves(alloc, args.out / "alloc.png", trace.name)
        report.plot_frag_curves(frag_ratio, args.out / "frag_ratio.png", trace.name)
    _print_run(record, trace.name, args.out)


def _write_failures(path: Path, result) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pod", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "reason"])
        for pod, why in result.failures:
            r = pod.request
            writer.writerow(
                [
                    pod.name,
                    r.cpu_milli,
                    r.memory_mib,
                    r.gpu_count,
                    r.gpu_milli,
                    "|".join(r.gpu_models),
                    why.message,
                ]
            )


def _print_run(record, workload: str, out: Path) -> None:
    table = Table(title=f"{workload} · {record.sc_policy} · seed {record.seed} · tune {record.tune}")
    table.add_column("arrived % of GPU capacity", justify="right")
    table.add_column("allocated %", justify="right")
    table.add_column("fragmentation %", justify="right")
    table.add_column("frag ratio %", justify="right")
    for x in (25, 50, 75, 90, 100, 110, 120, 130):
        table.add_row(
            str(x), f"{record.alloc[x]:.2f}", f"{record.frag[x]:.2f}", f"{record.frag_ratio[x]:.2f}"
        )
    out_console = _stdout_console()
    out_console.print(table)
    out_console.print(
        f"{record.pods} pods, {record.failed_pods} not placed, {record.seconds:.2f} s "
        f"({record.pods / record.seconds:,.0f} pods/s). Results in {out}/"
    )


def _batch_options(args: argparse.Namespace):
    """`sim timed --batch`'s `placement.batch.BatchOptions`; None without --batch."""
    if not args.batch:
        return None
    from tessellate.placement.batch import BatchOptions

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not args.batch_time_limit > 0:
        raise UsageError("--batch-time-limit must be positive (seconds per batch)")
    return BatchOptions(max_pods=args.batch_size, time_limit_s=args.batch_time_limit)


def cmd_sim_timed(args: argparse.Namespace) -> None:
    import pandas as pd

    from tessellate.simulator.causes import cause_counts, never_placed_causes, pods_frame
    from tessellate.simulator.timed import run_timed

    trace = _sources(args)[0].load()
    batch = _batch_options(args)
    tree, queue_note = queues_cli.queue_tree_for(args, trace)
    with _progress() as progress:
        task = progress.add_task(f"{args.policy} timed replay", total=None, last="")
        start = time.perf_counter()
        result = (
            queues_cli.run_with_queues(args, trace, tree, lambda n: progress.update(task, advance=n))
            if tree is not None
            else None
        )
        result = result or run_timed(
            trace,
            args.policy,
            args.seed,
            max_wait=args.max_wait,
            samples=args.samples,
            progress=lambda n: progress.update(task, advance=n),
            mig_choice=args.mig_choice,
            mig_reconfig_s=args.mig_reconfig_s,
            batch=batch,
        )
        seconds = time.perf_counter() - start
    fresh_out_dir(args.out, args.force)
    grid = result.grid
    pd.DataFrame(
        {
            "time_s": grid.time,
            "alloc_ratio": grid.alloc_ratio,
            "frag_milli": grid.frag_milli,
            "frag_ratio": grid.frag_ratio,
            "pending": grid.pending,
            "running": grid.running,
            **({} if grid.mig_frag_slices is None else {"mig_frag_slices": grid.mig_frag_slices}),
        }
    ).to_csv(args.out / "timeseries.csv", index=False)
    causes = never_placed_causes(trace, result)
    pods_frame(trace, result, causes).to_csv(args.out / "pods.csv", index=False)
    summary = result.summary()
    summary.update({f"never_placed_{k}": float(v) for k, v in cause_counts(causes).items()})
    pd.DataFrame([{"workload": trace.name, "policy": args.policy, **summary}]).to_csv(
        args.out / "summary.csv", index=False
    )
    if batch is not None:
        from dataclasses import asdict

        columns = ["time", "where", "pods", "status", "solve_s", "total_s", "fallback"]
        columns += ["greedy_milli", "placed_milli"]
        solves = pd.DataFrame([asdict(s) for s in result.batch_solves], columns=columns)
        solves.to_csv(args.out / "batch_solves.csv", index=False)
    mode = " · batch" if batch is not None else ""
    table = Table(title=f"{trace.name} · {args.policy}{mode} · timed replay")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,.4g}")
    out_console = _stdout_console()
    out_console.print(table)
    if result.tenancy is not None:
        label = args.queues.stem if args.queues else "queues"
        html = queues_cli.write_outputs(args.out, result, label, queue_note, seconds)
        out_console.print(queues_cli.queue_table({label: result.tenancy}))
        out_console.print(f"{queue_note}. Per-queue report: {html}")
    if args.plot:
        from tessellate.simulator.report.timed import write_timed_report

        page = write_timed_report(args.out, trace.name, {args.policy: result}, causes={args.policy: causes})
        out_console.print(f"Plots and report: {page}")
    out_console.print(f"{len(result.outcome)} pods in {seconds:.2f} s. Results in {args.out}/")


def cmd_sim_compare(args: argparse.Namespace) -> None:
    if args.queues:
        queues_cli.cmd_compare_queues(args)
        return
    from tessellate.simulator import report
    from tessellate.simulator.experiment import RunSpec, frames, model_frame, run_grid
    from tessellate.simulator.report.money import fragmentation_sentences, model_summary

    if args.gpu_hour_price is not None and not args.gpu_hour_price > 0:
        raise UsageError("--gpu-hour-price must be a positive price per GPU-hour, e.g. 2.5")
    sources = _sources(args)
    for source in sources:  # fail fast on a bad file, before starting workers
        source.load()
    fresh_out_dir(args.out, args.force)
    specs = [
        RunSpec(source, policy, seed, args.tune, mig_choice)
        for source in sources
        for policy in args.policies
        for mig_choice in args.mig_choice
        for seed in args.seeds
    ]
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("simulating", total=len(specs), last="")

        def done(record) -> None:
            progress.update(
                task,
                advance=1,
                last=f"{record.workload} {record.sc_policy} seed {record.seed}: {record.alloc[130]:.2f}%",
            )

        records = run_grid(specs, workers=args.workers, on_done=done)
    bound = None
    if args.bound:
        with console.status("bounding: upper bound and offline packing per trace and seed"):
            bound = _compare_bounds(sources, args.seeds, args.tune, args.bound_time_limit, args.workers)
    wall = time.perf_counter() - start
    alloc, frag, frag_ratio, extra = frames(records)
    meta = {
        "policies": ", ".join(args.policies),
        "seeds": args.seeds,
        "tune": args.tune,
        "total runs": len(records),
        "wall time": wall,
        "workload source": ", ".join(
            (f"synthetic (openb-like) sized to {s.nodes}" if s.nodes else "synthetic (openb-like)")
            if s.is_synthetic
            else f"{s.nodes} + {s.pods}"
            for s in sources
        ),
    }
    models = model_frame(records)
    html = report.write_report(
        args.out,
        alloc,
        frag,
        frag_ratio,
        extra=extra,
        meta=meta,
        bound=bound,
        models=models,
        gpu_hour_price=args.gpu_hour_price,
    )
    summary = report.with_bound(report.summarize(alloc, frag, frag_ratio, extra), bound)
    out_console = _stdout_console()
    out_console.print(report.render_table(summary))
    if models["gpu_model"].nunique() > 1:
        for table in _model_tables(model_summary(models)):
            out_console.print(table)
    for _, why in report.best_verdicts(summary).values():
        if why.startswith(("no significant", "one seed")):
            out_console.print(f"best policy: {why}")
    for sentence in report.bound_sentences(summary, bound):
        out_console.print(sentence)
    for sentence in fragmentation_sentences(models, args.gpu_hour_price):
        out_console.print(sentence, soft_wrap=True)  # one line: easy to grep and to paste
    out_console.print(f"{len(records)} runs in {wall:.1f} s. Report: {html}")


def _model_tables(per_model) -> list[Table]:
    """`sim compare`'s per GPU model breakdowns: at 100 % arrived, then at the end of the runs."""
    from tessellate.simulator.report.money import point_title

    end = int(per_model["arrived_pct"].max())
    return [
        _model_table(per_model[per_model["arrived_pct"] == pct], point_title(pct, end))
        for pct in sorted(per_model["arrived_pct"].unique())
    ]


def _model_table(per_model, point: str) -> Table:
    """One arrived point of the per GPU model breakdown."""
    table = Table(title=f"per GPU model {point}: mean ± sd over seeds")
    for name in ("workload", "policy", "GPU model", "GPUs", "allocated %", "fragmented GPUs"):
        table.add_column(name, justify="left" if name in ("workload", "policy", "GPU model") else "right")
    for _, r in per_model.iterrows():
        sd_a = "" if r["alloc_pct_std"] != r["alloc_pct_std"] else f" ± {r['alloc_pct_std']:.2f}"
        sd_f = "" if r["frag_gpus_std"] != r["frag_gpus_std"] else f" ± {r['frag_gpus_std']:.1f}"
        table.add_row(
            str(r["workload"]),
            str(r["sc_policy"]),
            str(r["gpu_model"]),
            f"{int(r['gpus']):,}",
            f"{r['alloc_pct_mean']:.2f}{sd_a}",
            f"{r['frag_gpus_mean']:.1f}{sd_f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for path in args.gpu_catalogue:
            extend_catalogue(path)
    except CatalogueFileError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    if args.command == "trace":
        return run_trace_command(args)
    if args.command == "plan":
        return plan_cli.run_plan_command(args)
    if args.command == "mig":
        return run_mig_command(args)
    if args.command == "scheduler":
        return run_scheduler_command(args)
    if args.command == "agent":
        return run_agent_command(args)
    handlers = {
        ("sim", "run"): cmd_sim_run,
        ("sim", "timed"): cmd_sim_timed,
        ("sim", "compare"): cmd_sim_compare,
        ("sim", "bound"): cmd_sim_bound,
        ("sim", "sweep"): sweep_cli.cmd_sim_sweep,
    }
    try:
        handlers[(args.command, args.sim_command)](args)
    except (
        TraceError,
        UnknownGpuModelError,
        InvalidRequestError,
        UsageError,
        QueueFileError,
        OutDirError,
    ) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
