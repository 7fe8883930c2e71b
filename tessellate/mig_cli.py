"""`tessellate mig ...`: MIG layouts of a GPU model, and a layout for a demand.

    tessellate mig layouts --gpu A100-80GB [--no-me] [--json]
    tessellate mig plan --gpu A100-80GB --demand 3g.40gb=1,1g.10gb=3 [--in-use 3g.40gb@0] [--json]

In JSON a layout is `[{"profile": "3g.40gb", "start": 4}, ...]`; `layouts`
prints a list of them, `plan` prints one. Exit status: 0 done, 1 the demand
does not fit (the reason goes to stderr), 2 a mistake in the command (unknown
model or profile, bad --demand), always as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tessellate.placement.mig import (
    MigError,
    MigGeometry,
    MigInstance,
    MigLayout,
    geometry,
    maximal_layouts,
    valid_placements,
)
from tessellate.placement.migfrag import mig_fragmentation
from tessellate.placement.migplanner import MigPlanFailure, plan_layout

EPILOG_LAYOUTS = """\
examples:
  tessellate mig layouts --gpu A100-80GB
  tessellate mig layouts --gpu A30-24GB --json
  tessellate mig layouts --gpu H100-80GB --no-me      # leave out the +me (media) profiles

The slices column draws the memory slices left to right: each instance shows its
compute-slice count once per memory slice it owns ('4444|3333' is 4g@0 + 3g@4),
'.' is a free slice.
"""

EPILOG_PLAN = """\
examples:
  tessellate mig plan --gpu A100-80GB --demand 3g.40gb=1,1g.10gb=3
  tessellate mig plan --gpu H100-80GB --demand 7g.80gb=1 --in-use 3g.40gb@4
  tessellate mig plan --gpu A30-24GB --demand 2g.12gb=1 --json

Of all layouts that serve the demand (keeping --in-use instances where they are),
the plan is the one whose free slices the expected MIG requests can use best
(least MIG fragmentation, the FGD idea on memory slices; every profile without
+me equally likely). Exit status 1 and the reason when no layout serves it.
"""


class MigUsageError(Exception):
    """A mistake in how a `tessellate mig` command was called."""


def add_mig_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `mig layouts` and `mig plan` to the `tessellate` command's subparsers."""
    mig = subparsers.add_parser(
        "mig",
        help="MIG layouts of a GPU model, and a layout for a demand",
        description="Valid MIG (Multi-Instance GPU) layouts with exact slot positions.",
    )
    commands = mig.add_subparsers(dest="mig_command", required=True, metavar="SUBCOMMAND")

    layouts = commands.add_parser(
        "layouts",
        help="every maximal valid layout of a GPU model",
        description="List every maximal valid MIG layout (no further instance fits) of a GPU model.",
        epilog=EPILOG_LAYOUTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _gpu_option(layouts)
    layouts.add_argument("--no-me", action="store_true", help="leave out the media-extension (+me) profiles")
    layouts.add_argument("--json", action="store_true", help="print JSON: a list of layouts")
    layouts.set_defaults(mig_handler=cmd_mig_layouts)

    plan = commands.add_parser(
        "plan",
        help="the layout that serves a demand and keeps the most useful capacity free",
        description="Propose a MIG layout for a demand, or say why none serves it.",
        epilog=EPILOG_PLAN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _gpu_option(plan)
    plan.add_argument(
        "--demand",
        required=True,
        metavar="PROFILE=N,...",
        help="instances to place, e.g. 3g.40gb=1,1g.10gb=3 (a bare profile means 1)",
    )
    plan.add_argument(
        "--in-use",
        default="",
        metavar="PROFILE@START,...",
        help="instances already on the GPU, kept where they are, e.g. 3g.40gb@4,1g.10gb@0",
    )
    plan.add_argument("--json", action="store_true", help="print JSON: the layout")
    plan.set_defaults(mig_handler=cmd_mig_plan)
    return mig


def _gpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu", required=True, metavar="MODEL", help="GPU model, e.g. A100-80GB, H100-80GB, A30-24GB"
    )


def run_mig_command(args: argparse.Namespace) -> int:
    """Run the parsed `tessellate mig ...` command; returns the exit status."""
    handler: Callable[[argparse.Namespace], int] = args.mig_handler
    try:
        return handler(args)
    except (MigError, MigUsageError) as exc:
        _errors().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m tessellate.mig_cli ...` (the same as `tessellate mig ...`)."""
    parser = argparse.ArgumentParser(prog="tessellate")
    add_mig_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_mig_command(parser.parse_args(argv))


# -- parsing ----------------------------------------------------------------------------------


def parse_demand(text: str, gpu: MigGeometry) -> dict[str, int]:
    """'3g.40gb=1,1g.10gb=3' -> {'3g.40gb': 1, '1g.10gb': 3}; names checked against the model."""
    counts: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, number = part.partition("=")
        try:
            count = int(number) if sep else 1
        except ValueError:
            count = -1
        if count < 0 or not name.strip() or not (sep or _looks_like_profile(name)):
            raise MigUsageError(
                f"--demand wants PROFILE=COUNT[,PROFILE=COUNT...], e.g. 3g.40gb=1; got {part!r}"
            )
        profile = gpu.profile(name).name
        if profile in counts:
            raise MigUsageError(f"--demand names {profile} twice")
        counts[profile] = count
    if not counts:
        raise MigUsageError("--demand is empty; e.g. --demand 3g.40gb=1,1g.10gb=3")
    return counts


def _looks_like_profile(text: str) -> bool:
    return all(c.isalnum() or c in ".+/-" for c in text.strip())


def parse_in_use(text: str, gpu: MigGeometry) -> MigLayout:
    """'3g.40gb@4,1g.10gb@0' -> that layout (validated)."""
    instances: list[MigInstance] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, start = part.partition("@")
        if not sep or not start.strip().isdigit():
            raise MigUsageError(f"--in-use wants PROFILE@START[,...], e.g. 3g.40gb@4; got {part!r}")
        instances.append(MigInstance(gpu.profile(name).name, int(start)))
    return MigLayout(gpu, tuple(instances))


# -- commands ---------------------------------------------------------------------------------


def cmd_mig_layouts(args: argparse.Namespace) -> int:
    gpu = geometry(args.gpu)
    profiles = [p.name for p in gpu.profiles if not (args.no_me and p.media_extensions)]
    layouts = maximal_layouts(gpu, profiles)
    if args.json:
        _print_json([layout.to_json() for layout in layouts])
        return 0
    table = Table(
        title=(
            f"{gpu.model}: {len(layouts)} maximal MIG layouts "
            f"({gpu.memory_slices} memory slices, {gpu.compute_slices} compute slices)"
        ),
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("layout (profile@start)")
    table.add_column("slices")
    table.add_column("compute", justify="right")
    table.add_column("memory", justify="right")
    for number, layout in enumerate(layouts, 1):
        table.add_row(
            str(number),
            str(layout),
            layout.slice_map(),
            f"{layout.used_compute_slices}/{gpu.compute_slices}",
            f"{gpu.memory_slices - layout.free_memory_slices}/{gpu.memory_slices}",
        )
    out = _stdout()
    out.print(table)
    if gpu.placement_verification == "inferred":
        out.print(f"note: {gpu.model}'s placements are inferred from sibling GPUs, not observed on it.")
    return 0


def cmd_mig_plan(args: argparse.Namespace) -> int:
    gpu = geometry(args.gpu)
    counts = parse_demand(args.demand, gpu)
    in_use = parse_in_use(args.in_use, gpu)
    plan = plan_layout(gpu, counts, in_use)
    if isinstance(plan, MigPlanFailure):
        _errors().print(f"cannot plan {gpu.model}: {escape(plan.reason)}", highlight=False)
        return 1
    if args.json:
        _print_json(plan.to_json())
        return 0
    asked = ", ".join(f"{name}={n}" for name, n in counts.items())
    table = Table(title=f"MIG plan for {gpu.model}: {asked}", title_justify="left")
    for column in ("profile", "start", "memory slices", "compute", "memory MiB", ""):
        table.add_column(column, justify="right" if column in {"start", "compute", "memory MiB"} else "left")
    for instance in plan:
        profile = gpu.profile(instance.profile)
        table.add_row(
            profile.name,
            str(instance.start),
            f"[{instance.start}, {instance.start + profile.size})",
            str(profile.compute_slices),
            str(profile.memory_mib),
            "in use" if instance in in_use else "new",
        )
    out = _stdout()
    out.print(table)
    out.print(f"slices: {plan.slice_map()}")
    free = plan.free_slices()
    room = [
        f"{p.name}@{','.join(map(str, starts))}"
        for p in gpu.profiles
        if not p.media_extensions and (starts := valid_placements(plan, p))
    ]
    out.print(
        f"free: memory slices {list(free)}, {plan.free_compute_slices} compute slices; "
        f"room for one more: {', '.join(room) if room else 'nothing'}"
    )
    out.print(f"MIG fragmentation: {mig_fragmentation(plan):.2f} free slices unusable by the expected demand")
    return 0


# -- output -----------------------------------------------------------------------------------


def _stdout() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)


def _errors() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")


if __name__ == "__main__":
    sys.exit(main())
