"""Multi-tenant queues: quotas, limits and fair sharing of GPUs per model (no Kubernetes, no I/O).

`spec` parses Queue specs (the CRD's spec form), `tree` validates the hierarchy, `units`
turns placements into GPU units, `book` keeps per-queue usage and answers limit and
quota questions, `fairshare` and `order` decide who gets idle GPUs and who goes first,
`reclaim` picks the borrowed pods to preempt, `nodes` turns limits into node masks for
`Placer`. The live scheduler and the simulator drive the same objects.
"""

from tessellate.placement.preemption import Candidate, Victims, fewest_victims, victim_order
from tessellate.placement.quota.book import GPU_RESOURCE, Charge, QuotaBook, QuotaBookError
from tessellate.placement.quota.fairshare import Claim, fair_shares, water_fill
from tessellate.placement.quota.nodes import NodeKind, NodeKinds, blocking_messages, gpu_capacity, quota_mask
from tessellate.placement.quota.order import dominant_ratio, pod_order, queue_key, queue_order
from tessellate.placement.quota.reclaim import reclaim
from tessellate.placement.quota.spec import (
    ANY_MODEL,
    DEFAULT_QUEUE,
    QUEUE_LABEL,
    QueueSpec,
    QueueSpecError,
    ResourceQuota,
    parse_queue,
    parse_queues,
)
from tessellate.placement.quota.tree import QueueTree, UnknownQueueError
from tessellate.placement.quota.units import format_units, placed_units, request_units

__all__ = [
    "ANY_MODEL",
    "DEFAULT_QUEUE",
    "GPU_RESOURCE",
    "QUEUE_LABEL",
    "Candidate",
    "Charge",
    "Claim",
    "NodeKind",
    "NodeKinds",
    "QueueSpec",
    "QueueSpecError",
    "QueueTree",
    "QuotaBook",
    "QuotaBookError",
    "ResourceQuota",
    "UnknownQueueError",
    "Victims",
    "blocking_messages",
    "dominant_ratio",
    "fair_shares",
    "fewest_victims",
    "format_units",
    "gpu_capacity",
    "parse_queue",
    "parse_queues",
    "placed_units",
    "pod_order",
    "queue_key",
    "queue_order",
    "quota_mask",
    "reclaim",
    "request_units",
    "victim_order",
    "water_fill",
]
