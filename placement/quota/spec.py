"""Queue specs in the CRD's spec form, and the parser that turns YAML into them.

A Queue (`queues.tessellate.dev`) says, per GPU model, how many GPUs a team is
guaranteed (`quota`), how many it may never exceed (`limit`) and how strongly it
competes for idle GPUs beyond its quota (`overQuotaWeight`). The same parser serves
the simulator's `--queues` file and the live scheduler's informer, so a spec means the
same in both; every refusal is a `QueueSpecError` naming the queue, the field, and
what to write instead, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from tessellate.placement.catalogue import GPU_MODELS

ANY_MODEL = "*"
"""`gpuModel: "*"`: the entry for every GPU model the queue names no entry of its own for."""
DEFAULT_QUEUE = "default"
"""Where pods that name no queue go."""
QUEUE_LABEL = "tessellate.dev/queue"
"""The pod label that names a pod's queue."""

QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
"""A queue name: a Kubernetes object name (DNS subdomain)."""
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""A namespace name: a DNS label (at most 63 characters)."""
MAX_NAMESPACES = 1000
_SPEC_KEYS = ("parent", "resources", "namespaces")
_RESOURCE_KEYS = ("gpuModel", "quota", "limit", "overQuotaWeight")
MAX_NAME = 253


class QueueSpecError(ValueError):
    """A queue spec that cannot be used: which queue, which field, what is wrong, what to write."""

    def __init__(self, queue: str, field: str, problem: str, hint: str = "") -> None:
        self.queue, self.field, self.problem, self.hint = queue, field, problem, hint
        text = f"queue {queue or '?'}: {field}: {problem}"
        super().__init__(f"{text}; {hint}" if hint else text)


@dataclass(frozen=True, slots=True)
class ResourceQuota:
    """One `spec.resources` entry: GPUs of one model (or "*") in GPU units.

    `limit` None: no cap. Quota and limit are exact fractions (a GPU fraction of 0.25
    counts 1/4), so sums never drift."""

    gpu_model: str
    quota: Fraction = Fraction(0)
    limit: Fraction | None = None
    over_quota_weight: Fraction = Fraction(1)


NO_ENTRY = ResourceQuota(ANY_MODEL)
"""What a model gets when the queue names neither it nor "*": no quota, no cap, weight 1."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue: its name, its parent (None: a root) and its per-model entries."""

    name: str
    parent: str | None = None
    resources: tuple[ResourceQuota, ...] = ()
    namespaces: frozenset[str] | None = None
    """The namespaces whose pods may use the queue; None: every namespace (the queue label
    is written by pod authors, so a queue that guards a team's quota names the team's
    namespaces)."""

    def entry(self, model: str) -> ResourceQuota:
        """The entry that governs `model`: its own, else the "*" entry, else `NO_ENTRY`."""
        fallback = NO_ENTRY
        for r in self.resources:
            if r.gpu_model == model:
                return r
            if r.gpu_model == ANY_MODEL:
                fallback = r
        return fallback

    @property
    def models(self) -> tuple[str, ...]:
        """The models (and "*") this queue has entries for, in spec order."""
        return tuple(r.gpu_model for r in self.resources)


def parse_queues(documents: object) -> list[QueueSpec]:
    """Queues from a YAML-loaded list (or a `kind: List` with `items`); names must be unique."""
    if isinstance(documents, Mapping) and "items" in documents:
        documents = documents["items"]
    if isinstance(documents, Mapping):
        documents = [documents]
    if not isinstance(documents, list):
        raise QueueSpecError(
            "",
            "(file)",
            f"expected a list of queues, got {type(documents).__name__}",
            "write a YAML list: - name: team-a\\n  spec: {resources: [...]}",
        )
    specs: list[QueueSpec] = []
    seen: set[str] = set()
    for index, doc in enumerate(documents):
        spec = parse_queue(doc, index)
        if spec.name in seen:
            raise QueueSpecError(spec.name, "metadata.name", "defined twice", "give each queue one entry")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def parse_queue(doc: object, index: int = 0) -> QueueSpec:
    """One queue from `{name, spec}` or a Queue object `{apiVersion, kind, metadata: {name}, spec}`."""
    where = f"#{index + 1}"
    if not isinstance(doc, Mapping):
        raise QueueSpecError(
            where,
            "(entry)",
            f"expected a mapping, got {type(doc).__name__}",
            "each queue is {name: ..., spec: {...}}",
        )
    name = _name_of(doc, where)
    kind = doc.get("kind")
    if kind is not None and kind != "Queue":
        raise QueueSpecError(name, "kind", f"{kind!r} is not a Queue", "write kind: Queue or leave it out")
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise QueueSpecError(
            name,
            "spec",
            f"expected a mapping, got {type(spec).__name__}",
            "write spec: {parent: ..., resources: [...]}",
        )
    _known_keys(name, "spec", spec, _SPEC_KEYS)
    parent = spec.get("parent")
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise QueueSpecError(
                name,
                "spec.parent",
                f"expected a queue name, got {parent!r}",
                "name an existing queue or leave parent out",
            )
        if parent == name:
            raise QueueSpecError(
                name, "spec.parent", "a queue cannot be its own parent", "leave parent out for a root queue"
            )
    resources = spec.get("resources") or []
    if not isinstance(resources, list):
        raise QueueSpecError(
            name,
            "spec.resources",
            f"expected a list, got {type(resources).__name__}",
            "write resources: [{gpuModel: H100-80GB, quota: 8}]",
        )
    entries = tuple(_resource(name, i, r) for i, r in enumerate(resources))
    models = [e.gpu_model for e in entries]
    for model in models:
        if models.count(model) > 1:
            raise QueueSpecError(
                name, "spec.resources", f"gpuModel {model!r} appears twice", "give each GPU model one entry"
            )
    return QueueSpec(name, parent, entries, _namespaces(name, spec.get("namespaces")))


def _namespaces(queue: str, raw: object) -> frozenset[str] | None:
    """`spec.namespaces`: a list of namespace names (an empty list admits no namespace)."""
    if raw is None:
        return None
    hint = "write namespaces: [team-a, team-a-dev], or leave it out to admit every namespace"
    if not isinstance(raw, list):
        raise QueueSpecError(queue, "spec.namespaces", f"expected a list, got {type(raw).__name__}", hint)
    if len(raw) > MAX_NAMESPACES:
        raise QueueSpecError(queue, "spec.namespaces", f"more than {MAX_NAMESPACES} entries", hint)
    for i, ns in enumerate(raw):
        if not isinstance(ns, str) or len(ns) > 63 or not NAMESPACE_NAME.match(ns):
            raise QueueSpecError(queue, f"spec.namespaces[{i}]", f"{ns!r} is not a namespace name", hint)
    return frozenset(raw)


def _name_of(doc: Mapping, where: str) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else doc.get("name")
    if not isinstance(name, str) or not name:
        raise QueueSpecError(
            where, "name", "missing queue name", "write name: team-a (or metadata: {name: team-a})"
        )
    if len(name) > MAX_NAME or not QUEUE_NAME.match(name):
        raise QueueSpecError(
            name,
            "name",
            "not a valid Kubernetes name",
            "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    return name


def _known_keys(queue: str, field: str, mapping: Mapping, known: Iterable[str]) -> None:
    known = tuple(known)
    for key in mapping:
        if key not in known:
            raise QueueSpecError(
                queue, f"{field}.{key}", "unknown field", f"the fields are {', '.join(known)}"
            )


def _resource(queue: str, index: int, raw: object) -> ResourceQuota:
    field = f"spec.resources[{index}]"
    if not isinstance(raw, Mapping):
        raise QueueSpecError(
            queue,
            field,
            f"expected a mapping, got {type(raw).__name__}",
            "write {gpuModel: H100-80GB, quota: 8, limit: 16, overQuotaWeight: 1}",
        )
    _known_keys(queue, field, raw, _RESOURCE_KEYS)
    model = raw.get("gpuModel")
    if model is None:
        raise QueueSpecError(
            queue, f"{field}.gpuModel", "missing", 'name a catalogue GPU model, or "*" for any model'
        )
    if model != ANY_MODEL and model not in GPU_MODELS:
        raise QueueSpecError(
            queue,
            f"{field}.gpuModel",
            f"unknown GPU model {model!r}",
            f'use "*" or one of {", ".join(GPU_MODELS)}',
        )
    quota = _amount(queue, f"{field}.quota", raw.get("quota", 0))
    limit_raw = raw.get("limit")
    limit = None if limit_raw is None else _amount(queue, f"{field}.limit", limit_raw)
    weight = _amount(queue, f"{field}.overQuotaWeight", raw.get("overQuotaWeight", 1))
    if limit is not None and limit < quota:
        raise QueueSpecError(
            queue,
            f"{field}.limit",
            f"limit {_show(limit)} is below quota {_show(quota)}",
            "raise the limit to at least the quota, or leave it out (no cap)",
        )
    return ResourceQuota(str(model), quota, limit, weight)


def _amount(queue: str, field: str, value: object) -> Fraction:
    """A GPU count: an integer or a decimal (0.5, "2.25") >= 0; never a bool or a NaN."""
    hint = "write a number of GPUs >= 0, e.g. 8 or 0.5"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueueSpecError(queue, field, f"expected a number, got {value!r}", hint)
    try:
        amount = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise QueueSpecError(queue, field, f"expected a number, got {value!r}", hint) from None
    if amount < 0:
        raise QueueSpecError(queue, field, f"negative amount {value!r}", hint)
    if amount.denominator > 1000:
        raise QueueSpecError(queue, field, f"{value!r} is finer than a milli-GPU", "use at most 3 decimals")
    return amount


def _show(x: Fraction) -> str:
    from tessellate.placement.quota.units import format_units

    return format_units(x)
