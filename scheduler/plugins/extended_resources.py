"""NodeResourcesFit for the countable resources the placement core does not model
(hugepages, ephemeral storage, vendor devices): allocatable minus what is charged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tessellate.scheduler.framework import PASS, FilterContext, Verdict

if TYPE_CHECKING:
    from tessellate.scheduler.podrecord import PodRecord


class ExtendedResources:
    name = "ExtendedResources"
    reads_pods = True

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        assert rec.request is not None
        if not any(amount > 0 for amount in rec.request.extended.values()):
            return Verdict(PASS)
        nodes = len(ctx.cache.serves_fractions)
        passes = np.ones(nodes, dtype=bool)
        per_node = np.full(nodes, None, dtype=object)
        for name, amount in rec.request.extended.items():
            if amount <= 0:
                continue
            alloc = ctx.cache.charges.ext_alloc.get(name) if ctx.cache.charges is not None else None
            fits = np.zeros(nodes, dtype=bool) if alloc is None else alloc - ctx.ext_used[name] >= amount
            per_node[passes & ~fits] = f"Insufficient {name}"
            passes &= fits
        return Verdict(passes, per_node=per_node)
