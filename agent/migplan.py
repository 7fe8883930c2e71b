"""Applying one MIG plan (`tessellate.dev/mig-plan`, `tessellate/wire/migplan.py`) to this node's GPUs.

A plan lists, per GPU, the complete layout the scheduler wants. Plans only
add: for each listed GPU the agent checks that the GPU is the one the plan
means (UUID at that index) and healthy, turns MIG mode on when it is off (not
while a pod uses the GPU whole or as a fraction: that would pull it from under
the pod), then creates every wanted instance that does not exist yet, at its
exact start. It never destroys an instance; one the plan does not list is
mentioned in the status message and left alone.

Every GPU is tried even when an earlier one failed, so that what can be done is
done; the plan is `Applied` only if, after rediscovery, every wanted instance
exists. Otherwise it is `Failed`, and the message names each GPU's problem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tessellate.agent.discovery import Backend, MigConfigError
from tessellate.agent.inventory import Gpu, Inventory
from tessellate.agent.state import Snapshot
from tessellate.placement.mig import MigError, MigGeometry, MigLayout, geometry

from tessellate.wire.migplan import APPLIED, FAILED, GpuPlan, NodePlan, PlanStatus

log = logging.getLogger("tessellate.agent.migplan")


def geometries(inventory: Inventory) -> dict[int, MigGeometry]:
    """GPU index -> MIG geometry, for the GPUs whose model has one (what `decode_plan` checks against)."""
    out = {}
    for gpu in inventory.gpus:
        try:
            out[gpu.index] = geometry(gpu.model)
        except MigError:
            continue
    return out


@dataclass(frozen=True)
class Outcome:
    """What applying a plan did, before it is written as a status."""

    problems: tuple[str, ...]
    notes: tuple[str, ...]


class MigPlanApplier:
    def __init__(self, backend: Backend, rediscover: Callable[[], Snapshot]):
        self.backend = backend
        self.rediscover = rediscover
        """Read the GPUs again and publish them to the device state; returns the new snapshot."""

    def apply(self, plan: NodePlan, snapshot: Snapshot, users: Mapping[str, str]) -> PlanStatus:
        """Make the plan true on the GPUs; `users` maps GPU UUID -> the pod using it whole or in part."""
        problems: list[str] = []
        notes: list[str] = []
        changed = False
        for gpu_plan in sorted(plan.gpus, key=lambda g: g.index):
            try:
                changed |= self._apply_gpu(gpu_plan, snapshot, users, notes)
            except MigConfigError as exc:
                log.error("MIG plan %d: %s", plan.generation, exc)
                problems.append(str(exc))
                changed = True  # part of it may have happened
        after = self.rediscover() if changed else snapshot
        if after.discovery_error is not None:
            problems.append(f"rediscovery after the MIG change failed: {after.discovery_error}")
        elif not problems:
            problems.extend(_missing(plan, after.inventory))
        if problems:
            return PlanStatus(plan.generation, FAILED, "; ".join(problems))
        return PlanStatus(plan.generation, APPLIED, "; ".join(notes))

    def _apply_gpu(
        self, plan: GpuPlan, snapshot: Snapshot, users: Mapping[str, str], notes: list[str]
    ) -> bool:
        """One GPU; True when something was changed. Raises MigConfigError."""
        gpu = _gpu(plan, snapshot)
        existing = _existing(gpu)
        wanted = [(i.profile, i.start) for i in plan.layout]
        extra = [i for i in existing if i not in wanted]
        if extra:
            listed = ", ".join(f"{p} at start {s}" for p, s in extra)
            notes.append(f"GPU {gpu.index} also has {listed}, which the plan does not list (left alone)")
        missing = [i for i in wanted if i not in existing]
        if gpu.mig_enabled and not missing:
            return False
        if missing:
            problems = MigLayout.problems(plan.layout.geometry, [*existing, *missing])
            if problems:
                raise MigConfigError(
                    f"GPU {gpu.index}: the planned instances do not fit next to the existing ones: "
                    + "; ".join(problems)
                )
        if not gpu.mig_enabled:
            user = users.get(gpu.uuid)
            if user:
                raise MigConfigError(f"GPU {gpu.index} runs {user}; cannot enable MIG mode")
            log.info("MIG plan: enabling MIG mode on GPU %d", gpu.index)
            self.backend.enable_mig(gpu.index)
        for profile, start in missing:
            log.info("MIG plan: creating %s at start %d on GPU %d", profile, start, gpu.index)
            self.backend.create_mig(gpu.index, profile, start)
        return True


def _gpu(plan: GpuPlan, snapshot: Snapshot) -> Gpu:
    gpus = snapshot.inventory.gpus
    if plan.index >= len(gpus):
        raise MigConfigError(f"the plan names GPU {plan.index}, but this node has {len(gpus)} GPUs")
    gpu = gpus[plan.index]
    if plan.uuid and plan.uuid != gpu.uuid:
        raise MigConfigError(
            f"the plan says GPU {plan.index} is {plan.uuid}, but GPU {plan.index} is {gpu.uuid}; "
            "not touching it"
        )
    if not snapshot.healthy(gpu.uuid):
        raise MigConfigError(f"GPU {plan.index} is unhealthy ({snapshot.reason(gpu.uuid)}); not changing it")
    return gpu


def _existing(gpu: Gpu) -> list[tuple[str, int]]:
    """The GPU's instances as (profile, start), once each (several compute instances share one)."""
    if not gpu.mig_enabled:
        return []
    return list(dict.fromkeys((m.profile, m.start) for m in gpu.mig))


def _missing(plan: NodePlan, inventory: Inventory) -> list[str]:
    """Wanted instances that rediscovery does not show (the driver said yes but did not do it)."""
    out = []
    for gpu_plan in plan.gpus:
        gpu = inventory.gpus[gpu_plan.index] if gpu_plan.index < len(inventory.gpus) else None
        have = set(_existing(gpu)) if gpu is not None else set()
        for instance in gpu_plan.layout:
            if (instance.profile, instance.start) not in have:
                out.append(
                    f"GPU {gpu_plan.index}: {instance.profile} at start {instance.start} "
                    "was not found after creating it"
                )
    return out
