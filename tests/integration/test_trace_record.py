"""Record a cluster while the live scheduler runs a workload, replay the recording with
`sim timed`, and get the allocation over time the live run had."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tessellate.simulator.timed import run_timed
from tessellate.simulator.traces.generic import load_trace

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, bound_count, wait_for
from tessellate.kube import KubeClient
from tessellate.trace_record import record

pytestmark = pytest.mark.integration

TOLERANCE_GPUS = 2
"""One pod: live binds land a few hundred ms after creation, the replay places at once."""
SETTLE_S = 1.5
"""Samples this close after an arrival or departure are not compared (the live bind lag)."""


class Recorder:
    """`tessellate trace record` in a thread, stopped on exit."""

    def __init__(self, api: KubeClient, out: Path, namespace: str, selector: str) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=record, args=(api, out, None, self.stop, namespace, selector))

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _metrics(sched: SchedulerProcess) -> str:
    try:
        return sched.metrics()
    except OSError:
        return ""


def allocation(times: np.ndarray, pods: list[tuple[float, float | None, int]]) -> np.ndarray:
    """GPUs held at each time by pods (start, end, gpus)."""
    out = np.zeros(len(times))
    for start, end, gpus in pods:
        out += gpus * ((times >= start) & (times < (np.inf if end is None else end)))
    return out


def test_a_recorded_cluster_replays_with_the_allocation_the_live_run_had(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    group = cluster.unique("rec")
    for i in range(2):
        node, status = cluster.gpu_node(f"{group}-{i}", gpus=8, labels={"group": group})
        cluster.create_node(admin, node, status)
    out = tmp_path / "recording"
    sched = SchedulerProcess(
        rbac.scheduler_kubeconfig(control_plane, tmp_path),
        tmp_path,
        leaderElection={"leaderElect": False},
        # The replay has no retry backoff: keep the live one short so that the comparison
        # measures placement, not the 1-10 s wait of an unschedulable pod's backoff.
        podInitialBackoffSeconds=0.1,
        podMaxBackoffSeconds=0.2,
    ).start()
    wait_for(lambda: "tessellate_leader 1.0" in _metrics(sched), 60, "the scheduler to lead")
    pods = [
        cluster.pod(
            f"job-{i:02d}",
            namespace,
            limits={"nvidia.com/gpu": "2", "cpu": "1"},
            nodeSelector={"group": group},
        )
        for i in range(12)
    ]
    try:
        with Recorder(admin, out, namespace, f"group={group}"):
            cluster.create_pods(admin, pods)
            wait_for(lambda: bound_count(admin, namespace) == 8, 60, "8 of the 12 pods to fill 16 GPUs")
            time.sleep(2)
        # The recorder stops and starts again (a restart): nothing is lost or doubled.
        with Recorder(admin, out, namespace, f"group={group}"):
            time.sleep(1)
            bound = sorted(
                p["metadata"]["name"]
                for p in cluster.list_pods(admin, namespace)
                if p["spec"].get("nodeName")
            )
            for name in bound[:4]:
                admin.delete(
                    f"/api/v1/namespaces/{namespace}/pods/{name}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                )
            wait_for(
                lambda: bound_count(admin, namespace) == 8, 60, "the 4 waiting pods to take the freed GPUs"
            )
            time.sleep(2)
    finally:
        sched.stop()

    trace = load_trace(out / "nodes.csv", out / "pods.csv")
    assert sorted(n.name for n in trace.nodes) == [f"{group}-0", f"{group}-1"]
    assert sorted(p.name for p in trace.pods) == sorted(f"{namespace}/job-{i:02d}" for i in range(12))
    assert sum(p.deletion_time is not None for p in trace.pods) == 4
    import pandas as pd

    started = pd.read_csv(out / "pods.csv").set_index("name")["start_time"]
    assert started.notna().sum() == 12  # every pod was seen bound, some after a wait

    result = run_timed(trace, "fgd")
    live = [(float(started[p.name]), p.deletion_time, p.request.gpu_count) for p in trace.pods]
    sim = [
        (result.start_time[p.name], p.deletion_time, p.request.gpu_count)
        for p in trace.pods
        if p.name in result.start_time
    ]
    end = max(t for p in trace.pods for t in (p.creation_time, p.deletion_time) if t is not None) + 2
    times = np.arange(0, end, 0.1)
    events = np.array([t for p in trace.pods for t in (p.creation_time, p.deletion_time) if t is not None])
    settled = ~((times[:, None] >= events[None, :]) & (times[:, None] < events[None, :] + SETTLE_S)).any(
        axis=1
    )
    gap = np.abs(allocation(times, live) - allocation(times, sim))[settled]
    timeline = [(p.name, p.creation_time, started[p.name], result.start_time.get(p.name)) for p in trace.pods]
    assert settled.sum() > 10 and gap.max() <= TOLERANCE_GPUS, (gap.max(), timeline)
    assert allocation(np.array([end - 1]), sim)[0] == allocation(np.array([end - 1]), live)[0] == 16
