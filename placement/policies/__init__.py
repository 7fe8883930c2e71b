"""Placement policies, registered by their command-line names."""

from tessellate.placement.policies import classic, fgd, tessellate, topology_aware  # noqa: F401 - registration side effect
from tessellate.placement.policies.base import POLICIES, Policy, PolicyContext, create_policy

PAPER_POLICIES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd")
"""The six policies of the FGD paper, in the paper's order."""

__all__ = ["PAPER_POLICIES", "POLICIES", "Policy", "PolicyContext", "create_policy"]
