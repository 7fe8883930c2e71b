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

from placement import PAPER_POLICIES, POLICIES, InvalidRequestError
from placement.catalogue import UnknownGpuModelError
from simulator.kinds import SYNTHETIC_KINDS
from simulator.trace import TraceError
from tessellate.agent_cli import add_agent_command, run_agent_command
from tessellate.mig_cli import add_mig_commands, run_mig_command
from tessellate.scheduler_cli import add_scheduler_command, run_scheduler_command

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
pods.csv (outcome, start time and queueing delay per pod) and summary.csv.
"""

EPILOG_COMPARE = """\
examples:
  tessellate sim compare --out report/                      # 6 policies x 3 seeds, synthetic
  tessellate sim compare --nodes N.csv --pods P1.csv --pods P2.csv \\
      --policies fgd,bestfit --seeds 42-51 --out report/

Writes the three analysis CSVs (one row per run), summary.csv, PNG plots and
report.html (self-contained: open it in a browser, or mail it).
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
    group.add_argument("--nodes", type=Path, help="node list (openb CSV or generic CSV/Parquet)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessellate",
        description="GPU-aware Kubernetes scheduling: run the scheduler, simulate and compare policies.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    run.add_argument("--plot", action="store_true", help="also write PNG plots")

    timed = sim_commands.add_parser(
        "timed",
        help="replay in time with departures and a pending queue",
        description=(
            "Replay a trace by its creation/deletion times: pods arrive, wait in a FIFO queue when "
            "nothing fits (retried whenever capacity is released) and depart. Reports utilisation, "
            "fragmentation and queueing delay over time."
        ),
        epilog=EPILOG_TIMED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_options(timed, many_pods=False, tune=False)
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
    timed.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")

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
    add_mig_commands(commands)
    add_scheduler_command(commands)
    add_agent_command(commands)
    return parser


def _sources(args: argparse.Namespace) -> list:
    from simulator.experiment import TraceSource

    pods = args.pods if isinstance(args.pods, list) else ([args.pods] if args.pods else [])
    if bool(args.nodes) != bool(pods):
        raise UsageError("give both --nodes and --pods, or neither for the synthetic workload")
    if not pods:
        return [
            TraceSource(
                synthetic_seed=args.synthetic_seed,
                synthetic_scale=args.synthetic_scale,
                synthetic_kind=args.synthetic_kind,
            )
        ]
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
    from simulator import report
    from simulator.experiment import frames, record_of
    from simulator.replay import run_inflation

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
    args.out.mkdir(parents=True, exist_ok=True)
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


def cmd_sim_timed(args: argparse.Namespace) -> None:
    import pandas as pd

    from simulator.timed import run_timed

    trace = _sources(args)[0].load()
    with _progress() as progress:
        task = progress.add_task(f"{args.policy} timed replay", total=None, last="")
        start = time.perf_counter()
        result = run_timed(
            trace,
            args.policy,
            args.seed,
            max_wait=args.max_wait,
            samples=args.samples,
            progress=lambda n: progress.update(task, advance=n),
            mig_choice=args.mig_choice,
            mig_reconfig_s=args.mig_reconfig_s,
        )
        seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
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
    pd.DataFrame(
        {
            "pod": list(result.outcome),
            "outcome": list(result.outcome.values()),
            "start_s": [result.start_time.get(p) for p in result.outcome],
            "reason_on_arrival": [result.reasons.get(p, "") for p in result.outcome],
        }
    ).to_csv(args.out / "pods.csv", index=False)
    summary = result.summary()
    pd.DataFrame([{"workload": trace.name, "policy": args.policy, **summary}]).to_csv(
        args.out / "summary.csv", index=False
    )
    table = Table(title=f"{trace.name} · {args.policy} · timed replay")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,.4g}")
    out_console = _stdout_console()
    out_console.print(table)
    out_console.print(f"{len(result.outcome)} pods in {seconds:.2f} s. Results in {args.out}/")


def cmd_sim_compare(args: argparse.Namespace) -> None:
    from simulator import report
    from simulator.experiment import RunSpec, frames, run_grid

    sources = _sources(args)
    for source in sources:  # fail fast on a bad file, before starting workers
        source.load()
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
    wall = time.perf_counter() - start
    alloc, frag, frag_ratio, extra = frames(records)
    meta = {
        "policies": ", ".join(args.policies),
        "seeds": args.seeds,
        "tune": args.tune,
        "total runs": len(records),
        "wall time": wall,
        "workload source": ", ".join(
            "synthetic (openb-like)" if s.is_synthetic else f"{s.nodes} + {s.pods}" for s in sources
        ),
    }
    html = report.write_report(args.out, alloc, frag, frag_ratio, extra=extra, meta=meta)
    summary = report.summarize(alloc, frag, frag_ratio, extra)
    out_console = _stdout_console()
    out_console.print(report.render_table(summary))
    out_console.print(f"{len(records)} runs in {wall:.1f} s. Report: {html}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    }
    try:
        handlers[(args.command, args.sim_command)](args)
    except (TraceError, UnknownGpuModelError, InvalidRequestError, UsageError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
