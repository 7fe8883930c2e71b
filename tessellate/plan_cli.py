"""`tessellate plan capacity`: how many nodes of which shape meet a service target, cheapest.

The search itself is `simulator.capacity` (timed replays through the placement core);
this module reads the inputs, shows progress and writes the table, CSV, PNG and HTML.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tessellate.placement import POLICIES

console = Console(stderr=True, soft_wrap=True)

EPILOG_CAPACITY = """\
examples:
  tessellate plan capacity --node-types docs/examples/types.yaml --growth 1.5 --out plan/
  tessellate plan capacity --pods P.csv --node-types types.yaml \\
      --target placed=0.99,wait-p95=600s --growth 1.5 --seeds 42-46 --out plan/

Inputs. --pods is a pod trace with creation and deletion times (openb or generic CSV or
Parquet); without it, the built-in synthetic workload (--synthetic-scale, GPU models
unpinned). types.yaml lists node_types (name, gpu_model, gpus, cpu, memory_gib,
price_per_hour, optional existing, gpu_replicas, max_count) and optional speeds
(GPU model: speed relative to V100 = 1.0; defaults in docs/planning.md).

Target. placed=P: at least that share of pods starts within --max-wait (default 3600 s;
a pod waiting longer gives up). wait-p95=T: the 95th percentile of the wait over all pods
(a pod never placed waits forever) is at most T (600, 600s, 10m, 1h). Both must hold on
every seed.

Model. Each seed resamples the workload at --growth times its arrival rate (a copy of a
pod arrives at the creation time of a random pod of the trace). A pod runs its trace
lifetime divided by the speed of the GPU model it starts on.

Method. Every shape at existing + k nodes, k doubled then bisected to the smallest that
meets the target; then each shape's count bisected down with the others fixed, repeated
until no single node of any shape can be removed, from several starts (each shape order,
and each shape doubled to find trades); the cheapest wins. Every evaluated mix is kept:
the frontier is those no other beats in cost, placed share and wait at once. A local
optimum over mixes, checked node by node, not a proven global one (docs/planning.md).

Speed. The seeds of one mix replay in --workers processes at once (default: one per CPU,
at most one per seed; 1 = one after another in this process); the answer is the same.

Writes plan.csv (every evaluated mix), frontier.csv, cost_vs_target.png and plan.html.
"""


def parse_target(text: str):
    """'placed=0.99,wait-p95=600s' -> Target (either part may be left out)."""
    from tessellate.simulator.capacity import Target

    values: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, _, raw = part.partition("=")
        key = key.strip().lower()
        try:
            if key == "placed":
                values["placed"] = float(raw)
                if not 0 < values["placed"] <= 1:
                    raise ValueError
            elif key in ("wait-p95", "wait_p95"):
                values["wait_p95_s"] = parse_duration(raw)
            else:
                raise argparse.ArgumentTypeError(
                    f"unknown target {key!r}: use placed=0.99 and/or wait-p95=600s"
                )
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--target takes placed=SHARE (0..1] and wait-p95=DURATION (600, 600s, 10m, 1h), not {part!r}"
            ) from None
    if not values:
        raise argparse.ArgumentTypeError("--target needs placed=... and/or wait-p95=...")
    return Target(**values)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|h)?\s*", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def add_plan_commands(commands) -> None:
    from tessellate.cli import parse_seeds

    plan = commands.add_parser(
        "plan",
        help="capacity planning: the cheapest nodes that meet a service target",
        description="Capacity planning through the simulator's timed replay.",
    )
    plan_commands = plan.add_subparsers(dest="plan_command", required=True, metavar="SUBCOMMAND")
    capacity = plan_commands.add_parser(
        "capacity",
        help="the cheapest mix of node shapes meeting placed share and p95 wait targets",
        description=(
            "Find the cheapest mix of candidate node shapes (types.yaml: GPU model, size, price) "
            "on which the workload, grown by --growth, meets the target on every seed."
        ),
        epilog=EPILOG_CAPACITY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    capacity.add_argument("--pods", type=Path, help="pod trace with times (default: synthetic workload)")
    capacity.add_argument("--node-types", type=Path, required=True, help="candidate shapes (types.yaml)")
    capacity.add_argument(
        "--target",
        type=parse_target,
        default="placed=0.99,wait-p95=600s",
        help="service target (default placed=0.99,wait-p95=600s)",
    )
    capacity.add_argument("--growth", type=float, default=1.0, help="arrival-rate factor (default 1.0)")
    capacity.add_argument(
        "--seeds", type=parse_seeds, default=[42, 43, 44], help="resampling seeds (default 42-44)"
    )
    capacity.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="a pod waiting longer gives up (default 3600)",
    )
    capacity.add_argument("--policy", default="fgd", choices=sorted(POLICIES), help="placement policy")
    capacity.add_argument(
        "--synthetic-scale",
        type=float,
        default=0.05,
        metavar="F",
        help="size of the synthetic workload without --pods (default 0.05, about 400 pods)",
    )
    capacity.add_argument("--synthetic-seed", type=int, default=0, metavar="S")
    capacity.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes replaying a mix's seeds in parallel (default: one per CPU; 1 = serial, "
        "in this process); the results do not depend on it",
    )
    capacity.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    capacity.add_argument("--force", action="store_true", help="delete files of an earlier run in --out")
    from tessellate.sweep_cli import refuse_repeated_options

    refuse_repeated_options(plan)


def _workload(args: argparse.Namespace):
    from tessellate.simulator.trace import Trace

    if args.pods is None:
        from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

        config = SyntheticConfig(seed=args.synthetic_seed, scale=args.synthetic_scale, gpu_spec_share=0.0)
        return generate(config)
    from tessellate.simulator.traces import generic, openb

    fmt = generic.detect_format(args.pods, "pods")
    pods = openb.load_pods(args.pods) if fmt == "openb" else generic.load_pods(args.pods)
    return Trace(name=args.pods.stem, nodes=(), pods=pods)


def run_plan_command(args: argparse.Namespace) -> int:
    from tessellate.cli import UsageError
    from tessellate.placement.catalogue import UnknownGpuModelError
    from tessellate.simulator.capacity import PlanError
    from tessellate.simulator.nodetypes import NodeTypesError
    from tessellate.simulator.outdir import OutDirError
    from tessellate.simulator.trace import TraceError

    try:
        cmd_plan_capacity(args)
    except (PlanError, NodeTypesError, OutDirError, TraceError, UnknownGpuModelError, UsageError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0


def cmd_plan_capacity(args: argparse.Namespace) -> None:
    from tessellate.cli import UsageError, _stdout_console
    from tessellate.simulator.capacity import PlanError, Planner, grow, unplaceable
    from tessellate.simulator.nodetypes import load_node_types
    from tessellate.simulator.outdir import fresh_out_dir

    if not args.growth > 0:
        raise UsageError("--growth must be positive (1.5 = 50 % more arrivals)")
    if args.max_wait < 0:
        raise UsageError("--max-wait must be >= 0 seconds")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1 (1 = serial)")
    types = load_node_types(args.node_types)
    trace = _workload(args)
    if any(p.creation_time is None for p in trace.pods):
        raise UsageError(f"{args.pods}: planning needs creation times (and deletion times) for every pod")
    seeds = args.seeds if args.growth != 1 else args.seeds[:1]  # growth 1: no resampling, one workload
    workloads = [grow(trace, args.growth, seed) for seed in seeds]
    lost = unplaceable(workloads[0], types.shapes)
    if len(lost) > (1 - args.target.placed) * len(workloads[0].pods):
        example = lost[0].request
        raise PlanError(
            f"{len(lost)} of {len(workloads[0].pods)} pods fit no shape even on an empty node (e.g. "
            f"{lost[0].name}: {example.gpu_count} GPU x {example.gpu_milli} milli, "
            f"{example.cpu_milli / 1000:g} CPU, {example.memory_mib / 1024:g} GiB"
            f"{', model ' + '|'.join(example.gpu_models) if example.gpu_models else ''}): add a shape "
            "that holds them or lower placed="
        )
    out = fresh_out_dir(args.out, args.force)
    start = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("searching", total=None)
        evaluated = [0]

        def seen(e) -> None:
            evaluated[0] += 1
            state = "meets" if e.meets else "misses"
            progress.update(
                task,
                description=f"{evaluated[0]} mixes evaluated; last {e.mix}: {state}, "
                f"{e.cost_per_hour:,.2f}/h",
            )

        planner = Planner(
            workloads,
            types.shapes,
            types.speeds,
            args.target,
            args.policy,
            args.max_wait,
            on_eval=seen,
            workers=args.workers or os.cpu_count() or 1,
        )
        best = planner.solve()
    wall = time.perf_counter() - start
    _write_outputs(args, out, types, planner, best, wall, len(workloads[0].pods), seeds)
    _print(types.shapes, planner, best, wall, out, args, _stdout_console())


def _answer(shapes, best, args) -> str:
    from tessellate.simulator.report.plan import HOURS_PER_MONTH, mix_text

    t = args.target
    return (
        f"Cheapest mix meeting placed ≥ {t.placed:g} and wait p95 ≤ {t.wait_p95_s:g} s at growth "
        f"{args.growth:g}: {mix_text(shapes, best.mix)}, {best.cost_per_hour:,.2f} per hour "
        f"(≈ {best.cost_per_hour * HOURS_PER_MONTH:,.0f} per month); worst seed placed "
        f"{best.placed_worst:.4f}, wait p95 {best.wait_p95_worst:,.0f} s"
    )


def _write_outputs(args, out: Path, types, planner, best, wall: float, pods: int, seeds) -> None:
    from tessellate.simulator.capacity import __doc__ as method
    from tessellate.simulator.report.plan import evaluations_frame, plot_cost_vs_target, write_plan_html

    frontier = planner.frontier()
    table = evaluations_frame(types.shapes, list(planner.seen.values()), frontier)
    table.to_csv(out / "plan.csv", index=False)
    front = table[table["frontier"]].drop(columns="frontier")
    front.to_csv(out / "frontier.csv", index=False)
    plot = plot_cost_vs_target(table, args.target, best.cost_per_hour, out / "cost_vs_target.png")
    shapes = pd.DataFrame(
        [
            {
                "name": s.name,
                "GPU model": s.gpu_model,
                "GPUs": s.gpus,
                "CPU": s.cpu_milli / 1000,
                "memory GiB": s.memory_mib / 1024,
                "price/h": s.price_per_hour,
                "existing": s.existing,
                "speed": types.speeds.get(s.gpu_model, 1.0),
            }
            for s in types.shapes
        ]
    )
    meta = {
        "workload": str(args.pods) if args.pods else f"synthetic x{args.synthetic_scale:g}",
        "pods per seed": f"{pods:,}",
        "growth": f"{args.growth:g}",
        "seeds": ", ".join(map(str, seeds)),
        "policy": args.policy,
        "max wait": f"{args.max_wait:g} s",
        "mixes evaluated": len(planner.seen),
        "workers": planner.workers,
        "wall time": f"{wall:.1f} s",
    }
    write_plan_html(
        out / "plan.html", _answer(types.shapes, best, args), front, shapes, meta, plot, method or ""
    )


def _print(shapes, planner, best, wall: float, out: Path, args, out_console: Console) -> None:
    from tessellate.simulator.report.plan import mix_text

    table = Table(
        title="frontier near the answer: no other evaluated mix is cheaper, places more and waits less"
    )
    for name in ("mix", "GPUs", "cost/h", "placed (worst seed)", "wait p95 s (worst)", "meets"):
        table.add_column(name, justify="left" if name == "mix" else "right")
    frontier = planner.frontier()
    shown = [e for e in frontier if e.cost_per_hour >= 0.8 * best.cost_per_hour]
    for e in shown:
        gpus = sum(s.gpus * n for s, n in zip(shapes, e.mix, strict=True))
        style = "bold green" if e.mix == best.mix else None
        table.add_row(
            mix_text(shapes, e.mix),
            f"{gpus:,}",
            f"{e.cost_per_hour:,.2f}",
            f"{e.placed_worst:.4f}",
            "never" if e.wait_p95_worst == float("inf") else f"{e.wait_p95_worst:,.0f}",
            "yes" if e.meets else "no",
            style=style,
        )
    out_console.print(table)
    if len(shown) < len(frontier):
        out_console.print(
            f"{len(frontier) - len(shown)} cheaper frontier mixes (all missing) in frontier.csv"
        )
    out_console.print(_answer(shapes, best, args), soft_wrap=True)
    out_console.print(f"{len(planner.seen)} mixes evaluated in {wall:.1f} s. Report: {out / 'plan.html'}")
