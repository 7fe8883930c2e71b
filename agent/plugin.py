"""One kubelet device plugin: a gRPC server on a unix socket for one extended resource.

ListAndWatch streams the full device list and again whenever health or the
inventory changes. GetPreferredAllocation and Allocate both look up the pod
being admitted (`claims.py`): the preference is the devices of the GPUs the
scheduler assigned, and Allocate hands the container exactly those GPUs
whatever device IDs the kubelet settled on, because the kubelet only counts
devices while the scheduler's choice is what the cluster-wide placement relied
on. A pod without a trusted assignment gets the kubelet's pick, with devices
another pod holds swapped for free healthy ones; nothing another live pod
holds is handed out (`holdings.py`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from tessellate.agent.claims import Claim, ClaimError, Claims
from tessellate.agent.devices import HEALTHY, AnyResource, MigResource, gpu_of
from tessellate.agent.proto import API_VERSION
from tessellate.agent.proto import deviceplugin_pb2 as pb
from tessellate.agent.proto import deviceplugin_pb2_grpc as pb_grpc
from tessellate.agent.responses import RuntimeOptions, container_response
from tessellate.agent.state import DeviceState

from tessellate.kube import ApiError

log = logging.getLogger("tessellate.agent.plugin")

STREAM_CHECK_SECONDS = 1.0
UNIX_SOCKET_PATH_MAX = 107
"""Bytes a unix socket's path may have (sun_path holds 108 with the terminating NUL)."""


class SocketPathError(ValueError):
    """The device-plugin directory is too deep for a unix socket path."""


"""How often an idle ListAndWatch stream checks whether the kubelet hung up or we stop."""


class DevicePluginService(pb_grpc.DevicePluginServicer):
    def __init__(
        self,
        resource: AnyResource,
        state: DeviceState,
        claims: Claims,
        options: RuntimeOptions,
        lock: threading.Lock,
        stopping: threading.Event,
    ):
        self.resource = resource
        self.state = state
        self.claims = claims
        self.options = options
        self.lock = lock
        """Shared by every plugin of the agent: one pod is admitted at a time anyway."""
        self.stopping = stopping

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        context.add_callback(self.state.wake)
        sent_version = 0
        sent: list[pb.Device] | None = None
        while context.is_active() and not self.stopping.is_set():
            snapshot = self.state.wait(sent_version, STREAM_CHECK_SECONDS, self.stopping)
            if snapshot.version == sent_version:
                continue
            sent_version = snapshot.version
            devices = self.resource.devices(snapshot)
            if devices == sent:
                continue
            sent = devices
            unhealthy = sum(d.health != "Healthy" for d in devices)
            log.info("%s: sending %d devices (%d unhealthy)", self.resource.name, len(devices), unhealthy)
            yield pb.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        responses = []
        with self.lock:
            try:
                pods = self.claims.source.pods()
            except (ApiError, OSError) as exc:
                log.warning("%s: no preference, cannot read pods: %s", self.resource.name, exc)
                pods = []
            for req in request.container_requests:
                preferred = self._preferred(req, pods)
                responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=preferred))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def _preferred(self, req: pb.ContainerPreferredAllocationRequest, pods: list) -> list[str]:
        size = req.allocation_size
        chosen = list(req.must_include_deviceIDs)
        must = set(chosen)
        available = [d for d in req.available_deviceIDs if d not in must]
        wanted: tuple[str, ...] = ()
        try:
            found = self.claims.next_slot(self.resource.name, size, pods)
            if found is not None:
                pod, slot = found
                name = self.resource.name
                claim = self.claims.claim_for(pod, slot, name, available[:size], gpu_of, pods, available)
                wanted = claim.uuids  # assigned, or the kubelet's pick with held devices swapped out
        except ClaimError as exc:
            log.warning("%s: no preference: %s", self.resource.name, exc)
        # The wanted GPUs' devices first, then whatever keeps the rest simple: in order.
        rank = {u: r for r, u in enumerate(wanted)}
        available.sort(key=lambda d: (rank.get(gpu_of(d), len(rank)),))
        for device in available:
            if len(chosen) >= size:
                break
            chosen.append(device)
        return chosen

    def Allocate(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> pb.AllocateResponse:
        responses = []
        with self.lock:
            for req in request.container_requests:
                requested = list(req.devices_ids)
                try:
                    self._check_devices(requested)
                    claim = self.claims.find(self.resource.name, requested, gpu_of, self._healthy())
                    self._check_gpus(claim)
                except ClaimError as exc:
                    log.error(
                        "%s: Allocate of %d devices refused: %s", self.resource.name, len(requested), exc
                    )
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                except (ApiError, OSError) as exc:
                    message = f"cannot read this node's pods from the API server: {exc}"
                    log.error("%s: Allocate failed: %s", self.resource.name, message)
                    context.abort(grpc.StatusCode.UNAVAILABLE, message)
                self._log(claim, requested)
                self.claims.served(claim)
                responses.append(container_response(claim, self.options))
        return pb.AllocateResponse(container_responses=responses)

    def _healthy(self) -> list[str]:
        """This resource's healthy device IDs: what a pod without an assignment may be moved to."""
        return [d.ID for d in self.resource.devices(self.state.snapshot()) if d.health == HEALTHY]

    def _check_devices(self, requested: list[str]) -> None:
        unknown = self.resource.unknown(requested, self.state.snapshot())
        if unknown:
            what = "MIG devices" if isinstance(self.resource, MigResource) else "device IDs of GPUs"
            raise ClaimError(f"{what} this node does not serve as {self.resource.name}: {', '.join(unknown)}")

    def _check_gpus(self, claim: Claim) -> None:
        snapshot = self.state.snapshot()
        if isinstance(self.resource, MigResource):
            self._check_mig(claim)
            return
        for uuid in claim.uuids:
            gpu = snapshot.inventory.by_uuid(uuid)
            if gpu is None:
                raise ClaimError(f"{claim.describe()} is assigned {uuid}, which is not on this node")
            if gpu.mig_enabled:
                raise ClaimError(f"{claim.describe()} is assigned {uuid}, which is in MIG mode")
            if not snapshot.healthy(uuid):
                raise ClaimError(
                    f"{claim.describe()} is assigned {uuid}, which is unhealthy: {snapshot.reason(uuid)}"
                )

    def _check_mig(self, claim: Claim) -> None:
        snapshot = self.state.snapshot()
        for uuid in claim.uuids:
            found = snapshot.inventory.mig_by_uuid(uuid)
            if found is None:
                raise ClaimError(f"{claim.describe()} is given MIG device {uuid}, which is not on this node")
            gpu, _ = found
            for which in (gpu.uuid, uuid):
                if not snapshot.healthy(which):
                    raise ClaimError(
                        f"{claim.describe()} is given MIG device {uuid} of GPU {gpu.index}, which is "
                        f"unhealthy: {snapshot.reason(which)}"
                    )

    def _log(self, claim: Claim, requested: list[str]) -> None:
        picked = list(dict.fromkeys(gpu_of(d) for d in requested))
        if not claim.assigned:
            log.info(
                "%s: %s has no trusted assignment; gave it %s (the kubelet picked %s)",
                self.resource.name,
                claim.describe(),
                list(claim.uuids),
                picked,
            )
        elif sorted(picked) != sorted(claim.uuids):
            log.info(
                "%s: %s gets its assigned GPUs %s (the kubelet picked devices of %s)",
                self.resource.name,
                claim.describe(),
                list(claim.uuids),
                picked,
            )
        else:
            log.info("%s: %s gets %s", self.resource.name, claim.describe(), list(claim.uuids))

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_ctime_ns)


class PluginServer:
    """The gRPC server for one resource; restartable (a kubelet restart deletes our socket)."""

    def __init__(self, service: DevicePluginService, directory: Path, workers: int = 4):
        self.service = service
        self.directory = directory
        self.socket = directory / service.resource.endpoint
        self.workers = workers
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def resource(self) -> AnyResource:
        return self.service.resource

    def start(self) -> None:
        size = len(os.fsencode(self.socket))
        if size > UNIX_SOCKET_PATH_MAX:
            raise SocketPathError(
                f"device-plugin socket {self.socket} is {size} bytes long and unix sockets allow "
                f"{UNIX_SOCKET_PATH_MAX}; use a shorter --device-plugin-dir"
            )
        self.stop()
        self.socket.unlink(missing_ok=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.socket.stem)
        )
        pb_grpc.add_DevicePluginServicer_to_server(self.service, server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        self._identity = _identity(self.socket)

    def alive(self) -> bool:
        """False once our socket file is gone or replaced (the kubelet restarted and cleaned up)."""
        return self._server is not None and _identity(self.socket) == self._identity

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def register(self, kubelet_socket: Path, timeout: float = 10.0) -> None:
        """Tell the kubelet about this plugin; raises grpc.RpcError when it says no."""
        request = pb.RegisterRequest(
            version=API_VERSION,
            endpoint=self.socket.name,
            resource_name=self.resource.name,
            options=pb.DevicePluginOptions(get_preferred_allocation_available=True),
        )
        with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
            pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout)
