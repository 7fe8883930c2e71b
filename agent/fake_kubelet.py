"""A stand-in for the kubelet's device manager, speaking the real gRPC API over unix sockets.

It serves `Registration` on `<dir>/kubelet.sock`; when a plugin registers it
dials the plugin's socket back, asks for its options and keeps a ListAndWatch
stream open, exactly the calls the kubelet makes. Tests (and anyone trying
the agent on a laptop) then drive admission with `allocate` and
`preferred_allocation`, and simulate a kubelet restart with `restart()`, which
like the real one deletes every socket in the directory and creates a new
kubelet.sock.

`on_devices(resource, devices)` is called on every ListAndWatch update; the
integration tests use it to write node capacity the way the kubelet would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tessellate.agent.proto import API_VERSION
from tessellate.agent.proto import deviceplugin_pb2 as pb
from tessellate.agent.proto import deviceplugin_pb2_grpc as pb_grpc


@dataclass
class Endpoint:
    """One registered plugin, as the kubelet keeps it."""

    request: pb.RegisterRequest
    channel: grpc.Channel
    stub: pb_grpc.DevicePluginStub
    options: pb.DevicePluginOptions
    devices: list[pb.Device] = field(default_factory=list)
    updates: int = 0
    stream: grpc.Future | None = None


class FakeKubelet(pb_grpc.RegistrationServicer):
    def __init__(
        self,
        directory: Path,
        on_devices: Callable[[str, list[pb.Device]], None] | None = None,
        accept: Callable[[pb.RegisterRequest], str | None] | None = None,
    ):
        self.directory = Path(directory)
        self.socket = self.directory / "kubelet.sock"
        self.on_devices = on_devices
        self.accept = accept
        """Return an error message to refuse a registration (None accepts it)."""
        self.endpoints: dict[str, Endpoint] = {}
        self.registrations: list[pb.RegisterRequest] = []
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubelet:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-kubelet"))
        pb_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        with self._cond:
            endpoints, self.endpoints = list(self.endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.channel.close()
        self.socket.unlink(missing_ok=True)

    def restart(self) -> None:
        """What a kubelet restart looks like to plugins: every socket deleted, a new kubelet.sock."""
        self.stop()
        for path in self.directory.iterdir():
            if path.is_socket():
                path.unlink()
        self.start()

    # -- the Registration service ------------------------------------------------------------

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        if request.version != API_VERSION:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported API version {request.version!r}")
        refusal = self.accept(request) if self.accept else None
        if refusal:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
        channel = grpc.insecure_channel(f"unix://{self.directory / request.endpoint}")
        stub = pb_grpc.DevicePluginStub(channel)
        options = stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        endpoint = Endpoint(request, channel, stub, options)
        with self._cond:
            old = self.endpoints.get(request.resource_name)
            self.endpoints[request.resource_name] = endpoint
            self.registrations.append(request)
            self._cond.notify_all()
        if old is not None:
            old.channel.close()
        threading.Thread(
            target=self._watch, args=(endpoint,), name=f"fake-kubelet-{request.resource_name}", daemon=True
        ).start()
        return pb.Empty()

    def _watch(self, endpoint: Endpoint) -> None:
        try:
            for response in endpoint.stub.ListAndWatch(pb.Empty()):
                devices = list(response.devices)
                with self._cond:
                    endpoint.devices = devices
                    endpoint.updates += 1
                    self._cond.notify_all()
                if self.on_devices is not None:
                    self.on_devices(endpoint.request.resource_name, devices)
        except (grpc.RpcError, ValueError):
            # The plugin went away or we closed the channel (ValueError: closed before this
            # watch began, when a re-registration came quickly); a new Register starts a new watch.
            pass

    # -- what tests look at ------------------------------------------------------------------

    def wait(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "a condition") -> None:
        """Block until `condition()` holds (checked whenever a registration or update arrives)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake kubelet: timed out after {timeout:.0f}s waiting for {what}")
                self._cond.wait(left)

    def wait_registered(self, resources: Sequence[str], count: int = 1, timeout: float = 10.0) -> None:
        """Until each resource has registered `count` times in all."""

        def done() -> bool:
            names = [r.resource_name for r in self.registrations]
            return all(names.count(r) >= count for r in resources)

        self.wait(done, timeout, f"{count} registration(s) of {', '.join(resources)}")

    def devices(self, resource: str) -> list[pb.Device]:
        with self._cond:
            endpoint = self.endpoints.get(resource)
            return list(endpoint.devices) if endpoint else []

    def wait_devices(
        self, resource: str, condition: Callable[[list[pb.Device]], bool], timeout: float = 10.0
    ) -> list[pb.Device]:
        def done() -> bool:
            endpoint = self.endpoints.get(resource)
            return endpoint is not None and endpoint.updates > 0 and condition(endpoint.devices)

        self.wait(done, timeout, f"{resource} devices to match")
        return self.devices(resource)

    def _stub(self, resource: str) -> pb_grpc.DevicePluginStub:
        with self._cond:
            endpoint = self.endpoints.get(resource)
        if endpoint is None:
            raise KeyError(f"no plugin registered for {resource}")
        return endpoint.stub

    # -- admission ---------------------------------------------------------------------------

    def preferred_allocation(
        self, resource: str, available: Sequence[str], size: int, must_include: Sequence[str] = ()
    ) -> list[str]:
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available),
                    must_include_deviceIDs=list(must_include),
                    allocation_size=size,
                )
            ]
        )
        response = self._stub(resource).GetPreferredAllocation(request, timeout=30)
        return list(response.container_responses[0].deviceIDs)

    def allocate(self, resource: str, device_ids: Sequence[str]) -> pb.ContainerAllocateResponse:
        """One container's Allocate; raises grpc.RpcError when the plugin refuses."""
        request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=list(device_ids))]
        )
        response = self._stub(resource).Allocate(request, timeout=30)
        return response.container_responses[0]

    def healthy_ids(self, resource: str) -> list[str]:
        return [d.ID for d in self.devices(resource) if d.health == "Healthy"]
