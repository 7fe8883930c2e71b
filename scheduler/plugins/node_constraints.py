"""NodeUnschedulable, TaintToleration and NodeAffinity (`scheduler/constraints.py`), cached
per constraint key until the node set changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessellate.scheduler.constraints import ConstraintError
from tessellate.scheduler.framework import PASS, FilterContext, Verdict

from tessellate.wire.podspec import PodRequestError

if TYPE_CHECKING:
    from tessellate.scheduler.podrecord import PodRecord


class NodeConstraints:
    name = "NodeConstraints"
    reads_pods = False

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        assert rec.constraints is not None
        try:
            eligibility = ctx.cache.eligibility.of(rec.constraints)
        except ConstraintError as exc:
            raise PodRequestError(f"invalid node affinity: {exc}") from None
        if eligibility.everywhere:
            return Verdict(PASS)
        return Verdict(eligibility.mask, per_node=eligibility.per_node, counts=eligibility.reasons)
