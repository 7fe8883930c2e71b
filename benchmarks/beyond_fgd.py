"""How far FGD is from what any online policy could reach: the proven bracket at x = 130.

Per trace (the 13 of the paper's summary) and seed (default 42-51): the upper bound no policy
can beat and the best offline packing (placement.bound, over the same first n arrivals that
column 130 averages: simulator.bound), then FGD, BestFit and `tessellate` (when that policy
exists) at the same n, and the share of FGD's gap to the upper bound that tessellate closes.
`upper` is the smaller of the aggregate LP's bound (`aggregate`) and the configuration LP's
(`colgen`, the only one before the aggregate LP existed); `capacity` is every GPU.

The bound is computed per (trace, seed): inflation draws different copies for each seed, so
one seed's arrivals say nothing about another's. Runs go to `--workers` processes.

    .venv/bin/python benchmarks/beyond_fgd.py --traces default,multigpu40 --seeds 42-43 --time-limit 60
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tessellate.placement import POLICIES  # noqa: E402
from tessellate.simulator.bound import bound_points, policy_at  # noqa: E402
from tessellate.simulator.traces.openb import load_trace  # noqa: E402

SHARED = ROOT.parent / "shared"
OPENB = SHARED / "traces" / "openb-2023"
SUMMARY = SHARED / "reference" / "fgd-expected" / "summary.csv"


@lru_cache(maxsize=4)
def _trace(workload: str):
    return load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / f"{workload}.csv")


def one(workload: str, seed: int, time_limit: float, policies: tuple[str, ...]) -> dict:
    trace = _trace(workload)
    (point,) = bound_points(trace, seed, 1.3, (130,), time_limit=time_limit)
    r = point.result
    row = {
        "workload": workload.removeprefix("openb_pod_list_"),
        "seed": seed,
        "capacity": r.capacity_milli / 1000,
        "upper": r.upper_milli / 1000,
        "aggregate": r.aggregate_milli / 1000,
        "colgen": r.colgen_milli / 1000,
        "offline": r.feasible_milli / 1000,
        "bound_s": r.seconds,
        "lp_closed": r.lp_optimal,
    }
    for policy in policies:
        (held,) = policy_at(trace, policy, seed, 1.3, [point.arrivals])
        row[policy] = held / 1000
    # Every policy's placement is itself a packing of a subset of these arrivals: OPT >= it.
    row["best_known"] = max(row["offline"], *(row[p] for p in policies))
    return row


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", default="", help="comma-separated short names (default: the 13)")
    parser.add_argument("--seeds", default="42-51")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="solver seconds per bound")
    args = parser.parse_args()
    workloads = sorted(pd.read_csv(SUMMARY)["workload"].unique())
    if args.traces:
        short = [t.strip().removeprefix("openb_pod_list_") for t in args.traces.split(",")]
        wanted = {f"openb_pod_list_{t}" for t in short}
        unknown = wanted - set(workloads)
        if unknown:
            sys.exit(f"unknown trace(s) {', '.join(sorted(unknown))}; choose from {', '.join(workloads)}")
        workloads = [w for w in workloads if w in wanted]
    policies = ["fgd", "bestfit"]
    if "tessellate" in POLICIES:
        policies.append("tessellate")
    else:
        print("note: no `tessellate` policy in placement.POLICIES yet; skipping it")
    seeds = parse_seeds(args.seeds)
    start = time.perf_counter()
    jobs = [(w, s) for w in workloads for s in seeds]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = [pool.submit(one, w, s, args.time_limit, tuple(policies)) for w, s in jobs]
        rows = [f.result() for f in futures]
    frame = pd.DataFrame(rows)
    table = frame.groupby("workload").mean(numeric_only=True).drop(columns="seed")
    table["fgd_gap"] = table["upper"] - table["fgd"]
    table["bracket"] = table["upper"] - table["best_known"]
    if "tessellate" in policies:
        closed = (frame["tessellate"] - frame["fgd"]) / (frame["upper"] - frame["fgd"]).where(
            frame["upper"] > frame["fgd"]
        )
        table["tessellate_closes_pct"] = 100 * closed.groupby(frame["workload"]).mean()
    pd.set_option("display.width", 200)
    print(
        "GPUs at x=130 (mean over seeds); upper: no policy holds more; offline: a real packing; "
        "best_known: the best packing seen (offline or a policy's), so OPT is in [best_known, upper]"
    )
    print(table.round(2).to_string())
    print(f"{len(jobs)} (trace, seed) pairs in {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
