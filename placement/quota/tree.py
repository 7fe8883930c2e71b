"""The queue hierarchy: parents, leaves, the default queue, and the checks a tree must pass.

Only leaves take pods; a parent's usage is its children's sum, and its quota and limit
bound that sum. A tree is refused (`QueueSpecError`) for an unknown parent, a cycle, a
pod-less parent named by a pod, or children whose quotas add up to more than their
parent's for some model: a guarantee the parent cannot give is no guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from tessellate.placement.quota.spec import ANY_MODEL, DEFAULT_QUEUE, QueueSpec, QueueSpecError
from tessellate.placement.quota.units import format_units


class UnknownQueueError(LookupError):
    """A pod names a queue that does not exist or is not a leaf; the pod waits."""


class QueueTree:
    """Validated queues by name, with each leaf's path from its root.

    `default` is the queue of pods that name none; it is added (no entries: may only
    borrow) unless a spec of that name is given or `default` overrides it.
    """

    def __init__(self, specs: Iterable[QueueSpec], default: QueueSpec | None = None) -> None:
        queues = {s.name: s for s in specs}
        if default is not None:
            if default.name != DEFAULT_QUEUE:
                raise QueueSpecError(
                    default.name, "name", f"the default queue must be named {DEFAULT_QUEUE!r}"
                )
            queues[DEFAULT_QUEUE] = default
        queues.setdefault(DEFAULT_QUEUE, QueueSpec(DEFAULT_QUEUE))
        self.specs: dict[str, QueueSpec] = queues
        self.children: dict[str, list[str]] = {name: [] for name in queues}
        for spec in queues.values():
            if spec.parent is not None:
                if spec.parent not in queues:
                    raise QueueSpecError(
                        spec.name,
                        "spec.parent",
                        f"unknown queue {spec.parent!r}",
                        f"define queue {spec.parent!r} too, or leave parent out",
                    )
                self.children[spec.parent].append(spec.name)
        self.paths: dict[str, tuple[str, ...]] = {name: self._path(name) for name in queues}
        if self.children[DEFAULT_QUEUE]:
            raise QueueSpecError(
                DEFAULT_QUEUE,
                "spec.parent",
                "the default queue cannot have children",
                "give the children another parent",
            )
        for name in queues:
            self._check_children_quota(name)

    def _path(self, name: str) -> tuple[str, ...]:
        """Root first, `name` last."""
        path = [name]
        while (parent := self.specs[path[-1]].parent) is not None:
            if parent in path:
                cycle = " -> ".join([*path, parent])
                raise QueueSpecError(
                    name,
                    "spec.parent",
                    f"parents form a cycle ({cycle})",
                    "make one queue of the cycle a root (no parent)",
                )
            path.append(parent)
        return tuple(reversed(path))

    def _check_children_quota(self, name: str) -> None:
        kids = [self.specs[c] for c in self.children[name]]
        if not kids:
            return
        parent = self.specs[name]
        models = {ANY_MODEL, *parent.models, *(m for k in kids for m in k.models)}
        for model in sorted(models):
            total = sum((k.entry(model).quota for k in kids), Fraction(0))
            own = parent.entry(model).quota
            if total > own:
                raise QueueSpecError(
                    name,
                    f"spec.resources[{model}].quota",
                    f"children ({', '.join(k.name for k in kids)}) are guaranteed {format_units(total)} "
                    f"GPUs of {model} in total but this queue only {format_units(own)}",
                    "raise this queue's quota or lower the children's",
                )

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __iter__(self):
        return iter(self.specs)

    def is_leaf(self, name: str) -> bool:
        return not self.children[name]

    @property
    def leaves(self) -> list[str]:
        return [n for n in self.specs if not self.children[n]]

    @property
    def roots(self) -> list[str]:
        return [n for n, s in self.specs.items() if s.parent is None]

    def refusal_for_namespace(self, leaf: str, namespace: str) -> str | None:
        """Why pods of `namespace` may not use `leaf` (None: they may). Every queue on the
        leaf's path that lists namespaces must list this one, so a parent can fence a
        whole subtree to one organisation's namespaces."""
        for name in reversed(self.paths.get(leaf, (leaf,))):
            allowed = self.specs[name].namespaces
            if allowed is not None and namespace not in allowed:
                which = f"queue {leaf!r}" if name == leaf else f"queue {leaf!r} (through its parent {name!r})"
                listed = ", ".join(sorted(allowed)[:5]) + (", ..." if len(allowed) > 5 else "")
                admits = f"it admits only {listed}" if allowed else "it admits no namespace"
                return (
                    f"namespace {namespace!r} may not use {which}: {admits}; "
                    "use a queue of your own namespace, or ask the "
                    f"cluster admin to add {namespace!r} to spec.namespaces of queue {name!r}"
                )
        return None

    def leaf_for(self, label: str | None) -> str:
        """The queue a pod with queue label `label` belongs to (empty or None: the default)."""
        if not label:
            return DEFAULT_QUEUE
        if label not in self.specs:
            raise UnknownQueueError(f"queue {label!r} does not exist; create it or fix the pod's label")
        if not self.is_leaf(label):
            raise UnknownQueueError(
                f"queue {label!r} is a parent queue ({', '.join(self.children[label])}); "
                "pods go to leaf queues only"
            )
        return label
