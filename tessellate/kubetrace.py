"""Kubernetes objects as a trace of the generic schema, read exactly as the scheduler reads them.

Nodes go through the scheduler's node parser (`scheduler.nodes.node_info`: the same GPU
product names, time-slicing and bounds), pods through its pod parser (`PodRecord.parse`:
the same requests, allowed GPU models, priority, pod group); the queue is the label
`tessellate.dev/queue`. So a cluster replayed with `sim timed` is the cluster the
scheduler saw. Two sources use this: a `kubectl get nodes,pods -A -o json` snapshot
(`from_objects`) and a recording over time (`tessellate.trace_record`).

What the generic schema cannot carry is counted and reported, never silently dropped:
pods whose requests are invalid, finished pods, pending pods of other schedulers. MIG
layouts, dynamic MIG, GPU memory and topology travel in the schema's device columns
(`simulator/traces/devicecols.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tessellate.kube import timestamp
from tessellate.placement import NodeSpec
from tessellate.placement.quota import QUEUE_LABEL
from tessellate.scheduler.nodes import node_info
from tessellate.scheduler.podrecord import PodRecord as KubePod
from tessellate.simulator.trace import PodRecord, Trace

FINISHED = ("Succeeded", "Failed")


@dataclass
class Conversion:
    """A trace and what could not be carried into it (reason -> pods)."""

    trace: Trace
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def node_spec(obj: dict[str, Any]) -> tuple[NodeSpec, str | None]:
    """The node as the scheduler reads it, and why it is quarantined (None: it is fine)."""
    info = node_info(obj)
    return info.spec, info.quarantine


def trace_pod(obj: dict[str, Any], creation: float, deletion: float | None) -> tuple[PodRecord | None, str]:
    """One pod of the trace (None, reason: it cannot be carried)."""
    pod = KubePod.parse(obj)
    if pod.request_error or pod.request is None:
        return None, "invalid resource request"
    request = pod.request.request
    group = pod.group
    return (
        PodRecord(
            name=pod.key,
            request=request,
            creation_time=creation,
            deletion_time=deletion,
            queue=str(pod.labels.get(QUEUE_LABEL, "")),
            priority=pod.priority,
            pod_group=f"{group.namespace}/{group.name}" if group is not None else "",
            pod_group_min=group.min_available if group is not None else 0,
        ),
        "",
    )


def from_objects(
    items: Iterable[dict[str, Any]], name: str = "snapshot", scheduler_name: str = "tessellate"
) -> Conversion:
    """A snapshot (`kubectl get nodes,pods -A -o json`) as a trace: the pods already bound
    start the replay (time 0, in creation order), the pending ones of `scheduler_name`
    arrive after them (1 s apart, in creation order); nothing departs."""
    nodes: list[NodeSpec] = []
    bound: list[tuple[float, dict[str, Any]]] = []
    pending: list[tuple[float, dict[str, Any]]] = []
    skipped: Counter[str] = Counter()
    notes: list[str] = []
    for obj in items:
        kind = obj.get("kind")
        if kind == "Node":
            spec, quarantine = node_spec(obj)
            nodes.append(spec)
            if quarantine:
                notes.append(
                    f"node {spec.name}: the scheduler quarantines it ({quarantine}); kept in the trace"
                )
        elif kind == "Pod":
            if (obj.get("status") or {}).get("phase") in FINISHED:
                skipped["finished (Succeeded or Failed)"] += 1
                continue
            created = timestamp((obj.get("metadata") or {}).get("creationTimestamp")) or 0.0
            spec = obj.get("spec") or {}
            if spec.get("nodeName"):
                bound.append((created, obj))
            elif (spec.get("schedulerName") or "default-scheduler") == scheduler_name:
                pending.append((created, obj))
            else:
                skipped[
                    f"pending for another scheduler ({spec.get('schedulerName') or 'default-scheduler'})"
                ] += 1
    pods: list[PodRecord] = []
    arrivals = 0
    for waiting, group in ((False, bound), (True, pending)):
        for _, obj in sorted(group, key=lambda x: x[0]):
            record, why = trace_pod(obj, float(arrivals + 1) if waiting else 0.0, None)
            if record is None:
                skipped[why] += 1
                continue
            arrivals += waiting
            pods.append(record)
    if not nodes:
        notes.append("the snapshot has no Node objects: use `kubectl get nodes,pods -A -o json`")
    return Conversion(Trace(name, tuple(sorted(nodes, key=lambda n: n.name)), tuple(pods)), skipped, notes)
