"""Nodes the cache will not place on: quarantined (their inventory cannot be trusted) or
over-committed (bound pods claim more than they have, until that clears)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tessellate.scheduler.framework import PASS, FilterContext, Verdict

if TYPE_CHECKING:
    from tessellate.scheduler.podrecord import PodRecord

REASON_OVERCOMMITTED = "node(s) over-committed by pods bound elsewhere"
REASON_QUARANTINED = "node(s) quarantined for an invalid GPU inventory (see the node's events)"


class NodeHealth:
    name = "NodeHealth"
    reads_pods = False

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        cache = ctx.cache
        assert cache.charges is not None
        overcommitted = cache.charges.overcommitted
        if not (cache.quarantined.any() or overcommitted.any()):
            return Verdict(PASS)
        closed = cache.quarantined | overcommitted
        per_node = np.where(
            cache.quarantined, REASON_QUARANTINED, np.where(overcommitted, REASON_OVERCOMMITTED, None)
        )
        return Verdict(~closed, per_node=per_node)
