"""Dynamic MIG in the live scheduler: publish the core's plans, hold their slots, wait.

When the core places a MIG pod on instances that do not exist yet (a node whose
agent runs `--mig-dynamic`), the pod cannot be bound at once: the kubelet would
refuse it until the agent has created the instances and advertised them. So the
scheduler

1. keeps the decision *assumed* (its new instances are reserved in the cache, so no
   other pod is offered those slots, and a rebuild re-applies it);
2. publishes the node's wanted layouts as `tessellate.dev/mig-plan`
   (`tessellate/wire/migplan.py`), a new generation each time;
3. parks the pod until the agent's `tessellate.dev/mig-plan-status` reaches that
   generation and the kubelet admits the new instances (allocatable
   `nvidia.com/mig-<profile>` covers every instance of the profile), then decides
   again (the instance now exists, so the core takes it) and binds;
4. gives up on `Failed` or after `migPlanTimeoutSeconds`, with a Warning event that
   says why, and retries later like any unschedulable pod.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tessellate.placement.model import MigPlan, MigSpec
from tessellate.placement.state import ClusterState

from tessellate.wire.migplan import (
    PLAN,
    PLAN_STATUS,
    GpuPlan,
    NodePlan,
    PlanFormatError,
    PlanStatus,
    decode_status,
    plan_generation,
)


@dataclass(frozen=True)
class PlanRecord:
    """What a node's annotations say about plans: the last generation asked and answered."""

    generation: int = 0
    status: PlanStatus | None = None
    problem: str | None = None


def plan_record(node: dict[str, Any]) -> PlanRecord:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    generation, problem, status = 0, None, None
    raw = annotations.get(PLAN)
    if raw:
        generation = plan_generation(raw) or 0
        if not generation:
            problem = f"annotation {PLAN} has no generation; the next plan starts again at 1"
    raw = annotations.get(PLAN_STATUS)
    if raw:
        try:
            status = decode_status(raw)
        except PlanFormatError as exc:
            problem = str(exc)
    return PlanRecord(generation, status, problem)


@dataclass
class MigWait:
    """A pod whose instances are reserved while the node agent creates them."""

    node: str
    generation: int
    deadline: float
    description: str


@dataclass(frozen=True)
class WaitOutcome:
    """`ready`: decide and bind now; else `message` says why the wait ended (failure) or None
    (keep waiting)."""

    ready: bool = False
    message: str | None = None


def wanted_plan(state: ClusterState, node: int, generation: int, uuids: tuple[str | None, ...]) -> NodePlan:
    """The node's plan: every GPU in MIG mode as the cache holds it now (existing instances plus
    the reserved new ones), so one annotation carries every pending reservation of the node."""
    gpus = []
    for gpu, (layout, _busy) in enumerate(state.mig.slots_of(node)):
        if len(layout):
            gpus.append(GpuPlan(gpu, layout, uuids[gpu] if gpu < len(uuids) else None))
    return NodePlan(generation, tuple(gpus))


def describe_new(plans: tuple[MigPlan, ...], node: str) -> str:
    """`1g.10gb at slot 3 on GPU 2 of node n` for each instance a decision creates."""
    parts = [f"{i.profile} at slot {i.start} on GPU {p.gpu}" for p in plans for i in p.added]
    return f"{', '.join(parts)} of node {node}"


def instance_counts(mig: MigSpec | None) -> dict[str, int]:
    """Per profile, the instances a node's inventory lists."""
    counts: dict[str, int] = {}
    for layout in mig.layouts if mig is not None else ():
        for instance in layout or ():
            counts[instance.profile] = counts.get(instance.profile, 0) + 1
    return counts


def wait_outcome(
    wait: MigWait,
    record: PlanRecord,
    instances: dict[str, int],
    allocatable: dict[str, int],
    now: float | None = None,
) -> WaitOutcome:
    """Is the agent done with the pod's plan? `instances`: per profile, the instances the node's
    inventory lists; `allocatable`: what the kubelet advertises (both per profile)."""
    now = time.monotonic() if now is None else now
    status = record.status
    if status is not None and status.generation >= wait.generation:
        if not status.applied:
            return WaitOutcome(
                message=f"MIG reconfiguration of node {wait.node} failed (plan generation "
                f"{status.generation}): {status.message or 'no reason given'}"
            )
        short = sorted(p for p, n in instances.items() if allocatable.get(p, 0) < n)
        if not short:
            return WaitOutcome(ready=True)
        if now < wait.deadline:
            return WaitOutcome()
        return WaitOutcome(
            message=f"node {wait.node}: MIG instances were created (plan generation {wait.generation}) "
            f"but the kubelet does not advertise them yet ({', '.join(short)}); timed out"
        )
    if now < wait.deadline:
        return WaitOutcome()
    return WaitOutcome(
        message=f"timed out waiting for the node agent on {wait.node} to create {wait.description} "
        f"(plan generation {wait.generation}); is it running with --mode full --mig-dynamic?"
    )
