"""Which GPU resource a node serves: fractions need the node agent
(`tessellate.dev/gpu-milli` allocatable); time-sliced replicas renamed
`nvidia.com/gpu.shared` serve only pods that ask for that name, and no others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessellate.scheduler.framework import PASS, FilterContext, Verdict

from tessellate.wire.podspec import GPU, GPU_SHARED

if TYPE_CHECKING:
    from tessellate.scheduler.podrecord import PodRecord

REASON_NO_FRACTIONS = "Insufficient tessellate.dev/gpu-milli (no Tessellate node agent)"


class FractionsNeedAgent:
    name = "FractionsNeedAgent"
    reads_pods = False

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        assert rec.request is not None
        if not rec.request.request.is_fraction:
            return Verdict(PASS)
        return Verdict(ctx.cache.serves_fractions, REASON_NO_FRACTIONS)


class ReplicaResource:
    name = "ReplicaResource"
    reads_pods = False

    def filter(self, ctx: FilterContext, rec: PodRecord) -> Verdict:
        assert rec.request is not None
        renamed = ctx.cache.renamed_replicas
        if not rec.request.request.gpu_count or (not renamed.any() and not rec.request.shared_replicas):
            return Verdict(PASS)
        if rec.request.shared_replicas:
            return Verdict(renamed, f"Insufficient {GPU_SHARED}")
        return Verdict(~renamed, f"Insufficient {GPU}")
