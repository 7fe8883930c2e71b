"""Tessellate's node agent: a kubelet device plugin that hands pods the GPUs the scheduler chose.

One module per job (docs/agent.md explains the behaviour):

    inventory.py     what discovery found (GPUs, MIG instances, NVLink matrix)
    discovery.py     the backend contract, DiscoveryError, HealthEvent
    nvml.py          the NVML backend (nvidia-ml-py)
    fake.py          the YAML backend for tests and simulated nodes
    state.py         current inventory + health, versioned, with waiting
    devices.py       resources served (whole GPUs, milli shares, MIG profiles) and their device IDs
    claims.py        which pod/container an Allocate is for, and its assigned GPUs
    holdings.py      what the node's live pods hold (GPUs, shares, MIG devices), and whom to trust
    responses.py     env vars, mounts and CDI names for a container
    plugin.py        the DevicePlugin gRPC service and its unix-socket server
    kubelet.py       registration, and re-registration after kubelet restarts
    health.py        health events and periodic rediscovery
    migplan.py       applying one MIG plan to the GPUs (enable MIG mode, create instances)
    migwatch.py      watching the Node for MIG plans and answering them (--mig-dynamic)
    mps.py           running and supervising the MPS control daemon (--mps-daemon)
    annotation.py    the tessellate.dev/gpu-topology and gpu-devices annotations
    node.py          writing those, and GPU memory capacity, on the Node
    agent.py         wiring it all together
    fake_kubelet.py  a kubelet stand-in speaking the real API (tests, local trials)
    proto/           the v1beta1 .proto and its committed stubs
"""
