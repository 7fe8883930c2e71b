"""`tessellate trace ...`: turn a live cluster into a trace that `tessellate sim` replays.

    tessellate trace from-kubectl SNAPSHOT.json --out DIR
    tessellate trace record [--kubeconfig K] --out DIR [--duration 24h]

Both read nodes and pods exactly as the live scheduler does (`tessellate/kubetrace.py`)
and write the generic schema (docs/trace-schema.md): DIR/nodes.csv and DIR/pods.csv.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tessellate.kube import ApiError, KubeClient
from tessellate.kubetrace import Conversion, from_objects

EPILOG = """\
examples:
  kubectl get nodes,pods -A -o json > snap.json
  tessellate trace from-kubectl snap.json --out mycluster/
  tessellate sim timed --nodes mycluster/nodes.csv --pods mycluster/pods.csv --policy fgd --out replay/

  tessellate trace record --out week/ --duration 24h     # Ctrl-C stops early; run again to resume
  tessellate sim timed --nodes week/nodes.csv --pods week/pods.csv --policy tessellate --out replay/

A snapshot has no history: the bound pods start the replay (time 0) and the pending ones
arrive after them, 1 s apart; nothing departs. A recording has the history: each pod's
creation, first bind and departure, in seconds from the recording's start. GPU product
labels (NVIDIA-A100-SXM4-80GB, ...) map to catalogue models as the scheduler maps them;
for a model the catalogue lacks, add it with `tessellate --gpu-catalogue extra.yaml`.
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")


def duration(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d` or plain seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 30m, 24h or 7d, got {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


def add_trace_parser(commands: Any) -> None:
    trace = commands.add_parser(
        "trace",
        help="record a cluster, or convert a kubectl snapshot, into a replayable trace",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = trace.add_subparsers(dest="trace_command", required=True, metavar="SUBCOMMAND")
    snap = sub.add_parser("from-kubectl", help="a `kubectl get nodes,pods -A -o json` dump as a trace")
    snap.add_argument("snapshot", type=Path, help="the JSON file kubectl wrote (a List of Nodes and Pods)")
    snap.add_argument(
        "--out", type=Path, required=True, help="folder for nodes.csv and pods.csv (new or empty)"
    )
    snap.add_argument("--scheduler-name", default="tessellate", help="pending pods of this scheduler arrive")
    rec = sub.add_parser("record", help="watch a cluster and write its pods' history as a trace")
    rec.add_argument(
        "--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config (needs list/watch nodes, pods)"
    )
    rec.add_argument("--out", type=Path, required=True, help="recording folder: new, empty, or one to resume")
    rec.add_argument(
        "--duration", type=duration, help="stop after this long (90s, 30m, 24h; default: Ctrl-C)"
    )


def run_trace_command(args: argparse.Namespace) -> int:
    console = Console()
    try:
        if args.trace_command == "from-kubectl":
            return _from_kubectl(console, args)
        return _record(console, args)
    except (OSError, ValueError, ApiError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2


def _from_kubectl(console: Console, args: argparse.Namespace) -> int:
    from tessellate.simulator.traces.generic import write_trace

    try:
        doc = json.loads(args.snapshot.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.snapshot}: not a kubectl JSON dump ({exc}); make it with "
                         "`kubectl get nodes,pods -A -o json > snap.json`") from None  # fmt: skip
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError(
            f"{args.snapshot}: expected a kubectl List with `items` (kubectl get nodes,pods -A -o json)"
        )
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; give a new folder so two traces never mix")
    out.mkdir(parents=True, exist_ok=True)
    conversion = from_objects(items, name=args.snapshot.stem, scheduler_name=args.scheduler_name)
    write_trace(conversion.trace, out / "nodes.csv", out / "pods.csv")
    _summary(console, conversion, out)
    return 0


def _summary(console: Console, conversion: Conversion, out: Path) -> None:
    trace = conversion.trace
    table = Table(title=f"trace written to {out}/")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("nodes", str(len(trace.nodes)))
    table.add_row("GPUs", str(sum(n.gpu_count for n in trace.nodes)))
    table.add_row("pods (starting state, at time 0)", str(sum(1 for p in trace.pods if p.creation_time == 0)))
    table.add_row("pods arriving", str(sum(1 for p in trace.pods if p.creation_time)))
    for why, count in sorted(conversion.skipped.items()):
        table.add_row(f"left out: {why}", str(count))
    console.print(table)
    for note in conversion.notes:
        console.print(f"note: {note}", highlight=False)


def _record(console: Console, args: argparse.Namespace) -> int:
    from tessellate.trace_record import record

    api = KubeClient.from_kubeconfig(args.kubeconfig)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    console.print(f"recording nodes and pods into {args.out}/ {until} (tables rewritten every 5 s)")
    trace = record(api, args.out, args.duration, stop, args.namespace, args.node_selector)
    console.print(f"recorded {len(trace.pods)} pods on {len(trace.nodes)} nodes into {args.out}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="tessellate")
    add_trace_parser(parser.add_subparsers(dest="command"))
    sys.exit(run_trace_command(parser.parse_args()))
