"""The MIG reconfiguration a scheduler asks of a node agent, and the agent's answer.

One schema, shared by the writer (the scheduler publishes `MigPlan`s of the core)
and the reader (the node agent applies them), so that neither can drift:

`tessellate.dev/mig-plan` (node annotation, written by the scheduler)::

    {"version": 1, "generation": 7,
     "gpus": [{"index": 2, "uuid": "GPU-...",
               "instances": [{"profile": "3g.40gb", "start": 4}, ...]}]}

Each listed GPU's `instances` is its complete wanted layout. Plans only ever add:
every instance that existed when the plan was made is in it, so an agent creates
the missing instances (enabling MIG mode on an idle GPU first) and never destroys
one; an instance on the GPU that the plan does not list is reported, not removed.
GPUs not listed are left alone. `generation` grows with every new plan for the node.

`tessellate.dev/mig-plan-status` (node annotation, written by the agent)::

    {"generation": 7, "state": "Applied", "message": "...", "time": "2026-12-01T13:40:00Z"}

`state` is `Applied` (every wanted instance exists) or `Failed` (`message` says why);
the scheduler waits for the generation it published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tessellate.placement.mig import MigError, MigGeometry, MigLayout

PLAN = "tessellate.dev/mig-plan"
PLAN_STATUS = "tessellate.dev/mig-plan-status"
PLAN_VERSION = 1
APPLIED = "Applied"
FAILED = "Failed"
STATES = (APPLIED, FAILED)


class PlanFormatError(ValueError):
    """The annotation does not follow the schema; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class GpuPlan:
    """One GPU's wanted layout. `uuid` (when known) guards against a GPU re-indexed since."""

    index: int
    layout: MigLayout
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class NodePlan:
    generation: int
    gpus: tuple[GpuPlan, ...]

    def gpu(self, index: int) -> GpuPlan | None:
        return next((g for g in self.gpus if g.index == index), None)


@dataclass(frozen=True, slots=True)
class PlanStatus:
    generation: int
    state: str
    message: str = ""
    time: str = ""

    @property
    def applied(self) -> bool:
        return self.state == APPLIED


def encode_plan(plan: NodePlan) -> str:
    gpus = []
    for g in sorted(plan.gpus, key=lambda g: g.index):
        entry: dict[str, Any] = {"index": g.index}
        if g.uuid:
            entry["uuid"] = g.uuid
        entry["instances"] = g.layout.to_json()
        gpus.append(entry)
    doc = {"version": PLAN_VERSION, "generation": plan.generation, "gpus": gpus}
    return json.dumps(doc, separators=(",", ":"))


def plan_generation(raw: str) -> int | None:
    """The generation of a plan that may not parse otherwise (None: it has no usable one), so a
    reader can still answer, or number past, a plan it cannot apply."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    generation = doc.get("generation") if isinstance(doc, dict) else None
    if isinstance(generation, int) and not isinstance(generation, bool) and generation >= 1:
        return generation
    return None


def decode_plan(raw: str, geometry_of: Mapping[int, MigGeometry] | MigGeometry) -> NodePlan:
    """Read and validate a plan; `geometry_of` is the node's GPU model (or one per index).

    Every layout must be a valid layout of that model (exact slots, no overlaps)."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise PlanFormatError(f"{PLAN} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PlanFormatError(f"{PLAN} must be a JSON object, got {type(doc).__name__}")
    if doc.get("version") != PLAN_VERSION:
        raise PlanFormatError(
            f"{PLAN}: unsupported version {doc.get('version')!r} (this reads {PLAN_VERSION})"
        )
    generation = doc.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        raise PlanFormatError(f"{PLAN}: 'generation' must be a positive integer, got {generation!r}")
    entries = doc.get("gpus")
    if not isinstance(entries, list):
        raise PlanFormatError(f"{PLAN}: 'gpus' must be a list")
    gpus: list[GpuPlan] = []
    for n, entry in enumerate(entries):
        gpus.append(_gpu_plan(entry, n, geometry_of))
    indices = [g.index for g in gpus]
    if len(set(indices)) != len(indices):
        raise PlanFormatError(f"{PLAN}: GPU index listed twice ({sorted(indices)})")
    return NodePlan(generation, tuple(gpus))


def _gpu_plan(entry: Any, n: int, geometry_of: Mapping[int, MigGeometry] | MigGeometry) -> GpuPlan:
    where = f"{PLAN} gpus[{n}]"
    if not isinstance(entry, dict):
        raise PlanFormatError(f"{where}: must be an object")
    index = entry.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise PlanFormatError(f"{where}: 'index' must be a GPU index >= 0, got {index!r}")
    if isinstance(geometry_of, MigGeometry):
        g = geometry_of
    else:
        g = geometry_of.get(index)  # type: ignore[assignment]
        if g is None:
            raise PlanFormatError(f"{where}: the node has no MIG-capable GPU {index}")
    uuid = entry.get("uuid")
    if uuid is not None and (not isinstance(uuid, str) or not uuid):
        raise PlanFormatError(f"{where}: 'uuid' must be a non-empty string, got {uuid!r}")
    raw_instances = entry.get("instances")
    if not isinstance(raw_instances, list):
        raise PlanFormatError(f"{where}: 'instances' must be a list of {{profile, start}}")
    instances = []
    for item in raw_instances:
        if not isinstance(item, dict) or not isinstance(item.get("profile"), str):
            raise PlanFormatError(f"{where}: each instance needs a 'profile' string, got {item!r}")
        start = item.get("start")
        if not isinstance(start, int) or isinstance(start, bool):
            raise PlanFormatError(f"{where}: instance {item['profile']} needs an integer 'start'")
        instances.append((item["profile"], start))
    try:
        layout = MigLayout.of(g, *instances)
    except (MigError, ValueError) as exc:
        raise PlanFormatError(f"{where}: not a valid {g.model} layout: {exc}") from None
    return GpuPlan(index, layout, uuid)


def encode_status(status: PlanStatus) -> str:
    if status.state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {status.state!r}")
    doc: dict[str, Any] = {"generation": status.generation, "state": status.state}
    if status.message:
        doc["message"] = status.message
    if status.time:
        doc["time"] = status.time
    return json.dumps(doc, separators=(",", ":"))


def decode_status(raw: str) -> PlanStatus:
    try:
        doc = json.loads(raw)
        generation, state = doc["generation"], doc["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanFormatError(f"{PLAN_STATUS} does not parse: {exc}") from None
    positive = isinstance(generation, int) and not isinstance(generation, bool) and generation >= 1
    if not positive or state not in STATES:
        raise PlanFormatError(f"{PLAN_STATUS}: bad generation {generation!r} or state {state!r}")
    return PlanStatus(generation, state, str(doc.get("message") or ""), str(doc.get("time") or ""))
