#!/usr/bin/env python3
"""Scheduler throughput through a real API server: Tessellate against kube-scheduler.

For each scheduler in turn, on its own fresh kube-apiserver + etcd
(scripts/control-plane, separate state dir, purged afterwards):

  1. create N identical GPU nodes (cpu 96, memory 768Gi, pods 110, nvidia.com/gpu 8,
     nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB) and then all P pods, Pending;
  2. start the scheduler, and watch the pods: every bind is timestamped when the
     watch delivers it;
  3. stop when every pod is bound, or when no bind came for --stall seconds (pods
     that do not fit stay Pending and are counted);
  4. read the scheduler's decision-latency histogram from its /metrics, and rebuild
     the final placement to measure GPU allocation and FGD fragmentation.

What is printed, per scheduler:
  - pods bound/s end to end = bound pods / (last bind observed - scheduler start),
    start-up included (listing N nodes and P pods); also the time to the first
    bind and the rate after it;
  - per-pod decision latency p50/p99 from the scheduler's own histogram
    (tessellate_scheduling_algorithm_duration_seconds,
    scheduler_scheduling_algorithm_duration_seconds for kube-scheduler), by linear
    interpolation inside the histogram bucket, so they are only as fine as the
    bucket bounds;
  - GPU allocation ratio and FGD fragmentation (ATC'23) of the final placement,
    against the pods' own GPU-shape distribution as the target workload;
  - the ratios Tessellate / kube-scheduler.

The pods ask for whole GPUs only (1, 2, 4 or 8, with 10 CPU and 80Gi per GPU) so
that kube-scheduler can run the same workload. The seeded --mix is blended with
the 1-GPU (or 8-GPU) shape so that the expected GPU demand is --demand x the
cluster's GPUs. kube-scheduler runs one profile with NodeResourcesFit's
MostAllocated strategy over nvidia.com/gpu, cpu and memory (weight 1 each), the
same client rate limit as Tessellate's default (qps 500, burst 1000), and its
default, adaptive percentageOfNodesToScore. Targets (Tessellate): >= 100 pods/s
end to end, decision p99 <= 10 ms.

    .venv/bin/python benchmarks/scheduler_throughput.py                # 1000 nodes, 5000 pods
    .venv/bin/python benchmarks/scheduler_throughput.py --nodes 100 --pods 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kube_bench import (
    GPU_SIZES,
    NAMESPACE,
    BindWatcher,
    KubeScheduler,
    SchedulerProcess,
    TessellateScheduler,
    Workload,
    await_binds,
    build_kube_scheduler,
    control_plane_down,
    control_plane_up,
    histogram_buckets,
    histogram_quantile,
    make_workload,
    metric_sum,
    placement_quality,
    populate,
    say,
    tessellate_scheduler_available,
)
from rich.console import Console
from rich.table import Table
from tessellate.scheduler.config import ClientConnection

TARGET_PODS_PER_S = 100.0
TARGET_P99_MS = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000, help="GPU nodes, 8 GPUs each (default 1000)")
    parser.add_argument(
        "--pods", type=int, default=5000, help="pods, all created before the scheduler starts"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the pods' GPU counts (default 42)")
    parser.add_argument(
        "--mix",
        default="60,20,12,8",
        help="relative weights of 1,2,4,8-GPU pods before the demand adjustment (default 60,20,12,8)",
    )
    parser.add_argument(
        "--demand",
        type=float,
        default=0.9,
        help="expected GPU demand as a fraction of the cluster's GPUs (default 0.9)",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=10.0,
        help="end a run after this many seconds without a bind (default 10)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for the first bind (default 180)",
    )
    parser.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="Tessellate's placement policy (default: the config's default); repeat to run each in turn",
    )
    parser.add_argument(
        "--queues",
        type=int,
        default=0,
        metavar="K",
        help="also run Tessellate with K tenant queues (the Queue CRD, quota capacity/K each, "
        "pods labelled round-robin): the cost of queues, in the same process",
    )
    parser.add_argument("--skip-kube-scheduler", action="store_true", help="run Tessellate only")
    parser.add_argument("--skip-tessellate", action="store_true", help="run kube-scheduler only")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument(
        "--workdir",
        default=str(Path(tempfile.gettempdir()) / f"tessellate-bench-{os.getuid()}"),
        help="scheduler configs and logs go here (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-control-plane",
        action="store_true",
        help="leave each run's control plane running (not purged) for inspection",
    )
    args = parser.parse_args(argv)
    try:
        args.mix = [float(x) for x in args.mix.split(",")]
    except ValueError:
        parser.error(f"--mix: expected four numbers like 60,20,12,8, got {args.mix!r}")
    if len(args.mix) != len(GPU_SIZES) or min(args.mix) < 0 or sum(args.mix) <= 0:
        parser.error("--mix: expected four non-negative weights for 1, 2, 4 and 8 GPUs")
    if args.nodes < 1 or args.pods < 1:
        parser.error("--nodes and --pods must be at least 1")
    if args.skip_kube_scheduler and args.skip_tessellate:
        parser.error("nothing to run: both schedulers skipped")
    return args


def run_one(sched: SchedulerProcess, workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """One scheduler on its own fresh control plane; returns its figures."""
    label = sched.label
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    state_dir = Path(runtime) / f"tessellate-bench-cp-{label}-{os.getpid()}"
    say(f"[{label}] fresh control plane in {state_dir}")
    plane = control_plane_up(state_dir)
    try:
        api = plane.client()
        say(f"[{label}] creating {len(workload.node_names)} nodes and {len(workload.pod_names)} pods")
        node_s, pod_s = populate(api, workload, sched.scheduler_name, queues=getattr(sched, "queues", 0))
        say(
            f"[{label}] created nodes in {node_s:.1f} s, pods in {pod_s:.1f} s "
            f"({len(workload.pod_names) / pod_s:.0f} pods/s); starting {label}"
        )
        watcher = BindWatcher(plane.client(), NAMESPACE)
        if watcher.initially_bound:
            raise RuntimeError(f"{len(watcher.initially_bound)} pods were bound before the scheduler started")
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        sched.start(plane)
        try:
            progress = await_binds(
                watcher, len(workload.pod_names), t0, args.stall, args.startup_timeout, sched.exited
            )
            cpu_s = sched.cpu_seconds()
            load_after = os.getloadavg()[0]
            metrics_error = ""
            try:
                metrics = sched.metrics_text()
            except Exception as exc:  # report, do not lose the run's other figures
                metrics, metrics_error = "", f"{type(exc).__name__}: {exc}"
        finally:
            watcher.stop()
            sched.stop()
        say(f"[{label}] ended: {progress.ended_by}; {len(progress.bound)} pods bound")
        if progress.ended_by.startswith(label):
            say(f"[{label}] last lines of its log:\n{sched.log_tail()}")
        pods, _ = api.list_all(f"/api/v1/namespaces/{NAMESPACE}/pods")
        quality = placement_quality(workload, pods, use_annotation=isinstance(sched, TessellateScheduler))
        for problem in quality.problems[:10]:
            say(f"[{label}] PLACEMENT PROBLEM: {problem}")
    finally:
        say(f"[{label}] stopping the control plane" + ("" if args.keep_control_plane else " (purge)"))
        control_plane_down(plane, purge=not args.keep_control_plane)

    bound_final = {p["metadata"]["name"] for p in pods if (p.get("spec") or {}).get("nodeName")}
    gpus_by_pod = dict(zip(workload.pod_names, workload.pod_gpus, strict=True))
    pending = [name for name in workload.pod_names if name not in bound_final]
    bound = len(progress.bound)
    e2e = (progress.last - t0) if progress.last is not None else None
    first = (progress.first - t0) if progress.first is not None else None
    after_first = None
    if progress.first is not None and progress.last is not None and progress.last > progress.first:
        after_first = (bound - 1) / (progress.last - progress.first)
    buckets = histogram_buckets(metrics, sched.latency_metric)
    p50, p99 = histogram_quantile(0.50, buckets), histogram_quantile(0.99, buckets)
    own_frag = metric_sum(metrics, sched.fragmentation_metric) if sched.fragmentation_metric else None
    return {
        "scheduler": label,
        "scheduler_name": sched.scheduler_name,
        "ended_by": progress.ended_by,
        "nodes_create_s": node_s,
        "pods_create_s": pod_s,
        "pods_bound": bound,
        "pods_bound_listed_after": len(bound_final),
        "pods_pending": len(pending),
        "pending_gpus": sum(gpus_by_pod[n] for n in pending),
        "pending_by_size": {str(g): sum(1 for n in pending if gpus_by_pod[n] == g) for g in GPU_SIZES},
        "pending_that_fit": quality.pending_that_fit,
        "first_bind_s": first,
        "end_to_end_s": e2e,
        "pods_per_s": bound / e2e if e2e else None,
        "pods_per_s_after_first_bind": after_first,
        "latency_metric": sched.latency_metric,
        "latency_buckets_s": [b for b, _ in buckets if b != float("inf")],
        "decisions": buckets[-1][1] if buckets else 0,
        "decision_p50_ms": p50.seconds * 1000 if p50 else None,
        "decision_p99_ms": p99.seconds * 1000 if p99 else None,
        "decision_p99_above_last_bucket": bool(p99 and p99.above_last_bucket),
        "metrics_error": metrics_error,
        "scheduler_cpu_s": cpu_s,
        "load_avg_1min_at_start": load_before,
        "load_avg_1min_at_end": load_after,
        "gpu_allocation_ratio": quality.allocation_ratio,
        "frag_gpus": quality.frag_gpus,
        "frag_of_capacity": quality.frag_of_capacity,
        "frag_of_idle": quality.frag_of_idle,
        "idle_gpus": quality.idle_gpus,
        "frag_gpus_reported_by_scheduler": own_frag / 1000 if own_frag is not None else None,
        "placement_problems": quality.problems,
        "watch_errors": watcher.errors[:20],
        "log": str(sched.log_path),
    }


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


ROWS: list[tuple[str, str, str]] = [
    # (label, key, format)
    ("pods bound", "pods_bound", ",d"),
    ("pods left Pending", "pods_pending", ",d"),
    ("  GPUs they ask for", "pending_gpus", ",d"),
    ("  Pending although a node fits them", "pending_that_fit", ",d"),
    ("time to first bind (s)", "first_bind_s", ".2f"),
    ("scheduler start to last bind (s)", "end_to_end_s", ".2f"),
    ("pods bound/s, end to end", "pods_per_s", ",.1f"),
    ("pods bound/s after the first bind", "pods_per_s_after_first_bind", ",.1f"),
    ("decision latency p50 (ms)", "decision_p50_ms", ".3f"),
    ("decision latency p99 (ms)", "decision_p99_ms", ".3f"),
    ("decisions in the histogram", "decisions", ",.0f"),
    ("scheduler CPU time (s)", "scheduler_cpu_s", ".1f"),
    ("machine load average at start / end", "load_avg", ""),
    ("GPU allocation ratio (%)", "gpu_allocation_ratio", ".2%"),
    ("FGD fragmented GPUs", "frag_gpus", ",.1f"),
    ("  % of cluster GPUs", "frag_of_capacity", ".2%"),
    ("  % of idle GPUs (fragmentation ratio)", "frag_of_idle", ".2%"),
]
RATIO_KEYS = {
    "pods_per_s",
    "pods_per_s_after_first_bind",
    "first_bind_s",
    "decision_p50_ms",
    "decision_p99_ms",
    "scheduler_cpu_s",
    "gpu_allocation_ratio",
    "frag_gpus",
    "frag_of_idle",
}


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    if x is None or y is None or y == 0:
        return None
    return x / y


def report(
    workload: Workload, results: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    console = Console(width=130)
    shapes = workload.shape_counts()
    names = list(results)
    both = "tessellate" in results and "kube-scheduler" in results
    table = Table(
        title=(
            f"{len(workload.node_names):,} nodes x 8 GPUs, {len(workload.pod_names):,} whole-GPU pods "
            f"(seed {workload.seed}), through a real kube-apiserver"
        )
    )
    table.add_column("figure")
    for name in names:
        table.add_column(name, justify="right")
    if both:
        table.add_column("tessellate / kube-scheduler", justify="right")
    ratios: dict[str, float | None] = {}
    for label, key, fmt in ROWS:
        if key == "load_avg":
            cells = [
                f"{results[n]['load_avg_1min_at_start']:.2f} / {results[n]['load_avg_1min_at_end']:.2f}"
                for n in names
            ]
            table.add_row(label, *cells, *([""] if both else []))
            continue
        cells = [_num(results[n].get(key), fmt) for n in names]
        if both:
            r = ratio(results["tessellate"], results["kube-scheduler"], key) if key in RATIO_KEYS else None
            if key in RATIO_KEYS:
                ratios[key] = r
            cells.append(_num(r, ".2f") if key in RATIO_KEYS else "")
        table.add_row(label, *cells)
    console.print(table)

    mix = ", ".join(f"{g} GPU {w:.1%}" for g, w in zip(GPU_SIZES, workload.mix, strict=True))
    counts = ", ".join(f"{g} GPU x {shapes[g]}" for g in GPU_SIZES)
    notes = [
        f"workload: {counts}; GPU demand {workload.demand_gpus:,} of {workload.capacity_gpus:,} GPUs "
        f"({workload.demand_gpus / workload.capacity_gpus:.1%}); mix {mix} "
        f"(--mix {','.join(f'{w:g}' for w in workload.base_mix)} blended to --demand {args.demand:g}"
        f"{'' if workload.mix_exact else ', NOT reachable with whole-GPU pods of 1-8 GPUs'})",
        "end to end = from starting the scheduler (all pods already Pending) to the last bind seen "
        "by a pod watch; it includes the scheduler's start-up (list of all nodes and pods).",
        f"a run ends when every pod is bound or after {args.stall:g} s without a bind.",
        "decision latency: p50/p99 by linear interpolation inside the bucket of the scheduler's own "
        "histogram; kube-scheduler's buckets are 1, 2, 4, 8 ... ms, so its figures are coarse.",
        "fragmentation: FGD (ATC'23) expected fragment against the pods' own shape distribution; "
        "kube-scheduler pods take the lowest free GPU indices (indices do not change F for whole GPUs).",
        f"kube-scheduler: NodeResourcesFit MostAllocated (nvidia.com/gpu, cpu, memory; weight 1 each), "
        f"client qps {ClientConnection().qps:g} / burst {ClientConnection().burst} like Tessellate's, "
        "percentageOfNodesToScore left at its adaptive default "
        "(max(5, 50 - nodes/125) % of the nodes, at least 100 nodes).",
        f"each scheduler shares this machine ({os.cpu_count()} CPUs) with kube-apiserver, etcd and this "
        "harness; they run one after the other, each on a fresh control plane.",
    ]
    if both:
        notes.append(
            "ratios above 1 mean Tessellate's figure is the larger one: better for pods/s and "
            "allocation, worse for times, latency, CPU and fragmentation."
        )
    for name in names:
        r = results[name]
        own = r.get("frag_gpus_reported_by_scheduler")
        if own is not None:
            notes.append(
                f"{name}'s own fragmentation gauge at the end: {own:.1f} GPUs "
                "(against its own target workload, which may leave out rare shapes)"
            )
        if r.get("metrics_error"):
            notes.append(f"{name}: could not read /metrics: {r['metrics_error']}")
        if r.get("decision_p99_above_last_bucket"):
            notes.append(f"{name}: p99 is above the histogram's last finite bucket (a lower bound)")
        if r.get("placement_problems"):
            problems = r["placement_problems"]
            notes.append(f"{name}: {len(problems)} placement problems, e.g. {problems[0]}")
        if r.get("ended_by") not in ("all pods bound",) and not r["ended_by"].startswith("no bind"):
            notes.append(f"{name}: run ended early: {r['ended_by']}")
    for note in notes:
        console.print(f"[dim]- {note}[/dim]", highlight=False)
    if "tessellate" in results:
        t = results["tessellate"]
        tput, p99 = t.get("pods_per_s"), t.get("decision_p99_ms")
        ok_tput = tput is not None and tput >= TARGET_PODS_PER_S
        ok_p99 = p99 is not None and p99 <= TARGET_P99_MS and not t.get("decision_p99_above_last_bucket")
        console.print(
            f"targets (tessellate): >= {TARGET_PODS_PER_S:g} pods/s end to end: "
            f"{'met' if ok_tput else 'NOT met'} ({_num(tput, '.1f')}); decision p99 <= {TARGET_P99_MS:g} ms: "
            f"{'met' if ok_p99 else 'NOT met'} ({_num(p99, '.3f')})",
            highlight=False,
        )
    return {
        "command": " ".join(sys.argv),
        "config": {
            "nodes": len(workload.node_names),
            "pods": len(workload.pod_names),
            "seed": workload.seed,
            "base_mix": workload.base_mix,
            "demand": args.demand,
            "stall_s": args.stall,
            "client_qps": ClientConnection().qps,
            "client_burst": ClientConnection().burst,
        },
        "workload": {
            "mix": dict(zip([str(g) for g in GPU_SIZES], workload.mix, strict=True)),
            "pods_by_size": {str(g): n for g, n in shapes.items()},
            "demand_gpus": workload.demand_gpus,
            "capacity_gpus": workload.capacity_gpus,
        },
        "results": results,
        "ratios_tessellate_over_kube_scheduler": ratios,
        "targets": {"pods_per_s_min": TARGET_PODS_PER_S, "decision_p99_ms_max": TARGET_P99_MS},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = make_workload(args.nodes, args.pods, args.seed, args.mix, args.demand)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    client = ClientConnection()
    schedulers: list[SchedulerProcess] = []
    if not args.skip_tessellate:
        ok, why = tessellate_scheduler_available()
        if not ok:
            say(f"`tessellate scheduler` is not available ({why}); use --skip-tessellate")
            return 2
        for policy in args.policy or [None]:
            schedulers.append(TessellateScheduler(workdir, client.qps, client.burst, policy))
        if args.queues:
            first = (args.policy or [None])[0]
            with_queues = TessellateScheduler(workdir, client.qps, client.burst, first, queues=args.queues)
            schedulers.append(with_queues)
    if not args.skip_kube_scheduler:
        say("kube-scheduler binary: scripts/control-plane build-scheduler (builds it once)")
        schedulers.append(KubeScheduler(workdir, build_kube_scheduler(), client.qps, client.burst))
    say(
        f"workload: {len(workload.pod_names)} pods, {workload.demand_gpus} GPUs asked of "
        f"{workload.capacity_gpus} ({workload.demand_gpus / workload.capacity_gpus:.1%}); logs in {workdir}"
    )
    results: dict[str, dict[str, Any]] = {}
    for sched in schedulers:  # one after the other, never at the same time
        results[sched.label] = run_one(sched, workload, args)
    figures = report(workload, results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
