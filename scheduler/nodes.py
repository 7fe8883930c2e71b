"""What the scheduler knows of a Node: capacity for the placement core, plus
labels, taints and extended resources for the Kubernetes-only filters.

Inventory comes from what a cluster already has: allocatable `nvidia.com/gpu`,
gpu-feature-discovery's `nvidia.com/gpu.product` label and, when the node agent
runs, the `tessellate.dev/gpu-topology` annotation (GPU UUIDs). GPU memory, which
bounds memory-bounded fractions, comes from the agent's `tessellate.dev/gpu-devices`
annotation, else gpu-feature-discovery's `nvidia.com/gpu.memory` label, else the
catalogue by model, else it is unknown (0: memory never limits).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tessellate.placement import MAX_GPUS_PER_NODE, MAX_QUANTITY, MILLI_PER_GPU, NodeSpec
from tessellate.placement.catalogue import GPU_MODELS, model_for_product
from tessellate.placement.mig import MigError, geometry
from tessellate.placement.model import MAX_MIG_INSTANCES_PER_NODE, MigSpec
from tessellate.placement.topology import NodeTopology, TopologyError
from tessellate.scheduler.mignodes import GPU_COUNT_LABEL, mig_counts, mig_dynamic, read_mig

from tessellate.wire.devices import DEVICES
from tessellate.wire.podspec import (
    GPU,
    GPU_MILLI,
    GPU_SHARED,
    MIG_PREFIX,
    QuantityError,
    count,
    cpu_milli,
    memory_mib,
    node_extended,
)
from tessellate.wire.topology import TOPOLOGY, from_inventory

PRODUCT_LABEL = "nvidia.com/gpu.product"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
SHARED_SUFFIX = "-SHARED"
"""gpu-feature-discovery's product label suffix on nodes whose replicas are renamed."""
MEMORY_LABEL = "nvidia.com/gpu.memory"
MAX_PODS_PER_NODE = 100_000
MAX_GPU_MEMORY_MIB = 1 << 24
"""16 TiB: GPU memory sizes above it are ignored as nonsense."""
log = logging.getLogger("tessellate.nodes")


def gpu_model_name(product: str) -> str:
    """The catalogue name for a gpu.product label when we know it, else the label itself."""
    product = product.removesuffix(SHARED_SUFFIX)
    model = model_for_product(product)  # the simulator reads traces with the same mapping
    if model in GPU_MODELS:
        return model
    try:
        return geometry(product).model
    except MigError:
        return product


@dataclass(frozen=True)
class NodeInfo:
    """One node, reduced to what scheduling reads; `signature` changes iff that does."""

    spec: NodeSpec
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, Any], ...] = ()
    unschedulable: bool = False
    extended: dict[str, int] = field(default_factory=dict)
    gpu_uuids: tuple[str | None, ...] = ()
    serves_fractions: bool = False
    """Allocatable `tessellate.dev/gpu-milli` (the node agent runs): without it the kubelet
    would refuse a fraction pod, so fractions only go where it is."""
    mig_allocatable: dict[str, int] = field(default_factory=dict)
    """Allocatable `nvidia.com/mig-<profile>` per profile: what the kubelet will admit."""
    replica_resource: str = ""
    """Time-sliced node: the resource its GPU replicas are advertised as (`nvidia.com/gpu` or
    `nvidia.com/gpu.shared`); empty on ordinary nodes."""
    unhealthy_gpus: tuple[int, ...] = ()
    """GPU indices the node agent reports Unhealthy: charged as busy so no pod gets them."""
    mig_empty_gpus: tuple[int, ...] = ()
    """GPUs in MIG mode without instances (the agent's devices annotation): neither a whole GPU
    (the device plugins leave them out of `nvidia.com/gpu`) nor MIG capacity, so blocked too."""
    problem: str | None = None
    """What of the node's inventory was ignored (an odd label or annotation); it still works."""
    quarantine: str | None = None
    """Why the node takes no new pods: something it declares cannot be trusted (what to fix)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def uuid_of(self, index: int) -> str | None:
        return self.gpu_uuids[index] if index < len(self.gpu_uuids) else None


def _uuids(
    annotations: dict[str, str], topology: NodeTopology | None
) -> tuple[tuple[str | None, ...], str | None]:
    """GPU UUIDs by index, read only from a topology annotation that validated (distinct
    indices covering every GPU) and only when no UUID repeats: a UUID is what the node agent
    hands the container, so a wrong one would give a pod somebody else's GPU."""
    if topology is None:
        return (), None
    by_index = {
        int(g["index"]): g["uuid"]
        for g in json.loads(annotations[TOPOLOGY])["gpus"]
        if isinstance(g.get("uuid"), str) and g["uuid"]
    }
    listed = list(by_index.values())
    if len(set(listed)) != len(listed):
        repeated = sorted({u for u in listed if listed.count(u) > 1})
        return (), f"annotation {TOPOLOGY} gives several GPUs the UUID {repeated[0]}; GPU UUIDs ignored"
    return tuple(by_index.get(i) for i in range(topology.gpu_count)), None


def _topology(annotations: dict[str, str], gpu_count: int) -> tuple[NodeTopology | None, str | None]:
    raw = annotations.get(TOPOLOGY)
    if not raw or not gpu_count:
        return None, None
    try:
        topology = from_inventory(json.loads(raw))
    except (ValueError, TopologyError) as exc:
        return None, f"annotation {TOPOLOGY} is not a valid topology ({exc}); placing without it"
    if topology.gpu_count != gpu_count:
        return None, (
            f"annotation {TOPOLOGY} describes {topology.gpu_count} GPUs but {gpu_count} are allocatable; "
            "placing without it"
        )
    return topology, None


def _physical_gpus(
    annotations: dict[str, str], allocatable: int, unhealthy: tuple[int, ...]
) -> tuple[int, tuple[int, ...]]:
    """(GPU count, unhealthy indices). The kubelet drops unhealthy GPUs from allocatable but
    indices keep their place, so when the agent's topology (all GPUs) and health report
    explain allocatable, the node keeps every index and the unhealthy ones are blocked;
    otherwise allocatable is all we trust."""
    declared = _declared_gpus(annotations)
    if not unhealthy or not declared or any(i >= declared for i in unhealthy):
        return allocatable, ()
    if not declared - len(unhealthy) <= allocatable <= declared:
        return allocatable, ()
    return declared, unhealthy


def _mig_empty(annotations: dict[str, str], gpu_count: int) -> tuple[int, ...]:
    """Indices of GPUs the agent lists in MIG mode with no instance."""
    try:
        gpus = json.loads(annotations.get(DEVICES) or "{}").get("gpus") or []
        empty = [
            int(g["index"])
            for g in gpus
            if (g.get("mig") or {}).get("enabled") and not (g.get("mig") or {}).get("instances")
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()
    return tuple(sorted(i for i in empty if 0 <= i < gpu_count))


def _declared_gpus(annotations: dict[str, str]) -> int:
    """How many GPUs the agent's topology annotation lists (0: none, or not a list)."""
    try:
        gpus = json.loads(annotations[TOPOLOGY])["gpus"]
    except (KeyError, ValueError, TypeError):
        return 0
    return len(gpus) if isinstance(gpus, list) and len(gpus) <= MAX_GPUS_PER_NODE else 0


class InventoryError(ValueError):
    """Something a node declares that the scheduler cannot trust: the node is quarantined."""


def _unhealthy(annotations: dict[str, str]) -> tuple[int, ...]:
    """Indices the agent's device annotation marks Unhealthy. An annotation that is there but
    cannot be read leaves every GPU's health unknown: InventoryError (quarantine), never a guess."""
    raw = annotations.get(DEVICES)
    if not raw:
        return ()
    where = f"annotation {DEVICES}"
    try:
        gpus = json.loads(raw)["gpus"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InventoryError(f"{where} does not parse ({exc}); GPU health unknown") from None
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS_PER_NODE:
        raise InventoryError(f"{where}: 'gpus' must be a list of at most {MAX_GPUS_PER_NODE} GPUs")
    seen: set[int] = set()
    unhealthy = []
    for pos, gpu in enumerate(gpus):
        index = gpu.get("index") if isinstance(gpu, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_GPUS_PER_NODE:
            raise InventoryError(f"{where}: gpus[{pos}] has no GPU index 0..{MAX_GPUS_PER_NODE - 1}")
        if index in seen:
            raise InventoryError(f"{where} lists GPU {index} twice; GPU health unknown")
        seen.add(index)
        if gpu.get("health") == "Unhealthy":
            unhealthy.append(index)
    return tuple(sorted(unhealthy))


def gpu_memory(annotations: dict[str, str], labels: dict[str, str], model: str) -> int:
    """Memory (MiB) of each of the node's GPUs, 0 when unknown; GPUs that differ count the
    smallest, so a fraction is never promised memory its GPU lacks."""
    raw = annotations.get(DEVICES)
    if raw:
        try:
            sizes = [
                int(g["memory_mib"])
                for g in json.loads(raw)["gpus"]
                if g.get("memory_mib") and not (g.get("mig") or {}).get("enabled")
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            sizes = []
        if sizes and min(sizes) > 0 and max(sizes) <= MAX_GPU_MEMORY_MIB:
            return min(sizes)
    label = labels.get(MEMORY_LABEL, "")
    if label.isdigit() and 0 < int(label) <= MAX_GPU_MEMORY_MIB:
        return int(label)
    known = GPU_MODELS.get(model)
    return (known.memory_mib or 0) if known is not None else 0


def _time_slicing(
    labels: dict[str, str], allocatable: dict[str, Any], gpus: int
) -> tuple[int, int, str, str | None]:
    """(physical GPUs, replicas per GPU, replica resource, problem) from gpu-feature-discovery's
    `nvidia.com/gpu.replicas` label; ordinary nodes give (gpus, 1, "", None)."""
    raw = labels.get(REPLICAS_LABEL)
    if raw is None or raw.strip() in ("", "1", "0"):
        return gpus, 1, "", None
    if not raw.strip().isdigit() or not 1 < int(raw) <= MILLI_PER_GPU:
        problem = f"label {REPLICAS_LABEL}={raw!r} is not a replica count 2..{MILLI_PER_GPU}; ignored"
        return gpus, 1, "", problem
    replicas = int(raw)
    try:
        shared = count(allocatable.get(GPU_SHARED, 0))
    except QuantityError:
        shared = 0
    resource, advertised = (GPU_SHARED, shared) if shared else (GPU, gpus)
    problem = None
    if advertised % replicas:
        problem = (
            f"{advertised} {resource} replicas are not a multiple of {REPLICAS_LABEL}={replicas}; "
            f"counting {advertised // replicas} whole GPUs"
        )
    return advertised // replicas, replicas, resource, problem


def _positive(quantity: Any) -> bool:
    try:
        return quantity is not None and count(quantity) > 0
    except QuantityError:
        return False


def node_info(node: dict[str, Any]) -> NodeInfo:
    """Read a Node object. Never raises: what cannot be trusted quarantines the node (it takes
    no new pods, with `quarantine` saying why and what to fix), never the whole cluster view."""
    name = str((node.get("metadata") or {}).get("name") or "")
    try:
        return _read_node(node, name)
    except InventoryError as exc:
        return _quarantined(node, name, str(exc))
    except Exception as exc:  # anything a node can write must not stop scheduling elsewhere
        log.exception("node %s: unexpected error reading its inventory", name)
        return _quarantined(node, name, f"its inventory could not be read ({type(exc).__name__}: {exc})")


def _quarantined(node: dict[str, Any], name: str, why: str) -> NodeInfo:
    """A node that takes no pods: no capacity at all, so nothing is ever placed on it."""
    labels = (node.get("metadata") or {}).get("labels")
    return NodeInfo(
        spec=NodeSpec(name=name, cpu_milli=0, memory_mib=0, max_pods=0),
        labels=dict(labels) if isinstance(labels, dict) else {},
        quarantine=f"{why}; the node takes no new pods until this is fixed",
    )


def _bounded(what: str, value: int, limit: int) -> int:
    if not 0 <= value <= limit:
        raise InventoryError(f"allocatable {what} is {value}, outside 0..{limit}")
    return value


def _read_node(node: dict[str, Any], name: str) -> NodeInfo:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    allocatable = status.get("allocatable") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    try:
        cpu = _bounded("cpu (milli)", cpu_milli(allocatable.get("cpu", 0)), MAX_QUANTITY)
        mem = _bounded("memory (MiB)", memory_mib(allocatable.get("memory", 0)), MAX_QUANTITY)
        pods = _bounded("pods", count(allocatable.get("pods", 110)), MAX_PODS_PER_NODE)
        gpus = _bounded(
            f"{GPU} (at most {MAX_GPUS_PER_NODE} GPUs, each at most {MILLI_PER_GPU} time-sliced replicas)",
            count(allocatable.get(GPU, 0)),
            MAX_GPUS_PER_NODE * MILLI_PER_GPU,
        )
        migs = mig_counts(allocatable, count)
    except QuantityError as exc:
        raise InventoryError(f"allocatable does not parse ({exc})") from None
    for profile, n in migs.items():
        _bounded(f"{MIG_PREFIX}{profile}", n, MAX_MIG_INSTANCES_PER_NODE)
    listed = labels.get(GPU_COUNT_LABEL, "")
    if listed.strip().isdigit() and int(listed) > MAX_GPUS_PER_NODE:
        raise InventoryError(f"label {GPU_COUNT_LABEL}={listed} is more than {MAX_GPUS_PER_NODE} GPUs")
    gpus, replicas, replica_resource, slicing_problem = _time_slicing(labels, allocatable, gpus)
    if gpus > MAX_GPUS_PER_NODE:
        raise InventoryError(
            f"{gpus} physical GPUs declared ({GPU}); Tessellate handles at most {MAX_GPUS_PER_NODE} per node"
        )
    if replicas > 1 and migs:
        slicing_problem = "time-sliced GPUs next to MIG instances are not modelled; MIG resources ignored"
        migs = {}
    model = gpu_model_name(labels.get(PRODUCT_LABEL, "")) if gpus or migs else ""
    if gpus and not model:
        model = "unknown"  # GPUs without gpu-feature-discovery labels: any-model pods may use them
    unhealthy = _unhealthy(annotations)
    dynamic = mig_dynamic(annotations) and replicas == 1
    if dynamic and not model and _declared_gpus(annotations):
        model = gpu_model_name(labels.get(PRODUCT_LABEL, ""))  # every GPU may be in MIG mode, none whole
    mig = read_mig(migs, gpus, model, labels, annotations, dynamic=dynamic)
    mig_problem = mig.problem if mig is not None else None
    if mig is not None and mig.layouts:
        gpus = mig.gpu_count  # MIG GPUs are not in allocatable nvidia.com/gpu ("mixed" strategy)
    if gpus > MAX_GPUS_PER_NODE:
        raise InventoryError(f"{gpus} GPUs with MIG; Tessellate handles at most {MAX_GPUS_PER_NODE} per node")
    physical, unhealthy = _physical_gpus(annotations, gpus, unhealthy)
    topology, topology_problem = _topology(annotations, physical)
    uuids, uuid_problem = _uuids(annotations, topology)
    gpus = physical
    extended = node_extended(allocatable)
    absurd = sorted(r for r, v in extended.items() if not 0 <= v <= MAX_QUANTITY)
    extended = {r: v for r, v in extended.items() if r not in absurd}
    ext_problem = f"allocatable {', '.join(absurd)} out of range; ignored" if absurd else None
    notes = (slicing_problem, uuid_problem, topology_problem, mig_problem, ext_problem)
    return NodeInfo(
        spec=NodeSpec(
            name=name,
            cpu_milli=cpu,
            memory_mib=mem,
            gpu_count=gpus,
            gpu_model=model,
            max_pods=pods,
            topology=topology,
            mig=MigSpec(layouts=mig.layouts, dynamic=dynamic)
            if mig is not None and 0 < len(mig.layouts) <= gpus
            else None,
            gpu_memory_mib=gpu_memory(annotations, labels, model) if gpus else 0,
            gpu_replicas=replicas if gpus else 1,
        ),
        labels=labels,
        taints=tuple(t for t in spec.get("taints") or () if isinstance(t, dict)),
        unschedulable=bool(spec.get("unschedulable")),
        extended=extended,
        serves_fractions=_positive(allocatable.get(GPU_MILLI)),
        gpu_uuids=uuids,
        replica_resource=replica_resource if gpus else "",
        mig_allocatable=migs,
        unhealthy_gpus=unhealthy,
        mig_empty_gpus=_mig_empty(annotations, gpus),
        problem="; ".join(p for p in notes if p) or None,
    )
