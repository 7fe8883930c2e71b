"""One pod as the scheduler reads it: its request, constraints, group, assignment, parsed once.

Everything here is the pod author's words (or, for the assignment, the scheduler's own on
its pods): each part that does not parse becomes a reason on the record, never an
exception, so one malformed pod is refused with what to fix and the rest go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessellate.scheduler.constraints import PodConstraints
from tessellate.scheduler.gang import PodGroup, PodGroupError, pod_group
from tessellate.scheduler.plugins.pod_anti_affinity import (
    AntiAffinityError,
    AntiAffinityTerm,
    anti_affinity_terms,
)

from tessellate.wire.assignment import ASSIGNMENT, AssignmentError, GpuAssignment, decode
from tessellate.wire.podspec import PodRequest, PodRequestError, pod_request

TERMINAL_PHASES = ("Succeeded", "Failed")


def pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def unsupported_constraint(spec: dict[str, Any]) -> str | None:
    """Hard constraints Tessellate cannot honour yet: refused loudly, never ignored.

    Preferred (soft) terms are only scoring hints, so ignoring them changes no guarantee.
    """
    affinity = spec.get("affinity") or {}
    if (affinity.get("podAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution"):
        return "unsupported: required podAffinity is not implemented by tessellate yet; use another scheduler"
    for tsc in spec.get("topologySpreadConstraints") or []:
        if (tsc.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule":
            return "unsupported: topologySpreadConstraints with DoNotSchedule are not implemented yet"
    return None


@dataclass
class PodRecord:
    """One non-terminal pod, parsed once per change."""

    uid: str
    key: str
    scheduler_name: str
    node_name: str
    priority: int
    request: PodRequest | None
    request_error: str | None
    constraints: PodConstraints | None
    constraint_error: str | None
    assignment: GpuAssignment | None
    assignment_error: str | None
    deleting: bool
    gated: bool
    resource_version: str
    group: PodGroup | None = None
    """The pod group it is placed with, all or nothing (`scheduler/gang.py`)."""
    preemption_policy: str = "PreemptLowerPriority"
    group_error: str | None = None
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    anti_affinity: tuple[AntiAffinityTerm, ...] = ()
    """Required podAntiAffinity terms (`scheduler/plugins/pod_anti_affinity.py`)."""
    obj: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def problem(self) -> str | None:
        """Why this pod can never be scheduled as written (None: it can be tried)."""
        return self.request_error or self.constraint_error or self.group_error

    @classmethod
    def parse(cls, pod: dict[str, Any]) -> PodRecord:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        request = request_error = constraints = constraint_error = None
        try:
            request = pod_request(pod)
        except PodRequestError as exc:
            request_error = f"invalid resource request: {exc}"
        try:
            constraints = PodConstraints(spec)
        except (TypeError, AttributeError) as exc:
            constraint_error = f"invalid node affinity or tolerations: {exc}"
        constraint_error = constraint_error or unsupported_constraint(spec)
        namespace = str(meta.get("namespace") or "")
        anti_affinity: tuple[AntiAffinityTerm, ...] = ()
        try:
            anti_affinity = anti_affinity_terms(spec, namespace)
        except (AntiAffinityError, AttributeError, TypeError) as exc:
            constraint_error = constraint_error or f"unsupported or invalid pod anti-affinity: {exc}"
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        group = group_error = None
        try:
            group = pod_group(pod)
        except PodGroupError as exc:
            group_error = f"invalid pod group: {exc}"
        assignment = assignment_error = None
        raw = (meta.get("annotations") or {}).get(ASSIGNMENT)
        if raw is not None:
            try:
                assignment = decode(raw)
            except AssignmentError as exc:
                assignment_error = f"annotation {ASSIGNMENT} does not parse: {exc}"
        return cls(
            uid=meta.get("uid", ""),
            key=pod_key(pod),
            scheduler_name=spec.get("schedulerName") or "default-scheduler",
            node_name=spec.get("nodeName") or "",
            priority=int(spec.get("priority") or 0),
            request=request,
            request_error=request_error,
            constraints=constraints,
            constraint_error=constraint_error,
            assignment=assignment,
            assignment_error=assignment_error,
            deleting=bool(meta.get("deletionTimestamp")),
            gated=bool(spec.get("schedulingGates")),
            resource_version=meta.get("resourceVersion", ""),
            group=group,
            group_error=group_error,
            namespace=namespace,
            labels={str(k): str(v) for k, v in labels.items()},
            anti_affinity=anti_affinity,
            preemption_policy=spec.get("preemptionPolicy") or "PreemptLowerPriority",
            obj=pod,
        )
