"""The generic schema's device columns: MIG layouts, dynamic MIG, GPU memory and topology.

So that a recorded MIG (or NVLink) cluster replays as one. Node columns, all optional
and written only when some node uses them:

    mig_layout      per GPU, `;`-separated: empty = not in MIG mode, `-` = MIG mode without
                    instances, else its instances as `profile@start` joined by `+`
                    (`3g.40gb@0+2g.20gb@4+1g.10gb@6`); as many entries as GPUs
    mig_dynamic     1: new instances may be created in free slots (the agent's --mig-dynamic)
    gpu_memory_mib  memory of each GPU (bounds fractions that ask for GPU memory)
    topology        the `tessellate.dev/gpu-topology` JSON the node agent writes

Pod columns `mig_profile` (e.g. `1g.10gb`) and `mig_count` ask for MIG instances.
The MIG rules (positions, counts, profiles of the node's model) are the core's
(`placement.mig`): a layout that breaks one is an error naming the cell.
"""

from __future__ import annotations

import json

from tessellate.placement import NodeSpec
from tessellate.placement.mig import MigError, MigInstance, MigLayout, geometry
from tessellate.placement.model import MigSpec
from tessellate.placement.topology import TopologyError
from tessellate.simulator.trace import Trace
from tessellate.simulator.traces.csvrows import Row

from tessellate.wire.topology import from_inventory, to_inventory

NODE_DEVICE_COLUMNS = ("mig_layout", "mig_dynamic", "gpu_memory_mib", "topology")
NOT_IN_MIG_MODE = ""
NO_INSTANCES = "-"


def read_node_devices(row: Row, gpus: int, model: str) -> dict[str, object]:
    """The NodeSpec fields of a node row's device columns (empty dict: none given)."""
    out: dict[str, object] = {}
    raw = row.text("mig_layout", default="")
    dynamic = row.integer("mig_dynamic", minimum=0, default=0)
    if dynamic > 1:
        raise row.error("mig_dynamic", f"must be 0 or 1, got {dynamic}")
    if raw or dynamic:
        out["mig"] = _mig(row, raw, gpus, model, bool(dynamic))
    memory = row.integer("gpu_memory_mib", minimum=0, default=0)
    if memory:
        out["gpu_memory_mib"] = memory
    text = row.text("topology", default="")
    if text:
        try:
            topology = from_inventory(json.loads(text))
        except (ValueError, TopologyError) as exc:
            raise row.error("topology", f"not a tessellate.dev/gpu-topology document: {exc}") from None
        if len(topology.gpus) != gpus:
            raise row.error("topology", f"describes {len(topology.gpus)} GPUs but the node has {gpus}")
        out["topology"] = topology
    return out


def _mig(row: Row, raw: str, gpus: int, model: str, dynamic: bool) -> MigSpec:
    try:
        shape = geometry(model)
    except MigError:
        raise row.error(
            "mig_layout", f"GPU model {model!r} has no MIG (known MIG models: A30, A100, H100, ...)"
        ) from None
    cells = raw.split(";") if raw else [NO_INSTANCES] * gpus
    if len(cells) != gpus:
        raise row.error(
            "mig_layout", f"{len(cells)} GPU entries for a node with {gpus} GPUs; one per GPU, ';'-separated"
        )
    layouts: list[MigLayout | None] = []
    for g, cell in enumerate(cells):
        cell = cell.strip()
        if cell == NOT_IN_MIG_MODE:
            layouts.append(None)
            continue
        try:
            instances = () if cell == NO_INSTANCES else tuple(_instance(x) for x in cell.split("+"))
            layouts.append(MigLayout(shape, instances))
        except (ValueError, MigError) as exc:
            raise row.error("mig_layout", f"GPU {g}: {exc}") from None
    return MigSpec(layouts=tuple(layouts), dynamic=dynamic)


def _instance(text: str) -> MigInstance:
    profile, sep, start = text.strip().partition("@")
    if not sep or not start.strip().isdigit():
        raise ValueError(f"{text!r} is not profile@start (e.g. 1g.10gb@3)")
    return MigInstance(profile.strip(), int(start))


def node_device_columns(trace: Trace) -> dict[str, list[object]]:
    """The device columns of `trace`'s nodes, only those some node uses."""
    nodes = trace.nodes
    columns: dict[str, list[object]] = {}
    if any(n.mig is not None for n in nodes):
        columns["mig_layout"] = [_layout_text(n) for n in nodes]
        columns["mig_dynamic"] = [int(bool(n.mig and n.mig.dynamic)) for n in nodes]
    if any(n.gpu_memory_mib for n in nodes):
        columns["gpu_memory_mib"] = [n.gpu_memory_mib for n in nodes]
    if any(n.topology is not None for n in nodes):
        columns["topology"] = [
            json.dumps(to_inventory(n.topology), separators=(",", ":")) if n.topology is not None else ""
            for n in nodes
        ]
    return columns


def _layout_text(node: NodeSpec) -> str:
    if node.mig is None:
        return ""
    cells = []
    for g in range(node.gpu_count):
        layout = node.mig.layout(g)
        if layout is None:
            cells.append(NOT_IN_MIG_MODE)
        else:
            cells.append("+".join(str(i) for i in layout.instances) or NO_INSTANCES)
    return ";".join(cells)
