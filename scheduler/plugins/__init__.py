"""Filter plugins, one module each; `FILTER_PLUGINS` maps the names a profile uses to them.

The default profile (`DEFAULT_FILTERS`) runs them in kube-scheduler's order: node
constraints (cordon, taints, node affinity), node health, the GPU resource the node
serves, extended resources, inter-pod anti-affinity, then the pod's queue limits.
"""

from __future__ import annotations

from tessellate.scheduler.plugins.extended_resources import ExtendedResources
from tessellate.scheduler.plugins.gpu_resource import FractionsNeedAgent, ReplicaResource
from tessellate.scheduler.plugins.node_constraints import NodeConstraints
from tessellate.scheduler.plugins.node_health import NodeHealth
from tessellate.scheduler.plugins.pod_anti_affinity import PodAntiAffinity
from tessellate.scheduler.plugins.queue_limit import QueueLimit

FILTER_PLUGINS = {
    plugin.name: plugin
    for plugin in (
        NodeConstraints,
        NodeHealth,
        FractionsNeedAgent,
        ReplicaResource,
        ExtendedResources,
        PodAntiAffinity,
        QueueLimit,
    )
}
DEFAULT_FILTERS: tuple[str, ...] = tuple(FILTER_PLUGINS)
