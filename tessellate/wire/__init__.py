"""The annotations the scheduler and the node agent exchange, one module per format.

Both binaries import these and nothing else decides the JSON: `assignment`
(`tessellate.dev/assignment`, written with the Binding, read by the agent's
Allocate), `migplan` (`tessellate.dev/mig-plan` and its status, the dynamic MIG
handshake), `topology` (`tessellate.dev/gpu-topology`, written by the agent,
read into the placement core's `NodeTopology`) and `devices` (`tessellate.dev/gpu-devices`:
health and MIG instances). The placement core knows no
Kubernetes and no annotation.
"""
