"""Tessellate's placement core: pure bin-packing of pods onto nodes and GPUs.

No Kubernetes and no I/O here: the live scheduler and the simulator are two
drivers of the same `Placer`.
"""

from tessellate.placement.cycle import Placer
from tessellate.placement.fragmentation import Fragmentation, FragmentationTracker, TargetWorkload
from tessellate.placement.migplace import MigChooser
from tessellate.placement.model import (
    MAX_GPUS_PER_NODE,
    MAX_QUANTITY,
    MILLI_PER_GPU,
    Assignment,
    Decision,
    InvalidRequestError,
    MigPlan,
    MigSlot,
    MigSpec,
    NodeSpec,
    Request,
    Unschedulable,
)
from tessellate.placement.policies import PAPER_POLICIES, POLICIES, Policy, PolicyContext, create_policy
from tessellate.placement.rng import IntSource, NumpyInts
from tessellate.placement.state import ClusterState, OverCommitError

__all__ = [
    "MAX_GPUS_PER_NODE",
    "MAX_QUANTITY",
    "MILLI_PER_GPU",
    "PAPER_POLICIES",
    "POLICIES",
    "Assignment",
    "ClusterState",
    "Decision",
    "Fragmentation",
    "FragmentationTracker",
    "IntSource",
    "InvalidRequestError",
    "MigChooser",
    "MigPlan",
    "MigSlot",
    "MigSpec",
    "NodeSpec",
    "NumpyInts",
    "OverCommitError",
    "Placer",
    "Policy",
    "PolicyContext",
    "Request",
    "TargetWorkload",
    "Unschedulable",
    "create_policy",
]
