"""`kubectl tessellate`: the cluster's GPUs as the scheduler sees them, with your own kubeconfig.

    kubectl tessellate nodes [--node NAME]     per node and GPU: model, who uses it, free, MIG, health
    kubectl tessellate why NAMESPACE/POD       why a pod waits: counted reasons, the closest nodes
    kubectl tessellate queues                  tenant queues: allocated, quota, limit, fair share

kubectl runs any `kubectl-<name>` on PATH as `kubectl <name>`; installing Tessellate puts
`kubectl-tessellate` there. The plugin lists nodes, pods and Queues with the caller's
kubeconfig and RBAC (read access to them is all it needs) and rebuilds the scheduler's
own cache from them (`scheduler/cache.py`, `scheduler/tenancy.py`): the same parsing,
charging and filters, so what it shows is what the scheduler decides from. It changes
nothing in the cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tessellate.kube import ApiError, KubeClient
from tessellate.kubetrace import FINISHED
from tessellate.placement import MILLI_PER_GPU, Unschedulable
from tessellate.placement.quota import format_units
from tessellate.scheduler.cache import ClusterCache, Placed
from tessellate.scheduler.config import DEFAULT_POLICY
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.tenancy import QUEUES_PATH, owner

EXAMPLES = """\
examples:
  kubectl tessellate nodes                      # every GPU node, one row per GPU
  kubectl tessellate nodes --node gpu-node-07   # one node
  kubectl tessellate why team-a/trainer-0       # why it is Pending, and which nodes came closest
  kubectl tessellate queues                     # who uses what, per queue and GPU model
  kubectl tessellate -o json nodes              # the same as JSON, for scripts

It reads with your kubeconfig (--kubeconfig, or $KUBECONFIG, or ~/.kube/config) and
needs list on nodes, pods (all namespaces) and, for queues, queues.tessellate.dev.
"""


class PluginError(RuntimeError):
    """Something the user can fix: a pod that does not exist, no access, no API server."""


def load_cache(api: KubeClient, scheduler_name: str, policy: str) -> ClusterCache:
    """The scheduler's cache, rebuilt from one list of nodes, pods and Queues."""
    cache = ClusterCache(policy, scheduler_name=scheduler_name)
    nodes, _ = api.list_all("/api/v1/nodes")
    pods, _ = api.list_all("/api/v1/pods")
    try:
        queues, _ = api.list_all(QUEUES_PATH)
    except ApiError as exc:
        if not exc.is_not_found:
            raise
        queues = []  # the CRD is not installed: every pod is in `default`
    with cache.lock:
        cache.replace_nodes(nodes)
        cache.replace_pods(p for p in pods if (p.get("status") or {}).get("phase") not in FINISHED)
        cache.tenancy.replace(queues)
        cache.ensure_built()
    return cache


# -- nodes ----------------------------------------------------------------------------


def node_rows(cache: ClusterCache, only: str | None = None) -> list[dict[str, Any]]:
    """One row per GPU of every GPU node: model, used and free milli, holders, MIG, health."""
    state = cache.state
    if state is None:
        return []
    holders: dict[tuple[int, int], list[str]] = {}
    for key, assignment in state.live.items():
        rec = cache.pods.get(owner(key))
        name = rec.key if rec is not None else key
        for gpu in assignment.gpus:
            holders.setdefault((assignment.node, gpu), []).append(name)
        for slot in assignment.mig:
            holders.setdefault((assignment.node, slot.gpu), []).append(f"{name} ({slot.instance})")
    problems = {p.node: p.message for p in cache.node_problems()}
    rows = []
    for n, name in enumerate(state.names):
        if (only and name != only) or state.gpu_count[n] == 0:
            continue
        model = state.gpu_models[state.model_id[n]] if state.model_id[n] >= 0 else "-"
        info = cache.nodes.get(name)
        layouts = state.mig.layouts[n] if state.mig.capable[n] else None
        for g in range(int(state.gpu_count[n])):
            unhealthy = info is not None and g in info.unhealthy_gpus
            health = "unhealthy" if unhealthy else ("quarantined" if cache.quarantined[n] else "ok")
            rows.append(
                {
                    "node": name,
                    "gpu": g,
                    "model": model,
                    "free_milli": int(state.gpu_left[n, g]),
                    "used_milli": MILLI_PER_GPU - int(state.gpu_left[n, g]),
                    "holders": sorted(holders.get((n, g), [])),
                    "mig": ", ".join(map(str, layouts[g].instances)) if layouts is not None else "",
                    "health": health,
                    "problem": problems.get(name, ""),
                }
            )
    return rows


def show_nodes(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="GPUs as the Tessellate scheduler counts them")
    for column in ("node", "gpu", "model", "used", "free", "used by", "MIG instances", "health"):
        table.add_column(column, justify="right" if column in ("gpu", "used", "free") else "left")
    for row in rows:
        table.add_row(
            row["node"],
            str(row["gpu"]),
            row["model"],
            f"{row['used_milli'] / MILLI_PER_GPU:.2f}",
            f"{row['free_milli'] / MILLI_PER_GPU:.2f}",
            "\n".join(row["holders"]) or "-",
            row["mig"] or "-",
            row["health"] if not row["problem"] else f"{row['health']}: {row['problem']}",
        )
    console.print(table)
    if not rows:
        console.print("no GPU nodes (or none by that name)")


# -- why ------------------------------------------------------------------------------


def explain(cache: ClusterCache, key: str, closest: int = 5) -> dict[str, Any]:
    """Why pod `key` (namespace/name) waits: the scheduler's counted reasons and the nodes
    that came closest, with what each lacks. Decides in a what-if and forgets it."""
    rec = next((r for r in cache.pods.values() if r.key == key), None)
    if rec is None:
        raise PluginError(f"pod {key} not found (give it as NAMESPACE/NAME; is it in a finished phase?)")
    if rec.node_name:
        return {"pod": key, "bound": rec.node_name, "message": f"bound to {rec.node_name}"}
    if rec.problem is not None:
        return {"pod": key, "message": rec.problem, "closest": []}
    problem = cache.tenancy.prefilter(rec) if cache.tenancy.active else None
    if problem is not None:
        return {"pod": key, "message": problem, "closest": []}
    with cache.lock:
        result = cache.decide(rec)
        if isinstance(result, Placed):
            cache.forget(rec.uid)
            message = f"fits now on {result.node}: the scheduler will bind it"
            return {"pod": key, "fits": result.node, "message": message}
        assert isinstance(result, Unschedulable)
        return {"pod": key, "message": result.message, "closest": closest_nodes(cache, rec, closest)}


def closest_nodes(cache: ClusterCache, rec: PodRecord, count: int) -> list[dict[str, Any]]:
    """The nodes the pod misses by least: those its filters allow first, then by shortfall."""
    state = cache.state
    if state is None or rec.request is None:
        return []
    request = rec.request.request
    allowed, _ = cache.filter(rec, pods_matter=False)  # the pod's own constraints, not others' usage
    cpu_short = np.maximum(request.cpu_milli - state.cpu_left, 0)
    mem_short = np.maximum(request.memory_mib - state.mem_left, 0)
    if request.is_fraction:
        gpu_short = np.maximum(request.gpu_milli - state.gpu_max_left, 0) / MILLI_PER_GPU
    else:
        gpu_short = np.maximum(request.gpu_count - state.gpu_free_count, 0).astype(float)
    shortfall = gpu_short + cpu_short / np.maximum(state.cpu_cap, 1)
    shortfall = shortfall + mem_short / np.maximum(state.mem_cap, 1)
    order = np.lexsort((shortfall, ~allowed))[:count]
    out = []
    for n in order:
        only = np.zeros(len(state), dtype=bool)
        only[n] = True
        passes, reasons = cache.filter(rec, mask=only)
        lacks = [] if passes[n] else sorted(reasons) or ["excluded by a filter"]
        if gpu_short[n] > 0:
            lacks.append(f"{format_gpus(gpu_short[n])} more GPU")
        if cpu_short[n] > 0:
            lacks.append(f"{cpu_short[n] / 1000:g} more CPU")
        if mem_short[n] > 0:
            lacks.append(f"{mem_short[n] / 1024:.1f} GiB more memory")
        lacks = lacks or ["GPU memory, sharers, pod count or MIG slots (see `kubectl tessellate nodes`)"]
        out.append({"node": state.names[n], "lacks": lacks})
    return out


def format_gpus(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def show_why(console: Console, answer: dict[str, Any]) -> None:
    console.print(f"[bold]{answer['pod']}[/bold]: {answer['message']}")
    closest = answer.get("closest") or []
    if closest:
        table = Table(title="nodes that came closest")
        table.add_column("node")
        table.add_column("what it lacks")
        for row in closest:
            table.add_row(row["node"], "; ".join(row["lacks"]))
        console.print(table)


# -- queues ---------------------------------------------------------------------------


def queue_rows(cache: ClusterCache) -> list[dict[str, Any]]:
    tenancy = cache.tenancy
    with cache.lock:
        book = tenancy.sync(cache)
        if book is None:
            return []
        ours = cache.scheduler_name
        pending = tenancy.pending_demand(cache, lambda r: r.scheduler_name == ours and not r.node_name)
        fair = book.fair_shares(pending)
        rows = []
        for queue in sorted(tenancy.tree.specs):
            allowed = tenancy.tree.specs[queue].namespaces
            namespaces = "all" if allowed is None else ",".join(sorted(allowed)) or "none"
            for model in book.models:
                entry = book.entry(queue, model)
                used, asked = book.usage(queue, model), pending.get((queue, model), 0)
                if not (used or asked or entry.quota or entry.limit is not None):
                    continue
                rows.append(
                    {
                        "queue": queue,
                        "model": model,
                        "allocated": format_units(used),
                        "quota": format_units(entry.quota),
                        "limit": "-" if entry.limit is None else format_units(entry.limit),
                        "fair_share": format_units(fair.get((queue, model), 0)),
                        "pending": format_units(asked),
                        "namespaces": namespaces,
                    }
                )
        for name, why in sorted(tenancy.problems.items()):
            rows.append({"queue": name, "model": "-", "problem": why})
    return rows


def show_queues(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="tenant queues (GPU units: a fraction counts milli/1000)")
    columns = ("queue", "model", "allocated", "quota", "limit", "fair share", "pending", "namespaces")
    for column in columns:
        table.add_column(column, justify="left" if column in ("queue", "model", "namespaces") else "right")
    for row in rows:
        if "problem" in row:
            table.add_row(row["queue"], "-", f"[red]not usable: {row['problem']}[/red]", "", "", "", "", "")
            continue
        keys = ("queue", "model", "allocated", "quota", "limit", "fair_share", "pending", "namespaces")
        table.add_row(*(row[k] for k in keys))
    console.print(table)


# -- the command ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl tessellate",
        description=__doc__.split("\n\n", 2)[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--scheduler-name", default="tessellate", help="the scheduler's schedulerName")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="placement policy the scheduler runs")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table or json")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{nodes,why,queues}")
    nodes = sub.add_parser("nodes", help="per node and GPU: model, who uses it, free, MIG layout, health")
    nodes.add_argument("--node", help="only this node")
    why = sub.add_parser("why", help="why a pod is Pending, and the nodes that came closest")
    why.add_argument("pod", help="NAMESPACE/NAME (or NAME in namespace `default`)")
    why.add_argument("--closest", type=int, default=5, help="how many near-miss nodes to show (default 5)")
    sub.add_parser("queues", help="tenant queues: allocated, quota, limit, fair share, pending per model")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        api = KubeClient.from_kubeconfig(args.kubeconfig)
        cache = load_cache(api, args.scheduler_name, args.policy)
        if args.command == "nodes":
            answer: Any = node_rows(cache, args.node)
            show = show_nodes
        elif args.command == "why":
            key = args.pod if "/" in args.pod else f"default/{args.pod}"
            answer, show = explain(cache, key, args.closest), show_why
        else:
            answer, show = queue_rows(cache), show_queues
        if args.output == "json":
            print(json.dumps(answer, indent=2))
        else:
            show(console, answer)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        hint = " (your kubeconfig's user needs list on nodes and pods)" if exc.status in (401, 403) else ""
        print(f"error: the API server refused: {exc}{hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: cannot reach the cluster: {exc}; check --kubeconfig / $KUBECONFIG", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
