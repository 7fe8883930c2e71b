"""The node agent: discovery, device plugins, kubelet registration, health and node publishing, wired.

    agent = Agent(config, backend, api)
    agent.start()        # raises DiscoveryError when the node's GPUs cannot be read
    ...
    agent.stop()

Threads: one registrar (kubelet restarts), one health monitor (events and
rediscovery), one node publisher (annotations, GPU memory), with
`--mig-dynamic` one MIG plan watcher, plus each plugin's gRPC server.
`stop()` ends them all and removes our sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tessellate.agent.claims import Claims, KubePods, PodSource
from tessellate.agent.devices import MODES, served_resources
from tessellate.agent.discovery import Backend
from tessellate.agent.health import HealthMonitor
from tessellate.agent.holdings import TESSELLATE
from tessellate.agent.inventory import Gpu
from tessellate.agent.kubelet import Registrar
from tessellate.agent.migplan import MigPlanApplier
from tessellate.agent.migwatch import MigPlanWatcher
from tessellate.agent.mps import MpsDaemon
from tessellate.agent.node import NodePublisher
from tessellate.agent.plugin import DevicePluginService, PluginServer
from tessellate.agent.responses import RuntimeOptions
from tessellate.agent.state import DeviceState, Snapshot

from tessellate.kube import KubeClient

log = logging.getLogger("tessellate.agent")

DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"


@dataclass
class AgentConfig:
    node_name: str
    mode: str = "fractions"
    device_plugin_dir: Path = DEVICE_PLUGIN_DIR
    poll_seconds: float = 1.0
    """How often to check for a restarted kubelet."""
    rediscover_seconds: float = 60.0
    resync_seconds: float = 60.0
    """How often the Node object is checked even when nothing changed."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    mig_dynamic: bool = False
    """Apply the scheduler's MIG plans (`tessellate.dev/mig-plan`) on this node."""
    mig_plan_poll_seconds: float = 1.0
    mps: MpsDaemon | None = None
    """The MPS control daemon to run and supervise (`--mps-daemon`); None: not our job."""
    scheduler_name: str = TESSELLATE
    """The Tessellate scheduler's name (`--scheduler-name`): only pods with this
    spec.schedulerName have their tessellate.dev/assignment honoured."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mig_dynamic and self.mode != "full":
            raise ValueError(
                "--mig-dynamic needs --mode full: the instances it creates are served as "
                "nvidia.com/mig-<profile>, which only --mode full does"
            )
        if not self.node_name:
            raise ValueError("the agent needs its node's name (--node-name or $NODE_NAME)")
        if not self.scheduler_name:
            raise ValueError(
                "--scheduler-name must not be empty: give the schedulerName of the Tessellate "
                "scheduler (default tessellate)"
            )

    @property
    def kubelet_socket(self) -> Path:
        return self.device_plugin_dir / KUBELET_SOCKET


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        backend: Backend,
        api: KubeClient | None,
        pods: PodSource | None = None,
    ):
        if pods is None and api is None:
            raise ValueError("the agent needs an API client or a pod source")
        self.config = config
        self.backend = backend
        self.api = api
        self.pods = pods or KubePods(api, config.node_name)  # type: ignore[arg-type]
        self.stopping = threading.Event()
        self.state: DeviceState | None = None
        self.servers: list[PluginServer] = []
        self.registrar: Registrar | None = None
        self.health: HealthMonitor | None = None
        self.publisher: NodePublisher | None = None
        self.mig_watcher: MigPlanWatcher | None = None
        self.lock = threading.Lock()
        """Shared by every plugin's Allocate and the MIG plan watcher."""
        self._threads: list[threading.Thread] = []

    def _uuid_of_index(self, index: int) -> str | None:
        assert self.state is not None
        gpus = self.state.snapshot().inventory.gpus
        return gpus[index].uuid if 0 <= index < len(gpus) else None

    def _gpu_at(self, index: int) -> Gpu | None:
        assert self.state is not None
        gpus = self.state.snapshot().inventory.gpus
        return gpus[index] if 0 <= index < len(gpus) else None

    def start(self) -> None:
        inventory = self.backend.discover()
        log.info(
            "found %d GPUs (%s) via %s",
            len(inventory.gpus),
            ", ".join(sorted({g.model for g in inventory.gpus})) or "none",
            inventory.source,
        )
        if self.config.mps is not None:
            self.config.mps.start()  # before any socket exists: a failure leaves nothing behind
        self.state = state = DeviceState(inventory)
        claims = Claims(self.pods, self._uuid_of_index, self._gpu_at, self.config.scheduler_name)
        lock = self.lock
        self.config.device_plugin_dir.mkdir(parents=True, exist_ok=True)
        for resource in served_resources(self.config.mode, inventory):
            service = DevicePluginService(resource, state, claims, self.config.runtime, lock, self.stopping)
            server = PluginServer(service, self.config.device_plugin_dir)
            server.start()
            self.servers.append(server)
        self.registrar = Registrar(self.servers, self.config.kubelet_socket, self.config.poll_seconds)
        self.health = HealthMonitor(self.backend, state, self.config.rediscover_seconds)
        self._spawn("registrar", self.registrar.run)
        self._spawn("health", self.health.run)
        if self.config.mps is not None:
            self._spawn("mps", self.config.mps.run)
        if self.api is not None:
            self.publisher = NodePublisher(
                self.api,
                self.config.node_name,
                state,
                self.config.resync_seconds,
                mig_dynamic=self.config.mig_dynamic,
            )
            self._spawn("node-publisher", self.publisher.run)
            if self.config.mig_dynamic:
                applier = MigPlanApplier(self.backend, self._rediscover)
                self.mig_watcher = MigPlanWatcher(
                    self.api,
                    self.config.node_name,
                    state,
                    applier,
                    self.publisher,
                    self.pods,
                    self.lock,
                    self.config.mig_plan_poll_seconds,
                    users=claims.gpu_users,
                )
                self._spawn("mig-plans", self.mig_watcher.run)
        elif self.config.mig_dynamic:
            log.warning("--mig-dynamic needs the API server (to read plans); not watching for them")

    def _rediscover(self) -> Snapshot:
        assert self.health is not None and self.state is not None
        self.health.rediscover()
        return self.state.snapshot()

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stopping,), name=f"agent-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.backend.interrupt()
        if self.state is not None:
            self.state.wake()
        for server in self.servers:
            server.stop()
            server.socket.unlink(missing_ok=True)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.config.mps is not None:
            self.config.mps.leave()
        self.backend.close()
