"""The `tessellate.dev/gpu-topology` annotation: the node agent writes it, the scheduler
reads it into the placement core's `NodeTopology`.

The node agent publishes one JSON object (`to_inventory` writes it,
`from_inventory` reads it back)::

    {
      "version": 1,
      "kind": "hgx-a100-8",            # optional label, default "custom"
      "nvlink_generation": 3,          # 1..5; required when "links" is not empty
      "pcie_generation": 4,            # 3..6
      "gpus": [                        # one entry per index 0..G-1, 1 <= G <= 16
        {"index": 0, "numa": 3, "socket": 0, "pcie_switch": 0, "uuid": "GPU-..."},
        ...
      ],
      "links": [[0, 1, "nvswitch", 12], ...]   # [i, j, type, count]
    }

* Per GPU: ``index`` and ``numa`` are required; ``socket`` defaults to the NUMA
  id (each NUMA node its own socket, the conservative reading of SYS);
  ``pcie_switch`` is null (the default) when the GPU shares no PCIe switch with
  another GPU or the agent cannot tell; ``uuid`` is accepted and ignored here
  (it identifies a device, not a shape). A PCIe switch lies in one NUMA node
  and a NUMA node in one socket.
* Link types: ``nvlink`` (count = bonded NVLinks between the two GPUs, the ``#``
  of ``NV#``) and ``nvswitch`` (count = NVLinks the GPU has into the switch
  fabric). PCIe paths are never listed; they follow from the per-GPU fields.
  A GPU's direct NVLinks plus its NVSwitch links cannot exceed the links its
  generation has (section 2: 4, 6, 12, 18, 18).
* A pair may be listed once, or in both directions with the same type and
  count (a symmetric matrix dump); anything else is rejected: unknown keys or
  link types, indices out of range or missing, self links, duplicate or
  asymmetric entries, non-integers, counts below 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tessellate.placement.topology import (
    LINK_TYPES,
    MAX_GPUS,
    GpuPlace,
    Link,
    NodeTopology,
    TopologyError,
    intern,
)

TOPOLOGY = "tessellate.dev/gpu-topology"
INVENTORY_VERSION = 1
_GPU_KEYS = frozenset({"index", "numa", "socket", "pcie_switch", "uuid"})
_TOP_KEYS = frozenset({"version", "kind", "nvlink_generation", "pcie_generation", "gpus", "links"})


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise TopologyError(f"{where} must be at least {minimum}, got {value}")
    return value


def _unknown_keys(doc: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in doc if k not in allowed)
    if extra:
        raise TopologyError(
            f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


def from_inventory(doc: Mapping[str, Any]) -> NodeTopology:
    """Read the ``tessellate.dev/gpu-topology`` annotation (parsed JSON); see the module
    docstring for the schema. Raises `TopologyError` with the offending entry named."""
    if not isinstance(doc, Mapping):
        raise TopologyError(f"topology must be a JSON object, got {type(doc).__name__}")
    _unknown_keys(doc, _TOP_KEYS, "topology")
    if doc.get("version") != INVENTORY_VERSION:
        raise TopologyError(
            f"unsupported topology version {doc.get('version')!r} (this scheduler reads {INVENTORY_VERSION})"
        )
    kind = doc.get("kind", "custom")
    if not isinstance(kind, str) or not kind:
        raise TopologyError(f"kind must be a non-empty string, got {kind!r}")
    gpus = _read_gpus(doc.get("gpus"))
    links = _read_links(doc.get("links", []), len(gpus))
    nvlink_generation = doc.get("nvlink_generation")
    if nvlink_generation is not None:
        nvlink_generation = _int(nvlink_generation, "nvlink_generation", 1)
    if "pcie_generation" not in doc:
        raise TopologyError("pcie_generation is required")
    pcie_generation = _int(doc["pcie_generation"], "pcie_generation", 1)
    return intern(NodeTopology(kind, gpus, links, nvlink_generation, pcie_generation))


def _read_gpus(entries: Any) -> tuple[GpuPlace, ...]:
    if not isinstance(entries, list) or not entries:
        raise TopologyError("gpus must be a non-empty list")
    if len(entries) > MAX_GPUS:
        raise TopologyError(f"gpus lists {len(entries)} GPUs, at most {MAX_GPUS} are supported")
    count = len(entries)
    places: dict[int, GpuPlace] = {}
    for pos, entry in enumerate(entries):
        where = f"gpus[{pos}]"
        if not isinstance(entry, Mapping):
            raise TopologyError(f"{where} must be an object, got {entry!r}")
        _unknown_keys(entry, _GPU_KEYS, where)
        for key in ("index", "numa"):
            if key not in entry:
                raise TopologyError(f"{where}: missing {key}")
        index = _int(entry["index"], f"{where}.index")
        if index >= count:
            raise TopologyError(f"{where}: GPU index {index} out of range 0..{count - 1}")
        if index in places:
            raise TopologyError(f"{where}: duplicate GPU index {index}")
        numa = _int(entry["numa"], f"{where}.numa")
        socket = _int(entry.get("socket", numa), f"{where}.socket")
        switch = entry.get("pcie_switch")
        if switch is not None:
            switch = _int(switch, f"{where}.pcie_switch")
        uuid = entry.get("uuid")
        if uuid is not None and not isinstance(uuid, str):
            raise TopologyError(f"{where}.uuid must be a string, got {uuid!r}")
        places[index] = GpuPlace(numa=numa, socket=socket, pcie_switch=switch)
    return tuple(places[i] for i in range(count))  # indices are distinct and < count: all present


def _read_links(entries: Any, count: int) -> tuple[Link, ...]:
    if not isinstance(entries, list):
        raise TopologyError(f"links must be a list, got {type(entries).__name__}")
    seen: dict[tuple[int, int], tuple[str, int]] = {}
    for pos, entry in enumerate(entries):
        where = f"links[{pos}]"
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            raise TopologyError(f"{where}: expected [i, j, type, count], got {entry!r}")
        i = _int(entry[0], f"{where} GPU index")
        j = _int(entry[1], f"{where} GPU index")
        for end in (i, j):
            if end >= count:
                raise TopologyError(f"{where}: GPU index {end} out of range 0..{count - 1}")
        if i == j:
            raise TopologyError(f"{where}: GPU {i} linked to itself")
        kind = entry[2]
        if kind not in LINK_TYPES:
            raise TopologyError(f"{where}: unknown link type {kind!r} (known: {', '.join(LINK_TYPES)})")
        links = _int(entry[3], f"{where} link count", 1)
        if (i, j) in seen:
            raise TopologyError(f"{where}: duplicate entry for GPUs {i}-{j}")
        other = seen.get((j, i))
        if other is not None and other != (kind, links):
            raise TopologyError(
                f"{where}: asymmetric entries: GPUs {i}-{j} listed as {kind} x{links} "
                f"but {j}-{i} as {other[0]} x{other[1]}"
            )
        seen[(i, j)] = (kind, links)
    unique = {(min(i, j), max(i, j)): v for (i, j), v in seen.items()}
    return tuple(Link(a, b, kind, n) for (a, b), (kind, n) in sorted(unique.items()))


def to_inventory(topology: NodeTopology) -> dict[str, Any]:
    """The annotation JSON object for `topology` (`from_inventory` reads it back equal)."""
    doc: dict[str, Any] = {"version": INVENTORY_VERSION, "kind": topology.kind}
    if topology.nvlink_generation is not None:
        doc["nvlink_generation"] = topology.nvlink_generation
    doc["pcie_generation"] = topology.pcie_generation
    doc["gpus"] = [
        {"index": i, "numa": p.numa, "socket": p.socket, "pcie_switch": p.pcie_switch}
        for i, p in enumerate(topology.gpus)
    ]
    doc["links"] = [[link.a, link.b, link.type, link.count] for link in topology.links]
    return doc
