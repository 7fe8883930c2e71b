"""kube-scheduler's node filters that do not depend on free capacity.

NodeUnschedulable, TaintToleration and NodeAffinity (nodeSelector plus required
node affinity) in kube-scheduler's order: a node reports the first filter that
rejects it, with kube-scheduler's reason text, so our FailedScheduling
messages read like the ones users know. Results depend only on the pod's
constraints and the node set, so they are cached per (constraints, node set).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tessellate.scheduler.nodes import NodeInfo

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"


class ConstraintError(ValueError):
    """A node selector or affinity that cannot be evaluated (bad operator or value)."""


@dataclass(frozen=True)
class Eligibility:
    """Which nodes pass the constraint filters, and why the others do not."""

    mask: np.ndarray
    reasons: Counter[str]
    per_node: tuple[str | None, ...] = ()
    """The first constraint each node fails (None where it passes)."""

    @property
    def everywhere(self) -> bool:
        return not self.reasons


def tolerates(tolerations: Sequence[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = t.get("key") or ""
        op = t.get("operator") or "Equal"
        if op == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _requirement(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            raise ConstraintError(f"operator {op} on {key!r} needs exactly one value, got {values}")
        try:
            bound = int(values[0])
        except ValueError:
            raise ConstraintError(f"operator {op} on {key!r} needs an integer, got {values[0]!r}") from None
        if not present:
            return False
        try:
            have = int(labels[key])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    raise ConstraintError(
        f"unknown node selector operator {op!r} (use In, NotIn, Exists, DoesNotExist, Gt, Lt)"
    )


def _term_matches(node: NodeInfo, term: dict[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no node (as in Kubernetes)
    for f in fields:
        if f.get("key") != "metadata.name":
            raise ConstraintError(f"matchFields supports only metadata.name, got {f.get('key')!r}")
    return all(_requirement(node.labels, e) for e in exprs) and all(
        _requirement({"metadata.name": node.name}, f) for f in fields
    )


class PodConstraints:
    """The parts of a pod spec the constraint filters read, with a hashable key."""

    def __init__(self, spec: dict[str, Any]):
        self.node_selector: dict[str, str] = dict(spec.get("nodeSelector") or {})
        affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        self.terms: list[dict[str, Any]] | None = (
            None if affinity is None else (affinity.get("nodeSelectorTerms") or [])
        )
        self.tolerations: list[dict[str, Any]] = list(spec.get("tolerations") or [])
        self.key = json.dumps([self.node_selector, self.terms, self.tolerations], sort_keys=True)

    def first_failure(self, node: NodeInfo) -> str | None:
        if node.unschedulable and not tolerates(
            self.tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        ):
            return REASON_UNSCHEDULABLE
        for taint in node.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(self.tolerations, taint):
                return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
        if any(node.labels.get(k) != v for k, v in self.node_selector.items()):
            return REASON_AFFINITY
        if self.terms is not None and not any(_term_matches(node, t) for t in self.terms):
            return REASON_AFFINITY
        return None


class EligibilityCache:
    """Eligibility per constraint key, valid until the node set changes."""

    def __init__(self, limit: int = 4096):
        self._nodes: tuple[NodeInfo, ...] = ()
        self._entries: dict[str, Eligibility] = {}
        self._limit = limit

    def reset(self, nodes: Sequence[NodeInfo]) -> None:
        self._nodes = tuple(nodes)
        self._entries.clear()

    def of(self, constraints: PodConstraints) -> Eligibility:
        entry = self._entries.get(constraints.key)
        if entry is None:
            per_node = tuple(constraints.first_failure(node) for node in self._nodes)
            mask = np.array([why is None for why in per_node], dtype=bool)
            mask.flags.writeable = False
            entry = Eligibility(mask, Counter(why for why in per_node if why is not None), per_node)
            if len(self._entries) >= self._limit:
                self._entries.clear()
            self._entries[constraints.key] = entry
        return entry
