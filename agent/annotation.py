"""The node annotations the agent publishes for the scheduler and for people.

`tessellate.dev/gpu-topology` is placement's topology schema, version 1
(`tessellate.wire.topology.to_inventory`, read back with `from_inventory`), plus each
GPU's `uuid` (the key `scheduler/nodes.py` reads to put UUIDs into
assignments). Nothing else goes in: `from_inventory` rejects unknown keys, and
a node whose topology does not parse must not happen because of us.

`tessellate.dev/gpu-devices` carries what the topology schema has no place
for: per GPU its model, memory, health and MIG mode and instances, and the
driver version. The scheduler reads health and the MIG instances (positions);
`"mig_dynamic": true` at the top says this agent applies MIG plans
(`--mig-dynamic`), and is absent otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tessellate.agent.inventory import Inventory
from tessellate.agent.state import Snapshot
from tessellate.placement.topology import GpuPlace, Link, NodeTopology, TopologyError

from tessellate.wire.devices import DEVICES_VERSION
from tessellate.wire.topology import from_inventory, to_inventory

PCIE_GENERATIONS = (3, 4, 5, 6)
NVLINK_GENERATIONS = (1, 2, 3, 4, 5)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def topology_of(inventory: Inventory) -> NodeTopology:
    """The placement core's view of this node's shape.

    NVSwitch fabric: every pair of GPUs on it gets an `nvswitch` link with the
    smaller of their fabric link counts. Direct NVLinks: one `nvlink` entry per
    linked pair. A GPU without a NUMA node (single-node hosts) sits on node 0.
    """
    gpus = inventory.gpus
    if not gpus:
        raise TopologyError("no GPUs to describe")
    places = tuple(GpuPlace(numa=g.numa or 0, socket=g.numa or 0, pcie_switch=g.pcie_switch) for g in gpus)
    links = []
    fabric = inventory.nvswitch_links or (0,) * len(gpus)
    for i in range(len(gpus)):
        for j in range(i + 1, len(gpus)):
            if fabric[i] and fabric[j]:
                links.append(Link(i, j, "nvswitch", min(fabric[i], fabric[j])))
            elif inventory.links(i, j):
                links.append(Link(i, j, "nvlink", inventory.links(i, j)))
    generation = inventory.nvlink_generation
    if links and generation not in NVLINK_GENERATIONS:
        raise TopologyError(f"the node has NVLinks but their generation is unknown ({generation!r})")
    pcie = inventory.pcie_generation or 4
    pcie = min(max(pcie, PCIE_GENERATIONS[0]), PCIE_GENERATIONS[-1])
    model = gpus[0].model if len({g.model for g in gpus}) == 1 else "mixed"
    return NodeTopology(
        kind=f"{_slug(model)}-x{len(gpus)}",
        gpus=places,
        links=tuple(links),
        nvlink_generation=generation if links else None,
        pcie_generation=pcie,
    )


def topology_annotation(inventory: Inventory) -> dict[str, Any]:
    """The `tessellate.dev/gpu-topology` object: the topology schema plus per-GPU uuid."""
    doc = to_inventory(topology_of(inventory))
    for entry, gpu in zip(doc["gpus"], inventory.gpus, strict=True):
        entry["uuid"] = gpu.uuid
    from_inventory(doc)  # what the scheduler will read must parse; fail here, loudly, if not
    return doc


def devices_annotation(snapshot: Snapshot, mig_dynamic: bool = False) -> dict[str, Any]:
    """The `tessellate.dev/gpu-devices` object: what each GPU is and whether it is healthy."""
    inventory = snapshot.inventory
    gpus = []
    for gpu in inventory.gpus:
        entry = gpu.to_json()
        entry.pop("pci_bus_id", None)
        entry.pop("numa", None)
        entry.pop("pcie_switch", None)
        entry["health"] = "Healthy" if snapshot.healthy(gpu.uuid) else "Unhealthy"
        reason = snapshot.reason(gpu.uuid)
        if reason:
            entry["reason"] = reason
        gpus.append(entry)
    doc: dict[str, Any] = {"version": DEVICES_VERSION, "driver_version": inventory.driver_version}
    if mig_dynamic:
        doc["mig_dynamic"] = True
    doc["gpus"] = gpus
    return doc


def encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False)
