"""What the kubelet passes to the container runtime for one container's GPUs.

Whole GPUs and fractions both name the GPUs by UUID, either as the
`NVIDIA_VISIBLE_DEVICES` variable that the NVIDIA container runtime reads
(`envvar`, the default) or as CDI device names `nvidia.com/gpu=<uuid>` (`cdi`,
for nodes with CDI specs from `nvidia-ctk cdi generate`).

A fraction also gets CUDA MPS client limits, so that its share is enforced by
the MPS server rather than only counted by the scheduler:

* `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`: milli / 10, rounded up (250 -> 25 %);
* `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`: `0=<MiB>M` when the pod asked for GPU
  memory (device 0 is the only GPU the container sees);
* with `--mps-pipe-dir`, that directory is mounted into the container and
  `CUDA_MPS_PIPE_DIRECTORY` points at it, so the container reaches the node's
  MPS control daemon. Without an MPS daemon on the node the limits are ignored
  by CUDA and the share is only accounted.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessellate.agent.claims import Claim
from tessellate.agent.proto import deviceplugin_pb2 as pb

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
MPS_THREADS = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
MPS_MEMORY = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
MPS_PIPE = "CUDA_MPS_PIPE_DIRECTORY"
STRATEGIES = ("envvar", "cdi")


@dataclass(frozen=True)
class RuntimeOptions:
    device_list_strategy: str = "envvar"
    cdi_kind: str = "nvidia.com/gpu"
    mps_pipe_dir: str = ""
    """Host directory of the MPS control daemon's pipes; empty: do not mount one."""

    def __post_init__(self) -> None:
        if self.device_list_strategy not in STRATEGIES:
            raise ValueError(f"device list strategy must be one of {', '.join(STRATEGIES)}")


def thread_percentage(milli: int) -> int:
    """The MPS active-thread cap for a share, never below 1 %."""
    return max(1, -(-milli // 10))


def container_response(claim: Claim, options: RuntimeOptions) -> pb.ContainerAllocateResponse:
    envs: dict[str, str] = {}
    response = pb.ContainerAllocateResponse()
    if options.device_list_strategy == "envvar":
        envs[VISIBLE_DEVICES] = ",".join(claim.uuids)
    else:
        response.cdi_devices.extend(pb.CDIDevice(name=f"{options.cdi_kind}={u}") for u in claim.uuids)
    if claim.milli is not None:
        envs[MPS_THREADS] = str(thread_percentage(claim.milli))
        if claim.memory_mib:
            envs[MPS_MEMORY] = f"0={claim.memory_mib}M"
        if options.mps_pipe_dir:
            envs[MPS_PIPE] = options.mps_pipe_dir
            response.mounts.append(
                pb.Mount(container_path=options.mps_pipe_dir, host_path=options.mps_pipe_dir, read_only=False)
            )
    response.envs.update(envs)
    response.annotations["tessellate.dev/gpus"] = ",".join(claim.uuids)
    return response
