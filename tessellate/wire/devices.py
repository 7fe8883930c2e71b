"""The `tessellate.dev/gpu-devices` annotation: what the topology schema has no place for.

Written by the node agent (`agent/annotation.py`), read by the scheduler
(`scheduler/nodes.py`): per GPU its model, memory, health, MIG mode and instances,
and the driver version; `"mig_dynamic": true` at the top says the agent applies MIG
plans. The scheduler reads health and the MIG instances (positions) and quarantines a
node whose annotation does not parse.
"""

DEVICES = "tessellate.dev/gpu-devices"
DEVICES_VERSION = 1
