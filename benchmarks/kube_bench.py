"""Building blocks of benchmarks/scheduler_throughput.py.

A fresh control plane per scheduler (scripts/control-plane with its own state
dir), the synthetic GPU cluster and its whole-GPU workload, a watch that
timestamps every bind, the two schedulers as child processes, quantiles from a
Prometheus histogram, and the FGD fragmentation of the final placement.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import urllib3
import yaml
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    Fragmentation,
    NodeSpec,
    Request,
    TargetWorkload,
)
from tessellate.placement.state import OverCommitError

from tessellate.kube import ApiError, KubeClient

REPO = Path(__file__).resolve().parents[1]
CONTROL_PLANE = REPO / "scripts" / "control-plane"
sys.path.insert(0, str(REPO / "tests"))
from integration import cluster  # noqa: E402  (the integration tests' node and pod builders)

# ---------------------------------------------------------------- the synthetic cluster and workload

NODE_CPU = 96
NODE_MEMORY_GI = 768
NODE_GPUS = 8
NODE_MAX_PODS = 110
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
STATE_GPU_MODEL = "A100-80GB"
"""Only a name to the fragmentation code: every node has the same model."""
CPU_PER_GPU = 10
MEMORY_GI_PER_GPU = 80
"""Per requested GPU; below the node's 12 CPU / 96 GiB per GPU, so GPUs run out first."""
GPU_SIZES = (1, 2, 4, 8)
NAMESPACE = "bench"
ASSIGNMENT_ANNOTATION = "tessellate.dev/assignment"


def effective_mix(base: Sequence[float], mean_gpus: float) -> tuple[tuple[float, ...], bool]:
    """Weights over GPU_SIZES whose mean GPU count is `mean_gpus`.

    The base mix is blended with the 1-GPU shape (to lower the mean) or with
    the 8-GPU shape (to raise it), so the relative shares of the other sizes
    stay as given. Returns (weights, exact); exact is False when the target
    mean is outside 1..8 and the nearest one-size mix is used instead.
    """
    w = np.asarray(base, dtype=float)
    w = w / w.sum()
    sizes = np.asarray(GPU_SIZES, dtype=float)
    base_mean = float(w @ sizes)
    lo, hi = sizes[0], sizes[-1]
    exact = bool(lo <= mean_gpus <= hi)
    target = min(max(mean_gpus, lo), hi)
    point = np.zeros_like(w)
    if target <= base_mean:
        point[0] = 1.0
        share = 1.0 if base_mean == lo else (target - lo) / (base_mean - lo)
    else:
        point[-1] = 1.0
        share = (hi - target) / (hi - base_mean)
    mixed = share * w + (1 - share) * point
    return tuple(float(x) for x in mixed), exact


@dataclass(frozen=True)
class Workload:
    """The benchmark's cluster (identical nodes) and pods (whole GPUs, in creation order)."""

    node_names: tuple[str, ...]
    pod_names: tuple[str, ...]
    pod_gpus: tuple[int, ...]
    base_mix: tuple[float, ...]
    mix: tuple[float, ...]
    mix_exact: bool
    seed: int

    @property
    def capacity_gpus(self) -> int:
        return len(self.node_names) * NODE_GPUS

    @property
    def demand_gpus(self) -> int:
        return sum(self.pod_gpus)

    def request(self, gpus: int) -> Request:
        return Request(
            cpu_milli=CPU_PER_GPU * gpus * 1000,
            memory_mib=MEMORY_GI_PER_GPU * gpus * 1024,
            gpu_count=gpus,
            gpu_milli=MILLI_PER_GPU,
        )

    def requests(self) -> dict[str, Request]:
        return {name: self.request(g) for name, g in zip(self.pod_names, self.pod_gpus, strict=True)}

    def shape_counts(self) -> dict[int, int]:
        counts = Counter(self.pod_gpus)
        return {g: counts.get(g, 0) for g in GPU_SIZES}

    def pod_objects(self, scheduler_name: str, queues: int = 0) -> list[dict[str, Any]]:
        """The pods; with `queues`, labelled round-robin into tenant queues q0, q1, ..."""
        pods = []
        for i, (name, gpus) in enumerate(zip(self.pod_names, self.pod_gpus, strict=True)):
            res = {
                "cpu": str(CPU_PER_GPU * gpus),
                "memory": f"{MEMORY_GI_PER_GPU * gpus}Gi",
                "nvidia.com/gpu": str(gpus),
            }
            pod = cluster.pod(name, NAMESPACE, limits=res, requests=dict(res), scheduler=scheduler_name)
            if queues:
                pod["metadata"]["labels"] = {"tessellate.dev/queue": f"q{i % queues}"}
            pods.append(pod)
        return pods


def make_workload(nodes: int, pods: int, seed: int, base_mix: Sequence[float], demand: float) -> Workload:
    """Seeded pods whose expected GPU demand is `demand` x the cluster's GPUs."""
    mean = demand * nodes * NODE_GPUS / pods
    mix, exact = effective_mix(base_mix, mean)
    rng = np.random.default_rng(seed)
    gpus = rng.choice(np.asarray(GPU_SIZES), size=pods, p=np.asarray(mix))
    width = len(str(max(nodes - 1, 1)))
    pwidth = len(str(max(pods - 1, 1)))
    return Workload(
        node_names=tuple(f"gpu-node-{i:0{width}d}" for i in range(nodes)),
        pod_names=tuple(f"pod-{i:0{pwidth}d}" for i in range(pods)),
        pod_gpus=tuple(int(g) for g in gpus),
        base_mix=tuple(float(x) for x in base_mix),
        mix=mix,
        mix_exact=exact,
        seed=seed,
    )


# ---------------------------------------------------------------- progress and small utilities

_T_START = time.perf_counter()


def say(message: str) -> None:
    """A progress line on stderr, stamped with seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _T_START:7.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ---------------------------------------------------------------- control plane


@dataclass(frozen=True)
class ControlPlane:
    state_dir: Path
    kubeconfig: str

    @property
    def admin_cert(self) -> tuple[str, str]:
        pki = self.state_dir / "pki"
        return str(pki / "admin.crt"), str(pki / "admin.key")

    def client(self) -> KubeClient:
        api = KubeClient.from_kubeconfig(self.kubeconfig)
        api.user_agent = "tessellate-benchmark"
        return api


def _control_plane(
    state_dir: Path | None, *args: str, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run scripts/control-plane; its stderr (progress) is shown only with `capture`."""
    env = dict(os.environ)
    if state_dir is not None:
        env["TESSELLATE_CP_DIR"] = str(state_dir)
    return subprocess.run(
        [str(CONTROL_PLANE), *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=None if capture else subprocess.PIPE,
        timeout=3600,
        check=False,
    )


def control_plane_up(state_dir: Path) -> ControlPlane:
    """`down --purge` then `up`: an empty kube-apiserver + etcd of our own."""
    _control_plane(state_dir, "down", "--purge")
    up = _control_plane(state_dir, "up", capture=True)  # its progress (and any build) shows on stderr
    if up.returncode != 0:
        raise RuntimeError(f"scripts/control-plane up failed (exit {up.returncode}; state dir {state_dir})")
    return ControlPlane(state_dir=state_dir, kubeconfig=up.stdout.strip().splitlines()[-1])


def control_plane_down(plane: ControlPlane, purge: bool = True) -> None:
    _control_plane(plane.state_dir, "down", *(["--purge"] if purge else []))


def build_kube_scheduler() -> str:
    """Path of the kube-scheduler binary, built once by `scripts/control-plane build-scheduler`."""
    result = _control_plane(None, "build-scheduler", capture=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise RuntimeError("scripts/control-plane build-scheduler failed (output above)")
    return lines[-1]


def create_queues(api: KubeClient, count: int, capacity_gpus: int) -> None:
    """Install the Queue CRD and `count` queues q0.. sharing the cluster's GPUs as quota."""
    crd = yaml.safe_load((REPO / "manifests" / "crds" / "queues.yaml").read_text())
    api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    deadline = time.monotonic() + 60
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
    while not any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (api.get(path).get("status") or {}).get("conditions") or []
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the Queue CRD was not established within 60 s")
        time.sleep(0.2)
    quota = capacity_gpus // count
    for i in range(count):
        body = {
            "apiVersion": "tessellate.dev/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": f"q{i}"},
            "spec": {"resources": [{"gpuModel": "*", "quota": quota, "overQuotaWeight": 1 + i % 3}]},
        }
        api.post("/apis/tessellate.dev/v1alpha1/queues", body)


def populate(
    api: KubeClient, workload: Workload, scheduler_name: str, workers: int = 16, queues: int = 0
) -> tuple[float, float]:
    """Create the namespace, nodes (with status), the tenant queues and all pods; returns
    (node s, pod s)."""
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    if queues:
        create_queues(api, queues, workload.capacity_gpus)
    t0 = time.perf_counter()

    def create(name: str) -> None:
        node, status = cluster.gpu_node(
            name, gpus=NODE_GPUS, cpu=str(NODE_CPU), memory=f"{NODE_MEMORY_GI}Gi", product=GPU_PRODUCT
        )
        cluster.create_node(api, node, status)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, workload.node_names))
    t1 = time.perf_counter()
    cluster.create_pods(api, workload.pod_objects(scheduler_name, queues), workers=workers)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


# ---------------------------------------------------------------- watching binds


class BindWatcher:
    """Timestamps (time.perf_counter) the first time each pod is seen with spec.nodeName.

    The watch starts at the resourceVersion of an initial list, so no bind is
    missed however late the watch connects; events are handed to the caller
    through a queue. A 410 Gone relists (and timestamps any new binds then).
    """

    WATCH_TIMEOUT_S = 3

    def __init__(self, api: KubeClient, namespace: str):
        self.api = api
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self.errors: list[str] = []
        self._stop = threading.Event()
        items, self._rv = api.list_all(self.path)
        now = time.perf_counter()
        self.initially_bound = {p["metadata"]["name"] for p in items if (p.get("spec") or {}).get("nodeName")}
        for name in self.initially_bound:
            self.events.put((name, now))
        self._thread = threading.Thread(target=self._run, name="bind-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rv = self._rv
        while not self._stop.is_set():
            try:
                # A short server-side timeout: the thread notices stop() within seconds, and no
                # watch is left open to hold up kube-apiserver's graceful shutdown (15 s).
                for event in self.api.watch(self.path, rv, timeout_seconds=self.WATCH_TIMEOUT_S):
                    obj = event.object
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion") or rv
                    if event.type in ("ADDED", "MODIFIED") and (obj.get("spec") or {}).get("nodeName"):
                        self.events.put((meta["name"], time.perf_counter()))
                    if self._stop.is_set():
                        return
            except ApiError as exc:
                if not exc.is_gone:
                    self.errors.append(str(exc))
                    time.sleep(0.5)
                    continue
                items, rv = self.api.list_all(self.path)
                now = time.perf_counter()
                for p in items:
                    if (p.get("spec") or {}).get("nodeName"):
                        self.events.put((p["metadata"]["name"], now))
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.WATCH_TIMEOUT_S + 5)


@dataclass
class BindProgress:
    bound: dict[str, float] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    ended_by: str = ""


def await_binds(
    watcher: BindWatcher,
    total: int,
    t0: float,
    stall_s: float,
    startup_s: float,
    alive: Callable[[], str | None],
) -> BindProgress:
    """Collect binds until all `total` pods are bound, or none came for `stall_s`
    (`startup_s` before the first), or the scheduler exited (`alive` returns why)."""
    progress = BindProgress()
    next_report = t0 + 2.0
    while len(progress.bound) < total:
        now = time.perf_counter()
        deadline = progress.last + stall_s if progress.last is not None else t0 + startup_s
        if now >= deadline:
            waited = stall_s if progress.last is not None else startup_s
            progress.ended_by = f"no bind for {waited:g} s"
            break
        gone = alive()
        if gone:
            progress.ended_by = gone
            break
        if now >= next_report:
            rate = len(progress.bound) / (now - t0)
            say(f"  {len(progress.bound)}/{total} bound after {now - t0:.1f} s ({rate:.0f} pods/s so far)")
            next_report = now + 2.0
        try:
            name, seen = watcher.events.get(timeout=max(0.01, min(0.25, deadline - now)))
        except queue.Empty:
            continue
        if name in progress.bound:
            continue
        progress.bound[name] = seen
        progress.first = seen if progress.first is None else min(progress.first, seen)
        progress.last = seen if progress.last is None else max(progress.last, seen)
    else:
        progress.ended_by = "all pods bound"
    return progress


# ---------------------------------------------------------------- Prometheus histograms

_BUCKET = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LE = re.compile(r'(?:^|,)\s*le="(?P<le>[^"]+)"')


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of histogram `name`, summed over its label sets."""
    sums: dict[float, float] = {}
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if not match or match.group("name") != name:
            continue
        le = _LE.search(match.group("labels"))
        if le is None:
            continue
        bound = float(le.group("le"))
        sums[bound] = sums.get(bound, 0.0) + float(match.group("value"))
    return sorted(sums.items())


def metric_sum(text: str, name: str) -> float | None:
    """Sum of every sample of metric `name` (all label sets), None when it is absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(None, 1)[1])
            seen = True
    return total if seen else None


@dataclass(frozen=True)
class Quantile:
    seconds: float
    above_last_bucket: bool = False
    """True when the rank falls in the +Inf bucket: the value is then only a lower bound."""


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> Quantile | None:
    """The q-quantile by linear interpolation inside the bucket that holds rank q x count
    (the convention of Prometheus's histogram_quantile; the first bucket starts at 0)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank and count > below:
            if upper == float("inf"):
                return Quantile(lower, above_last_bucket=True)
            return Quantile(lower + (upper - lower) * (rank - below) / (count - below))
        lower, below = upper, count
    return Quantile(lower, above_last_bucket=True)


# ---------------------------------------------------------------- the two schedulers


class SchedulerProcess:
    """One scheduler as a child process of the benchmark, with its log and /metrics."""

    label = ""
    scheduler_name = ""
    latency_metric = ""
    fragmentation_metric = ""
    """The scheduler's own FGD fragment gauge (milli-GPU), if it has one: a cross-check."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log_path = workdir / f"{self.label}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = urllib3.PoolManager(num_pools=2)

    def command(self, plane: ControlPlane) -> list[str]:
        raise NotImplementedError

    def metrics_text(self) -> str:
        raise NotImplementedError

    def start(self, plane: ControlPlane) -> None:
        cmd = self.command(plane)
        (self.workdir / f"{self.label}.cmd").write_text(" ".join(cmd) + "\n")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def exited(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.label} exited with status {self.proc.returncode} (log: {self.log_path})"
        return None

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid) if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def tessellate_command() -> list[str]:
    exe = Path(sys.executable).with_name("tessellate")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("tessellate")
    return [found] if found else [sys.executable, "-m", "tessellate"]


def tessellate_scheduler_available() -> tuple[bool, str]:
    """Whether `tessellate scheduler --help` works, and the last line it printed."""
    result = subprocess.run(
        [*tessellate_command(), "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (result.stderr or result.stdout).strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else ""


class TessellateScheduler(SchedulerProcess):
    label = "tessellate"
    scheduler_name = "tessellate"
    latency_metric = "tessellate_scheduling_algorithm_duration_seconds"
    fragmentation_metric = "tessellate_gpu_fragmentation_milli"

    def __init__(self, workdir: Path, qps: float, burst: int, policy: str | None = None, queues: int = 0):
        super().__init__(workdir)
        self.port = free_port()
        self.queues = queues
        """Tenant queues the run creates (its pods labelled round-robin); 0: none."""
        if policy is not None:
            self.label = f"tessellate ({policy})"
        if queues:
            self.label = f"{self.label} + {queues} queues"
        self.config = {
            "schedulerName": self.scheduler_name,
            **({"policy": policy} if policy is not None else {}),
            "bindAddress": f"127.0.0.1:{self.port}",
            "leaderElection": {"leaderElect": False},
            "clientConnection": {"qps": qps, "burst": burst},
        }

    def command(self, plane: ControlPlane) -> list[str]:
        path = self.workdir / "tessellate-config.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return [*tessellate_command(), "scheduler", "--kubeconfig", plane.kubeconfig, "--config", str(path)]

    def metrics_text(self) -> str:
        resp = self._http.request("GET", f"http://127.0.0.1:{self.port}/metrics", timeout=10.0, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {resp.status}")
        return resp.data.decode()


class KubeScheduler(SchedulerProcess):
    label = "kube-scheduler"
    scheduler_name = "kube-bench"
    latency_metric = "scheduler_scheduling_algorithm_duration_seconds"

    def __init__(self, workdir: Path, binary: str, qps: float, burst: int):
        super().__init__(workdir)
        self.binary = binary
        self.port = free_port()
        self.qps, self.burst = qps, burst
        self.plane: ControlPlane | None = None

    def configuration(self, kubeconfig: str) -> dict[str, Any]:
        return {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig, "qps": self.qps, "burst": self.burst},
            "leaderElection": {"leaderElect": False},
            # percentageOfNodesToScore is left unset: kube-scheduler's adaptive default.
            "profiles": [
                {
                    "schedulerName": self.scheduler_name,
                    "pluginConfig": [
                        {
                            "name": "NodeResourcesFit",
                            "args": {
                                "scoringStrategy": {
                                    "type": "MostAllocated",
                                    "resources": [
                                        {"name": "nvidia.com/gpu", "weight": 1},
                                        {"name": "cpu", "weight": 1},
                                        {"name": "memory", "weight": 1},
                                    ],
                                }
                            },
                        }
                    ],
                }
            ],
        }

    def command(self, plane: ControlPlane) -> list[str]:
        self.plane = plane
        path = self.workdir / "kube-scheduler-config.yaml"
        path.write_text(yaml.safe_dump(self.configuration(plane.kubeconfig), sort_keys=False))
        # The delegated authn/authz kubeconfigs let it trust the admin client cert on /metrics.
        return [
            self.binary,
            f"--config={path}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--authentication-kubeconfig={plane.kubeconfig}",
            f"--authorization-kubeconfig={plane.kubeconfig}",
            "--v=1",
        ]

    def metrics_text(self) -> str:
        assert self.plane is not None
        cert, key = self.plane.admin_cert
        # kube-scheduler serves /metrics with a self-signed certificate it made in memory.
        http = urllib3.PoolManager(cert_reqs="CERT_NONE", cert_file=cert, key_file=key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            resp = http.request("GET", f"https://127.0.0.1:{self.port}/metrics", timeout=10.0, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {resp.status}: {resp.data[:200]!r}")
        return resp.data.decode()


# ---------------------------------------------------------------- placement quality


@dataclass
class PlacementQuality:
    allocation_ratio: float
    """Allocated GPUs / cluster GPUs."""
    frag_gpus: float
    """FGD fragment: expected idle GPUs that the target workload could not use."""
    frag_of_capacity: float
    frag_of_idle: float
    idle_gpus: float
    pending_that_fit: int
    """Pods left Pending although some node could still hold them at the end (should be 0)."""
    problems: list[str]


def placement_quality(
    workload: Workload, pods: list[dict[str, Any]], use_annotation: bool
) -> PlacementQuality:
    """Replay the bound pods into a ClusterState (which refuses any over-commit) and
    measure the FGD fragmentation against the workload's own shape distribution.

    GPU indices come from the tessellate.dev/assignment annotation when
    `use_annotation`; otherwise (kube-scheduler) the lowest free GPUs are taken,
    as a device plugin would. For whole-GPU pods the indices do not change F.
    """
    specs = [
        NodeSpec(
            name=name,
            cpu_milli=NODE_CPU * 1000,
            memory_mib=NODE_MEMORY_GI * 1024,
            gpu_count=NODE_GPUS,
            gpu_model=STATE_GPU_MODEL,
            max_pods=NODE_MAX_PODS,
        )
        for name in workload.node_names
    ]
    state = ClusterState(specs)
    requests = workload.requests()
    problems: list[str] = []
    missing_annotation = 0
    bound = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
    bound.sort(key=lambda p: p["metadata"]["name"])
    for p in bound:
        name, node_name = p["metadata"]["name"], p["spec"]["nodeName"]
        request = requests.get(name)
        if request is None or node_name not in state.index:
            problems.append(f"{name}: unknown pod or node {node_name!r}")
            continue
        node = state.index[node_name]
        gpus: tuple[int, ...] | None = None
        if use_annotation:
            gpus = _annotated_gpus(p)
            if gpus is None:
                missing_annotation += 1
        if gpus is None:
            free = np.flatnonzero(state.gpu_left[node] == MILLI_PER_GPU)
            gpus = tuple(int(i) for i in free[: request.gpu_count])
        try:
            state.allocate(Assignment(pod=name, node=node, node_name=node_name, request=request, gpus=gpus))
        except OverCommitError as exc:
            problems.append(f"over-commit: {exc}")
    if missing_annotation:
        problems.append(
            f"{missing_annotation} bound pods without a readable {ASSIGNMENT_ANNOTATION} annotation"
        )
    bound_names = {p["metadata"]["name"] for p in bound}
    pending_that_fit = sum(
        _fits_somewhere(state, request) for name, request in requests.items() if name not in bound_names
    )
    target = TargetWorkload.from_requests(requests.values(), coverage=1.0)
    frag, idle = Fragmentation(target, state).of_nodes(state, np.arange(len(state)))
    total = state.total_gpu_milli
    frag_sum, idle_sum = float(frag.sum()), float(idle.sum())
    return PlacementQuality(
        allocation_ratio=state.allocated_gpu_milli / total,
        frag_gpus=frag_sum / MILLI_PER_GPU,
        frag_of_capacity=frag_sum / total,
        frag_of_idle=frag_sum / idle_sum if idle_sum > 0 else 0.0,
        idle_gpus=idle_sum / MILLI_PER_GPU,
        pending_that_fit=pending_that_fit,
        problems=problems,
    )


def _fits_somewhere(state: ClusterState, request: Request) -> bool:
    fits = (
        (state.gpu_free_count >= request.gpu_count)
        & (state.cpu_left >= request.cpu_milli)
        & (state.mem_left >= request.memory_mib)
        & (state.pod_count < state.max_pods)
    )
    return bool(fits.any())


def _annotated_gpus(pod: dict[str, Any]) -> tuple[int, ...] | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ASSIGNMENT_ANNOTATION)
    if not raw:
        return None
    try:
        entries = json.loads(raw)["gpus"]
        return tuple(int(e["index"]) for e in entries)
    except (ValueError, KeyError, TypeError):
        return None
