"""InterPodAffinity, anti-affinity half: required podAntiAffinity on `kubernetes.io/hostname`.

A node fails when it runs (or is assumed to run) a pod that the incoming pod's terms
select, or a pod whose own required anti-affinity selects the incoming pod (kube-scheduler
checks both, the existing pods' rules first, with these reason strings). Nodes without
the `kubernetes.io/hostname` label never violate a term, as in kube-scheduler. Only the
hostname topology is supported; other topology keys, required podAffinity and
non-empty namespaceSelectors are refused when the pod is read (`unsupported_terms`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tessellate.scheduler.framework import PASS, FilterContext, Verdict

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache
    from tessellate.scheduler.podrecord import PodRecord

HOSTNAME = "kubernetes.io/hostname"
REASON_EXISTING = "node(s) didn't satisfy existing pods anti-affinity rules"
REASON_MATCH = "node(s) didn't match pod anti-affinity rules"
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class AntiAffinityError(ValueError):
    """A required anti-affinity term Tessellate cannot evaluate (what to change is in the text)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def holds(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        return present if self.operator == "Exists" else not present


@dataclass(frozen=True)
class AntiAffinityTerm:
    """Pods in `namespaces` (None: every namespace) whose labels meet every requirement."""

    namespaces: frozenset[str] | None
    requirements: tuple[Requirement, ...]

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return all(r.holds(labels) for r in self.requirements)


def _selector(raw: Any, where: str) -> tuple[Requirement, ...]:
    if not isinstance(raw, dict):
        raise AntiAffinityError(f"{where}.labelSelector must be an object")
    out = [Requirement(str(k), "In", frozenset({str(v)})) for k, v in (raw.get("matchLabels") or {}).items()]
    for i, expr in enumerate(raw.get("matchExpressions") or []):
        op = expr.get("operator") if isinstance(expr, dict) else None
        if op not in _OPERATORS:
            raise AntiAffinityError(
                f"{where}.labelSelector.matchExpressions[{i}]: operator must be one of {_OPERATORS}"
            )
        values = frozenset(str(v) for v in expr.get("values") or [])
        if (op in ("In", "NotIn")) != bool(values):
            raise AntiAffinityError(
                f"{where}.labelSelector.matchExpressions[{i}]: {op} needs values only with In/NotIn"
            )
        out.append(Requirement(str(expr.get("key", "")), op, values))
    return tuple(out)


def anti_affinity_terms(spec: dict[str, Any], namespace: str) -> tuple[AntiAffinityTerm, ...]:
    """The pod's required anti-affinity terms; AntiAffinityError for what is not supported."""
    affinity = (spec.get("affinity") or {}).get("podAntiAffinity") or {}
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    out = []
    for i, term in enumerate(terms):
        where = f"podAntiAffinity.required[{i}]"
        if not isinstance(term, dict):
            raise AntiAffinityError(f"{where} must be an object")
        if term.get("topologyKey") != HOSTNAME:
            raise AntiAffinityError(
                f"{where}: topologyKey {term.get('topologyKey')!r} is not supported (only {HOSTNAME})"
            )
        if term.get("matchLabelKeys") or term.get("mismatchLabelKeys"):
            raise AntiAffinityError(f"{where}: matchLabelKeys/mismatchLabelKeys are not supported")
        selector = term.get("namespaceSelector")
        if selector not in (None, {}):
            raise AntiAffinityError(
                f"{where}: a non-empty namespaceSelector is not supported; list namespaces"
            )
        listed = term.get("namespaces") or []
        namespaces = (
            None if selector == {} else frozenset(map(str, listed)) if listed else frozenset({namespace})
        )
        if term.get("labelSelector") is None:
            continue  # a null selector selects no pod (Kubernetes' rule): the term never fails
        out.append(AntiAffinityTerm(namespaces, _selector(term.get("labelSelector"), where)))
    return tuple(out)


def _node_of(cache: ClusterCache, rec: PodRecord) -> int | None:
    assert cache.state is not None
    placed = cache.assumed.get(rec.uid)
    name = rec.node_name or (placed.node if placed is not None else "")
    return cache.state.index.get(name) if name else None


class PodAntiAffinity:
    name = "PodAntiAffinity"
    reads_pods = True

    def __init__(self) -> None:
        self._state: object = None
        self._hosts: list[str | None] = []
        self._same_host: dict[str, list[int]] = {}

    def _index(self, cache: ClusterCache) -> None:
        """Each node's hostname and the nodes sharing it, once per placement state."""
        if self._state is cache.state:
            return
        assert cache.state is not None
        self._state = cache.state
        self._hosts = [cache.nodes[n].labels.get(HOSTNAME) for n in cache.state.names]
        self._same_host = {}
        for i, host in enumerate(self._hosts):
            if host is not None:
                self._same_host.setdefault(host, []).append(i)

    def _domains_with(self, cache: ClusterCache, pods: Iterable[PodRecord], bad: Any) -> np.ndarray:
        """Nodes whose hostname is shared with a placed pod for which `bad(pod)` holds."""
        out = np.zeros(len(self._hosts), dtype=bool)
        for other in pods:
            node = _node_of(cache, other)
            host = self._hosts[node] if node is not None else None
            if host is not None and bad(other):
                out[self._same_host[host]] = True
        return out

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        cache = ctx.cache
        if not rec.anti_affinity and not cache.anti_affinity_uids:
            return Verdict(PASS)
        self._index(cache)
        holders = (cache.pods[u] for u in cache.anti_affinity_uids if u in cache.pods and u != rec.uid)
        existing = self._domains_with(
            cache, holders, lambda o: any(t.selects(rec.namespace, rec.labels) for t in o.anti_affinity)
        )
        mine = np.zeros(len(self._hosts), dtype=bool)
        if rec.anti_affinity:
            others = (o for o in cache.pods.values() if o.uid != rec.uid)
            mine = self._domains_with(
                cache, others, lambda o: any(t.selects(o.namespace, o.labels) for t in rec.anti_affinity)
            )
        per_node = np.where(existing, REASON_EXISTING, np.where(mine, REASON_MATCH, None))
        return Verdict(~(existing | mine), per_node=per_node)
