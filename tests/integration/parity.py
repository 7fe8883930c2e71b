"""The live scheduler against `sim timed` on the same arrivals: feed, wait, compare.

"What you simulate is what you bind": a trace's nodes and pods go through a real API
server (`traceobjects`), the pods all pending before the scheduler starts so that it
takes them in file order (a list is in name order, and openb pods are named in file
order) and sees the whole workload from its first decision, as the simulator does.
Nothing departs; a pod that does not fit stays Pending. `sim timed` replays the same
pods arriving one per second in file order, never departing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessellate.scheduler.config import DEFAULT_POLICY
from tessellate.simulator.timed import TimedResult, run_timed
from tessellate.simulator.trace import PodRecord, Trace

from integration import cluster, traceobjects
from integration.schedproc import SchedulerProcess
from tessellate.kube import KubeClient
from tessellate.wire.assignment import ASSIGNMENT, decode

Placement = dict[str, tuple[str, tuple[int, ...]]]
"""Placed pod -> (node, GPU indices)."""


def in_file_order(trace: Trace) -> Trace:
    """The trace's pods arriving one per second in file order, never departing."""
    names = [p.name for p in trace.pods]
    if names != sorted(names):
        raise ValueError(f"trace {trace.name}: pod names are not in file order, so a list would reorder them")
    pods = tuple(PodRecord(p.name, p.request, float(i), None) for i, p in enumerate(trace.pods))
    return Trace(trace.name, trace.nodes, pods)


def simulate(trace: Trace, policy: str = DEFAULT_POLICY) -> tuple[TimedResult, Placement]:
    result = run_timed(in_file_order(trace), policy)
    names = result.state.names
    placement = {pod: (names[a.node], tuple(a.gpus)) for pod, a in result.state.live.items()}
    return result, placement


def create_all(api: KubeClient, trace: Trace, namespace: str, workers: int = 16) -> None:
    """The trace's nodes, then its pods (pending: no scheduler runs yet)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda n: cluster.create_node(api, *traceobjects.node_objects(n)), trace.nodes))
    cluster.create_pods(api, (traceobjects.pod_object(p, namespace) for p in trace.pods), workers)


def settled(pods: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(bound, told unschedulable) among `pods`."""
    bound = told = 0
    for p in pods:
        if p["spec"].get("nodeName"):
            bound += 1
        elif any(
            c.get("type") == "PodScheduled" and c.get("status") == "False"
            for c in (p.get("status") or {}).get("conditions") or []
        ):
            told += 1
    return bound, told


def wait_settled(api: KubeClient, namespace: str, total: int, timeout: float, quiet: float = 5.0) -> float:
    """Wait until every pod is bound or told it does not fit, and nothing moved for `quiet`
    seconds (pods that do not fit never will: nothing departs); returns the seconds taken."""
    start = time.monotonic()
    last, since = (-1, -1), time.monotonic()
    while time.monotonic() - start < timeout:
        now = settled(cluster.list_pods(api, namespace))
        if now != last:
            last, since = now, time.monotonic()
        elif sum(now) == total and time.monotonic() - since >= quiet:
            return since - start
        time.sleep(1.0)
    raise AssertionError(f"not settled after {timeout:.0f}s: (bound, unschedulable) = {last} of {total} pods")


def live_placement(api: KubeClient, namespace: str) -> Placement:
    out: Placement = {}
    for p in cluster.list_pods(api, namespace):
        node = p["spec"].get("nodeName")
        if not node:
            continue
        raw = (p["metadata"].get("annotations") or {}).get(ASSIGNMENT)
        gpus = tuple(g.index for g in decode(raw).gpus) if raw else ()
        out[p["metadata"]["name"]] = (node, gpus)
    return out


def run_live(
    cp: cluster.ControlPlane,
    kubeconfig: str,
    trace: Trace,
    workdir: Path,
    timeout: float,
    policy: str = DEFAULT_POLICY,
) -> tuple[Placement, float, str]:
    """Feed the trace, run the scheduler binary until the pods settle; (placement, seconds, log)."""
    api = cp.client()
    namespace = cluster.make_namespace(api, "parity")
    create_all(api, trace, namespace)
    settings = {"policy": policy, "leaderElection": {"leaderElect": False}}
    sched = SchedulerProcess(kubeconfig, workdir, **settings).start()
    try:
        seconds = wait_settled(api, namespace, len(trace.pods), timeout)
        return live_placement(api, namespace), seconds, sched.log()
    finally:
        sched.stop()


@dataclass(frozen=True)
class Comparison:
    """The live placement next to the simulated one, in the figures a user would check."""

    pods: int
    total_gpu_milli: int
    live_placed: int
    sim_placed: int
    live_gpu_milli: int
    sim_gpu_milli: int
    same_placed: int
    only_live: int
    only_sim: int
    same_node: int
    same_gpus: int
    live_constrained: int
    sim_constrained: int

    @property
    def live_alloc(self) -> float:
        return self.live_gpu_milli / self.total_gpu_milli

    @property
    def sim_alloc(self) -> float:
        return self.sim_gpu_milli / self.total_gpu_milli

    def table(self) -> str:
        def row(what: str, live: float, sim: float, fmt: str = "{:.0f}") -> str:
            ratio = f"{live / sim:.4f}" if sim else "-"
            return f"{what:34} {fmt.format(live):>12} {fmt.format(sim):>12} {ratio:>10}"

        lines = [
            f"{'':34} {'live':>12} {'sim timed':>12} {'live/sim':>10}",
            row("GPU allocation (%)", 100 * self.live_alloc, 100 * self.sim_alloc, "{:.3f}"),
            row("placed pods", self.live_placed, self.sim_placed),
            row("placed GPU milli", self.live_gpu_milli, self.sim_gpu_milli),
            row("placed model-constrained pods", self.live_constrained, self.sim_constrained),
            f"{'pods in the trace':34} {self.pods:>12}",
            f"{'placed by both':34} {self.same_placed:>12}",
            f"{'placed only live / only sim':34} {self.only_live:>12} {self.only_sim:>12}",
            f"{'same node (of placed by both)':34} {self.same_node:>12} {'':>12} "
            f"{self.same_node / max(1, self.same_placed):>10.4f}",
            f"{'same node and GPUs':34} {self.same_gpus:>12} {'':>12} "
            f"{self.same_gpus / max(1, self.same_placed):>10.4f}",
        ]
        return "\n".join(lines)


def compare(trace: Trace, live: Placement, sim: Placement) -> Comparison:
    requests = {p.name: p.request for p in trace.pods}
    both = live.keys() & sim.keys()

    def milli(placement: Placement) -> int:
        return sum(requests[p].total_gpu_milli for p in placement)

    def constrained(placement: Placement) -> int:
        return sum(1 for p in placement if requests[p].gpu_models)

    return Comparison(
        pods=len(trace.pods),
        total_gpu_milli=1000 * trace.total_gpus,
        live_placed=len(live),
        sim_placed=len(sim),
        live_gpu_milli=milli(live),
        sim_gpu_milli=milli(sim),
        same_placed=len(both),
        only_live=len(live.keys() - sim.keys()),
        only_sim=len(sim.keys() - live.keys()),
        same_node=sum(1 for p in both if live[p][0] == sim[p][0]),
        same_gpus=sum(1 for p in both if live[p] == sim[p]),
        live_constrained=constrained(live),
        sim_constrained=constrained(sim),
    )
