"""Queue limits as a filter: nodes whose GPU model would take the pod's queue past a limit.

A limit is per GPU model, so a pod whose queue has reached its H100 limit may still run
on an A100 node: the answer is a node mask (`placement.quota.quota_mask`), and the
failing nodes carry the queue's message, e.g. `queue team-a: limit 24 nvidia.com/gpu
(H100-80GB) reached (22 in use, pod asks 4)`. Before any Queue exists it passes all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessellate.scheduler.framework import PASS, FilterContext, Verdict

if TYPE_CHECKING:
    from tessellate.scheduler.podrecord import PodRecord


class QueueLimit:
    name = "QueueLimit"
    reads_pods = True  # other pods' usage decides; preemption's what-if frees it

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        tenancy = ctx.cache.tenancy
        if not tenancy.active:
            return Verdict(PASS)
        mask, reason = tenancy.limit_mask(ctx.cache, rec)
        return Verdict(PASS) if mask is None else Verdict(mask, reason)
