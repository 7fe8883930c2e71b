"""Why pods of a timed replay were never placed, and the per-pod table `sim timed` writes.

"Never placed" mixes problems with different fixes: a pod larger than any node
(even empty) needs a different node shape, not more nodes; one that timed out
or was withdrawn while waiting needs more capacity or a longer --max-wait. The
first is asked of the placement core on an empty copy of the cluster (the same
checks, nothing allocated), once per distinct request.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tessellate.placement import Assignment, ClusterState, NumpyInts, Placer, PolicyContext, create_policy
from tessellate.placement.migplace import MigChooser
from tessellate.simulator.migmetrics import mig_demand
from tessellate.simulator.replay import target_workload
from tessellate.simulator.timed import PENDING, PLACED, TimedResult
from tessellate.simulator.trace import Trace

FITS_NO_NODE = "fits_no_node"
CAUSES = (FITS_NO_NODE, "timed_out", "withdrawn", "pending_at_end")
"""Every cause, in the order tables show them."""


def never_placed_causes(trace: Trace, result: TimedResult) -> dict[str, str]:
    """Each pod never placed: `fits_no_node` if no node could hold it even empty, else how
    its wait ended (`timed_out`, `withdrawn`, `pending_at_end`)."""
    empty = ClusterState(sorted(trace.nodes, key=lambda n: n.name))
    target = target_workload(trace)
    placer = Placer(
        empty,
        create_policy("bestfit", PolicyContext(rng=NumpyInts(0), target=target)),
        MigChooser("aware", mig_demand(trace)),
    )
    requests = {p.name: p.request for p in trace.pods}
    fits: dict[object, bool] = {}
    causes: dict[str, str] = {}
    for pod, outcome in result.outcome.items():
        if outcome == PLACED:
            continue
        request = requests[pod]
        if request not in fits:
            fits[request] = isinstance(placer.place(pod, request), Assignment)
        if not fits[request]:
            causes[pod] = FITS_NO_NODE
        else:
            causes[pod] = "pending_at_end" if outcome == PENDING else outcome
    return causes


def cause_counts(causes: dict[str, str]) -> dict[str, int]:
    """How many never-placed pods per cause (every cause present, zeros included)."""
    values = list(causes.values())
    return {cause: values.count(cause) for cause in CAUSES}


def pods_frame(trace: Trace, result: TimedResult, causes: dict[str, str]) -> pd.DataFrame:
    """One row per replayed pod: outcome and cause, creation, start and queueing delay (s).

    Start and delay are empty for pods never placed; delay is start - creation."""
    by_name = {p.name: p for p in trace.pods}
    pods = list(result.outcome)
    created = np.array(
        [np.nan if by_name[p].creation_time is None else by_name[p].creation_time for p in pods], dtype=float
    )
    start = np.array([result.start_time.get(p, np.nan) for p in pods], dtype=float)
    return pd.DataFrame(
        {
            "pod": pods,
            "outcome": [result.outcome[p] for p in pods],
            "never_placed_cause": [causes.get(p, "") for p in pods],
            "creation_s": created,
            "start_s": start,
            "delay_s": start - np.nan_to_num(created, nan=0.0),
            "gpu_count": [by_name[p].request.gpu_count for p in pods],
            "gpu_milli": [by_name[p].request.gpu_milli for p in pods],
            "reason_on_arrival": [result.reasons.get(p, "") for p in pods],
        }
    )
