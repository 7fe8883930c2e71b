"""The requests FGD's expected workload is built from, with the GPU models each pod may use.

A trace names a pod's allowed models (`gpu_spec`); a cluster says the same with a
nodeSelector or required node affinity on `nvidia.com/gpu.product`. To build the very
target the simulator builds for the same pods (`placement.workload`), each pod's request
carries the catalogue models of the products those constraints let through: only the
product label is judged (taints, cordons and other labels restrict nodes, not models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from tessellate.placement import NodeSpec, Request
from tessellate.scheduler.constraints import ConstraintError, PodConstraints
from tessellate.scheduler.nodes import PRODUCT_LABEL, NodeInfo

_PROBE = NodeSpec(name="", cpu_milli=0, memory_mib=0)


def products(nodes: Iterable[NodeInfo]) -> dict[str | None, str]:
    """Product label value (None: no label) -> catalogue model, over the nodes with GPUs."""
    return {n.labels.get(PRODUCT_LABEL): n.spec.gpu_model for n in nodes if n.spec.gpu_model}


def _product_only(constraints: PodConstraints) -> PodConstraints | None:
    """The pod's constraints on the product label alone; None when they do not restrict it."""
    spec: dict[str, Any] = {}
    if PRODUCT_LABEL in constraints.node_selector:
        spec["nodeSelector"] = {PRODUCT_LABEL: constraints.node_selector[PRODUCT_LABEL]}
    terms = []
    for term in constraints.terms or ():
        if not (term.get("matchExpressions") or term.get("matchFields")):
            continue  # an empty term matches no node, so it lets no product through
        exprs = [e for e in term.get("matchExpressions") or [] if e.get("key") == PRODUCT_LABEL]
        if not exprs:
            terms = None  # this term allows every product: so does the affinity (terms are ORed)
            break
        terms.append({"matchExpressions": exprs})
    if constraints.terms is not None and terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    return PodConstraints(spec) if spec else None


def pod_models(constraints: PodConstraints, known: Mapping[str | None, str]) -> tuple[str, ...] | None:
    """The models of the known products a pod's constraints let through, sorted: () when they
    let every product through, even a missing label (any model, as an empty `gpu_spec`),
    None when they let none through.

    Raises ConstraintError for an expression that cannot be evaluated."""
    product_only = _product_only(constraints)
    if product_only is None:
        return ()

    def passes(product: str | None) -> bool:
        labels = {} if product is None else {PRODUCT_LABEL: product}
        return product_only.first_failure(NodeInfo(_PROBE, labels=labels)) is None

    passed = {product for product in known if passes(product)}
    if not passed:
        return None
    if len(passed) == len(known) and passes(None):
        return ()  # not a model constraint at all (`Exists` is one: nodes without GPUs fail it)
    return tuple(sorted({known[product] for product in passed}))


def target_requests(
    pods: Iterable[tuple[Request, PodConstraints]], known: Mapping[str | None, str]
) -> list[Request]:
    """Each pod's request with the GPU models it may use; pods no known product serves, or
    whose constraints cannot be evaluated, are left out (they never run)."""
    models_of: dict[str, tuple[str, ...] | None] = {}
    out: list[Request] = []
    for request, constraints in pods:
        if not request.gpu_count:
            out.append(request)  # CPU only (or MIG, which the target leaves out): no GPU model
            continue
        key = constraints.key
        if key not in models_of:
            try:
                models_of[key] = pod_models(constraints, known)
            except ConstraintError:
                models_of[key] = None
        models = models_of[key]
        if models == request.gpu_models:
            out.append(request)
        elif models is not None:
            out.append(replace(request, gpu_models=models))
    return out
