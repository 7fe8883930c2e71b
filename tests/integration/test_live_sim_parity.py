"""What you simulate is what you bind: a few hundred openb pods with GPU-model constraints
through the real API server and scheduler binary land exactly where `sim timed` puts them.

A control plane of its own: the live FGD target counts every pod and node in the cluster,
so another test's leftovers would make it expect a different workload than the trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import OPENB
from tessellate.simulator.trace import Trace
from tessellate.simulator.traces.openb import load_trace

from integration import cluster, parity, rbac

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parity_plane(worker_id: str) -> Iterator[cluster.ControlPlane]:
    cp = cluster.start(f"{worker_id}-parity")
    yield cp
    cluster.stop(cp)


def test_live_fgd_places_model_constrained_pods_node_for_node_as_sim_timed(
    parity_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    full = load_trace(OPENB / "openb_node_list_gpu_node.csv", OPENB / "openb_pod_list_gpuspec25.csv")
    # Every 20th node and pod: 61 nodes, 408 pods (91 naming models), about as full as the whole.
    trace = Trace(full.name, full.nodes[::20], full.pods[::20])
    result, sim = parity.simulate(trace)
    assert result.pending_at_end > 0, "the cluster must fill up, or FGD's choices would not matter"
    kubeconfig = rbac.scheduler_kubeconfig(parity_plane, tmp_path)
    live, _, log = parity.run_live(parity_plane, kubeconfig, trace, tmp_path, timeout=300)
    assert "Traceback" not in log, log[-4000:]
    figures = parity.compare(trace, live, sim)
    assert live.keys() == sim.keys(), figures.table()
    assert figures.live_gpu_milli == figures.sim_gpu_milli
    assert figures.live_constrained == figures.sim_constrained > 0
    # FGD breaks ties by the lowest node name on both sides and draws nothing at random.
    assert live == sim, figures.table()
