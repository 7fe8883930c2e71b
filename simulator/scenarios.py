"""Clusters beyond the FGD paper's: nodes whose GPU wiring is known.

The openb trace says nothing about NVLink or NUMA, so topology-aware placement
is evaluated on two built-in clusters, each with the synthetic openb-like pod
mix (GPU-model constraints dropped, since these clusters have other models):

- `nvswitch-spot`: the 8-GPU A100/A800/H800 nodes of the spot-gpu-2026 node list
  (../shared/traces/spot-gpu-2026/node_info_df.csv), all NVSwitch baseboards,
  where every GPU set is equally connected and topology decides only NUMA
  locality: the control case, in which topology awareness should cost nothing.
- `mixed-topology`: a seeded mix of DGX-1 V100 (hybrid cube-mesh), PCIe servers
  with NVLink-bridged pairs, PCIe-only servers and HGX A100 (NVSwitch), where
  the choice of node and GPUs changes a multi-GPU pod's bandwidth by up to 38x.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tessellate.placement import MILLI_PER_GPU, NodeSpec, Request
from tessellate.placement.topology import NodeTopology, dgx1_v100, nvswitch, pcie
from tessellate.simulator.trace import PodRecord, Trace, TraceError

SPOT_NODES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "spot-gpu-2026" / "node_info_df.csv"
)
MIB_PER_CPU = 8 * 1024
"""The spot node list has no memory column; 8 GiB per core is a common GPU-server ratio."""

# spot-gpu-2026 model -> (catalogue name, NVLink generation of its NVSwitch board, NVLinks per
# GPU). A800 and H800 are export variants whose NVLink is capped at 400 GB/s (8 x 50 GB/s)
# against 600 GB/s for the A100 and 900 GB/s for the H100 (vendor statements, not in
# ../shared/reference).
_SPOT_MODELS = {
    "A100-SXM4-80GB": ("A100-80GB", 3, 12),
    "A800-SXM4-80GB": ("A800-80GB", 3, 8),
    "H800": ("H800-80GB", 4, 8),
}

# mixed-topology: (share, GPU model, topology factory)
_MIXED: tuple[tuple[float, str, Callable[[], NodeTopology]], ...] = (
    (0.25, "V100M32", dgx1_v100),
    (0.25, "A100-40GB", lambda: pcie(8, 2, 2, nvlink_pairs=True, kind="pcie-nvlink-bridged-8")),
    (0.25, "T4", lambda: pcie(8, 2, 2, nvlink_pairs=False, pcie_generation=3, kind="pcie-only-8")),
    (0.25, "A100-80GB", lambda: nvswitch(8, nvlink_generation=3, kind="hgx-a100-8")),
)

SCENARIOS = ("mixed-topology", "nvswitch-spot")


def spot_nvswitch_nodes(path: Path = SPOT_NODES) -> tuple[NodeSpec, ...]:
    """The spot list's 8-GPU NVSwitch nodes (other rows are 1- and 4-GPU or undisclosed models)."""
    if not path.exists():
        raise TraceError(path, "no such file (the spot-gpu-2026 node list lives in ../shared/traces)")
    nodes = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            known = _SPOT_MODELS.get(row.get("gpu_model", ""))
            if known is None or row.get("gpu_capacity_num") != "8":
                continue
            try:
                cpus = int(row["cpu_num"])
            except (KeyError, ValueError):
                raise TraceError(
                    path, f"cpu_num must be an integer, got {row.get('cpu_num')!r}", line
                ) from None
            model, generation, links = known
            nodes.append(
                NodeSpec(
                    name=f"spot-{row['node_name']}",
                    cpu_milli=cpus * 1000,
                    memory_mib=cpus * MIB_PER_CPU,
                    gpu_count=8,
                    gpu_model=model,
                    topology=nvswitch(8, nvlink_generation=generation, links_per_gpu=links),
                )
            )
    if not nodes:
        raise TraceError(path, "no 8-GPU A100/A800/H800 rows found")
    return tuple(nodes)


def mixed_topology_nodes(count: int = 400, seed: int = 0) -> tuple[NodeSpec, ...]:
    """`count` 8-GPU nodes, a quarter of each wiring, in a seeded order."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(_MIXED), size=count, p=[share for share, _, _ in _MIXED])
    nodes = []
    for i, kind in enumerate(kinds):
        _, model, topology = _MIXED[kind]
        nodes.append(
            NodeSpec(
                name=f"mixed-{i:04d}",
                cpu_milli=96_000,
                memory_mib=768 * 1024,
                gpu_count=8,
                gpu_model=model,
                topology=topology(),
            )
        )
    return tuple(nodes)


TRAINING_SIZES = {2: 0.5, 4: 0.3, 8: 0.2}
"""GPUs per training job and their shares (jobs use 8 cores and 64 GiB per GPU)."""


def scenario_trace(name: str, seed: int = 0, training_share: float = 0.3) -> Trace:
    """A built-in scenario: its nodes, the synthetic openb-like pods (model constraints
    dropped) with `training_share` of them replaced by multi-GPU training jobs, like the
    paper's multigpu traces."""
    from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

    if name == "nvswitch-spot":
        nodes = spot_nvswitch_nodes()
    elif name == "mixed-topology":
        nodes = mixed_topology_nodes(seed=seed)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if not 0.0 <= training_share <= 1.0:
        raise ValueError(f"training_share must be in 0..1, got {training_share}")
    gpus = sum(n.gpu_count for n in nodes)
    pods = list(generate(SyntheticConfig(seed=seed, nodes=max(1, gpus // 4), gpu_spec_share=0.0)).pods)
    rng = np.random.default_rng(seed + 1)
    sizes, shares = zip(*TRAINING_SIZES.items(), strict=True)
    for i in np.flatnonzero(rng.random(len(pods)) < training_share):
        k = int(rng.choice(sizes, p=shares))
        request = Request(cpu_milli=8000 * k, memory_mib=65536 * k, gpu_count=k, gpu_milli=MILLI_PER_GPU)
        pods[i] = PodRecord(f"train-{i}", request, pods[i].creation_time, pods[i].deletion_time)
    return Trace(name=name, nodes=nodes, pods=tuple(p for p in pods if not p.request.gpu_models))
