#!/usr/bin/env python3
"""MIG requests accepted: MIG-fragmentation-aware placement vs first fit, over 10 seeds.

Each seed generates the synthetic MIG mix (`simulator.traces.migmix`: A100-80GB and
H100-80GB nodes with dynamic MIG, inference pods asking for MIG instances of six
profiles, whole-GPU training pods) and replays it in time with departures and no
waiting (`--max-wait 0`: a pod that does not fit on arrival is refused), once with
each MIG choice. Whole-GPU pods use the same policy in both runs, so the difference
is the MIG placement alone. Prints per-seed counts, their difference, and
mean / min / max.

    python benchmarks/mig_acceptance.py [--seeds 0-9] [--load 1.5] [--static-share 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from tessellate.simulator.timed import PLACED, run_timed
from tessellate.simulator.traces.migmix import MigMixConfig, generate_mig_mix

CHOICES = ("aware", "firstfit")


def one_run(args: tuple[int, str, float, float, str]) -> tuple[int, str, int, int, int, float, float]:
    """(seed, choice, MIG accepted, MIG requested, training accepted, mean MIG fragmentation, seconds)."""
    seed, choice, load, static_share, policy = args
    trace = generate_mig_mix(MigMixConfig(seed=seed, load=load, static_share=static_share))
    start = time.perf_counter()
    result = run_timed(trace, policy, seed, max_wait=0, mig_choice=choice)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    mig = [p.name for p in trace.pods if p.request.is_mig]
    training = [p.name for p in trace.pods if not p.request.is_mig]
    accepted = sum(result.outcome[p] == PLACED for p in mig)
    trained = sum(result.outcome[p] == PLACED for p in training)
    frag = result.summary()["mig_frag_slices_mean"]
    return seed, choice, accepted, len(mig), trained, frag, seconds


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(10)))
    parser.add_argument(
        "--load", type=float, default=1.5, help="offered GPU load (Little's law; default 1.5)"
    )
    parser.add_argument(
        "--static-share", type=float, default=0.0, help="share of statically partitioned nodes"
    )
    parser.add_argument("--policy", default="bestfit", help="policy for whole-GPU pods (default bestfit)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    jobs = [(s, c, args.load, args.static_share, args.policy) for s in args.seeds for c in CHOICES]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one_run, jobs))
    by = {(seed, choice): row for seed, choice, *row in rows}

    print(
        f"synthetic MIG mix: 16 nodes x 8 GPUs (A100-80GB, H100-80GB, dynamic MIG), 3000 pods, "
        f"load {args.load}, static share {args.static_share}, whole GPUs by {args.policy}, max wait 0"
    )
    header = (
        f"{'seed':>4} {'MIG asked':>9} {'aware':>6} {'first-fit':>9} {'diff':>5}"
        f" {'train aware':>11} {'train ff':>8} {'MIG frag aware':>14} {'MIG frag ff':>11}"
    )
    print(header)
    print("-" * len(header))
    diffs, aware, firstfit = [], [], []
    for seed in args.seeds:
        a_acc, asked, a_train, a_frag, _ = by[(seed, "aware")]
        f_acc, _, f_train, f_frag, _ = by[(seed, "firstfit")]
        aware.append(a_acc)
        firstfit.append(f_acc)
        diffs.append(a_acc - f_acc)
        print(
            f"{seed:>4} {asked:>9} {a_acc:>6} {f_acc:>9} {a_acc - f_acc:>+5}"
            f" {a_train:>11} {f_train:>8} {a_frag:>14.2f} {f_frag:>11.2f}"
        )
    print("-" * len(header))
    for label, values in (("aware", aware), ("first-fit", firstfit), ("diff", diffs)):
        print(
            f"{label:>9}: mean {statistics.mean(values):8.1f}   min {min(values):6d}   max {max(values):6d}"
        )
    seconds = {c: sum(by[(s, c)][4] for s in args.seeds) / len(args.seeds) for c in CHOICES}
    print(f"replay seconds per run: aware {seconds['aware']:.2f}, first-fit {seconds['firstfit']:.2f}")


if __name__ == "__main__":
    main()
