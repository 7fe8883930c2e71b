"""What you simulate is what you bind: the live scheduler against `sim timed`, same arrivals.

A shared openb trace whose pods name their GPU models (default gpuspec25: a quarter of
the GPU pods) goes through a real kube-apiserver as fake Nodes (the trace's model as
`nvidia.com/gpu.product`) and pending Pods (node affinity `In` their models), in file
order, nothing departing; then the real scheduler binary (the default policy, or --policy) runs until every
pod is bound or told it does not fit. `sim timed` replays the same arrivals. Printed:
allocation, placed pods (and the model-constrained ones), and node for node, with
live/sim ratios.

    .venv/bin/python benchmarks/live_sim_parity.py                      # the whole trace
    .venv/bin/python benchmarks/live_sim_parity.py --every-node 20 --every-pod 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPENB = REPO.parent / "shared" / "traces" / "openb-2023"
sys.path.insert(0, str(REPO / "tests"))
from integration import cluster, parity, rbac  # noqa: E402  (the integration tests' helpers)
from tessellate.scheduler.config import DEFAULT_POLICY  # noqa: E402
from tessellate.simulator.trace import Trace  # noqa: E402
from tessellate.simulator.traces.openb import load_trace  # noqa: E402


def subset(trace: Trace, every_node: int, every_pod: int) -> Trace:
    """Every n-th node and pod (in file order), so a smaller cluster is as full as the whole."""
    return Trace(trace.name, trace.nodes[::every_node], trace.pods[::every_pod])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default="gpuspec25", help="openb pod list, after openb_pod_list_")
    parser.add_argument("--every-node", type=int, default=1, help="keep every n-th node (default all)")
    parser.add_argument("--every-pod", type=int, default=1, help="keep every n-th pod (default all)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the pods to settle")
    parser.add_argument(
        "--policy", default=DEFAULT_POLICY, help=f"placement policy of both sides (default {DEFAULT_POLICY})"
    )
    args = parser.parse_args()
    full = load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / f"openb_pod_list_{args.trace}.csv")
    trace = subset(full, args.every_node, args.every_pod)
    constrained = sum(1 for p in trace.pods if p.request.gpu_models)
    gpu_pods = sum(1 for p in trace.pods if p.request.gpu_count)
    print(
        f"{trace.name}: {len(trace.nodes)} nodes ({trace.total_gpus} GPUs), {len(trace.pods)} pods, "
        f"{gpu_pods} with GPUs, {constrained} of them naming their models"
    )

    start = time.perf_counter()
    result, sim = parity.simulate(trace, args.policy)
    print(f"sim timed: {time.perf_counter() - start:.1f}s, {result.pending_at_end} pods left pending")

    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        workdir = Path(tmp)
        cp = cluster.start("live-sim-parity")
        try:
            kubeconfig = rbac.scheduler_kubeconfig(cp, workdir)
            start = time.perf_counter()
            live, seconds, log = parity.run_live(cp, kubeconfig, trace, workdir, args.timeout, args.policy)
            print(f"live: {time.perf_counter() - start:.1f}s in all, settled {seconds:.1f}s after the start")
        finally:
            cluster.stop(cp)
    if "Traceback" in log:
        print(log[-4000:])
    comparison = parity.compare(trace, live, sim)
    print()
    print(comparison.table())
    first = next((p.name for p in trace.pods if (p.name in live) != (p.name in sim)), None)
    differs = next(
        (p.name for p in trace.pods if p.name in live and p.name in sim and live[p.name] != sim[p.name]), None
    )
    print(f"\nfirst pod placed by one side only: {first}; first pod placed differently: {differs}")
    if differs is not None:
        print(f"  {differs}: live {live[differs]}, sim {sim[differs]}")


if __name__ == "__main__":
    main()
