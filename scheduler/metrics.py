"""Prometheus metrics and the /metrics, /healthz, /readyz endpoints.

Names follow kube-scheduler's where there is one (attempts by result, e2e and
algorithm latency, pending pods by queue) with a `tessellate_` prefix; the GPU
gauges (allocation ratio and FGD fragmentation per GPU model) are computed
from the cache at scrape time, so they are never stale.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from tessellate.scheduler.tenancy import QUOTA_NOTE

if TYPE_CHECKING:
    from tessellate.scheduler.cache import ClusterCache
    from tessellate.scheduler.podrecord import PodRecord
    from tessellate.scheduler.tenancy import Tenancy

log = logging.getLogger("tessellate.metrics")

DECISION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
E2E_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GpuCollector(Collector):
    """Cluster GPU gauges per model, read from the cache when Prometheus scrapes."""

    def __init__(self, usage: Callable[[], dict[str, tuple[int, int, float, float]]]):
        self.usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ratio = GaugeMetricFamily(
            "tessellate_gpu_allocation_ratio", "Allocated share of GPU capacity (0..1)", labels=["model"]
        )
        capacity = GaugeMetricFamily(
            "tessellate_gpu_capacity_milli", "GPU capacity in milli-GPU", labels=["model"]
        )
        frag = GaugeMetricFamily(
            "tessellate_gpu_fragmentation_milli",
            "FGD fragmentation: idle milli-GPU the expected workload cannot use",
            labels=["model"],
        )
        frag_ratio = GaugeMetricFamily(
            "tessellate_gpu_fragmentation_ratio",
            "FGD fragmentation as a share of idle GPU capacity (0..1)",
            labels=["model"],
        )
        try:
            usage = self.usage()
        except Exception:  # a scrape must never take the scheduler down
            log.exception("computing GPU gauges failed")
            usage = {}
        for model, (total, allocated, fragment, fragment_ratio) in sorted(usage.items()):
            ratio.add_metric([model], allocated / total if total else 0.0)
            capacity.add_metric([model], total)
            frag.add_metric([model], fragment)
            frag_ratio.add_metric([model], fragment_ratio)
        yield from (ratio, capacity, frag, frag_ratio)


class NodeProblemCollector(Collector):
    """`tessellate_node_inventory_problem{node, effect}`: 1 per node whose inventory the
    scheduler ignored in part (`degraded`) or will not place on (`quarantined`)."""

    def __init__(self, problems: Callable[[], dict[str, bool]]):
        self.problems = problems

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tessellate_node_inventory_problem",
            "1 for a node whose GPU inventory is partly ignored (degraded) or untrusted (quarantined: "
            "it takes no new pods); the node's events say what to fix",
            labels=["node", "effect"],
        )
        try:
            problems = self.problems()
        except Exception:
            log.exception("reading node problems failed")
            problems = {}
        for node, quarantined in sorted(problems.items()):
            family.add_metric([node, "quarantined" if quarantined else "degraded"], 1)
        yield family


_FIT_ERROR = re.compile(r"0/\d+ nodes are available: (.+?)\.?$")
_COUNTED = re.compile(r"^\d+ ")


def unschedulable_reasons(message: str) -> list[str]:
    """The reasons in a FailedScheduling message, with their node counts stripped so that the
    label takes few values: `0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had no GPU.`
    gives `Insufficient cpu` and `node(s) had no GPU`. Messages without the per-node list are
    classed as `queue` (the pod's Queue is missing or broken), `pod group` (its group cannot
    start yet; the fit reasons follow when there are some) or `other` (the pod as written
    cannot be scheduled; its events say why). A queue's limit, whose words carry the usage,
    is `queue limit`."""
    reasons = []
    if message.startswith("queue "):
        return ["queue"]
    message = message.split(QUOTA_NOTE, 1)[0]  # "... Not the quota: queue team-b: within quota ..."
    if message.startswith("pod group "):
        reasons.append("pod group")
    fit = _FIT_ERROR.search(message)
    if fit is not None:
        for part in re.split(r", (?=\d+ )", fit.group(1)):
            reason = _COUNTED.sub("", part)
            reasons.append("queue limit" if reason.startswith("queue ") else reason)
    return reasons or ["other"]


def unschedulable_message(pod: Mapping) -> str | None:
    """The message of the pod's `PodScheduled=False, reason=Unschedulable` condition, if any."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return str(cond.get("message") or "")
    return None


class UnschedulableCollector(Collector):
    """`tessellate_unschedulable_pods{reason}`: pods waiting after a failed attempt, by reason.

    Read at scrape time from the condition the scheduler writes on each pod it could not
    place (so a standby, whose cache sees the same pods, reports the same numbers). A pod
    counts once under each reason its message gives, as kube-scheduler's
    `scheduler_unschedulable_pods{plugin}` counts a pod under each plugin that rejected it."""

    def __init__(self, pods: Callable[[], Iterable[Mapping]]):
        self.pods = pods

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tessellate_unschedulable_pods",
            "Pods waiting after a failed scheduling attempt, by reason (a pod counts under each "
            "reason its FailedScheduling message gives)",
            labels=["reason"],
        )
        counts: Tally[str] = Tally()
        try:
            for pod in self.pods():
                message = unschedulable_message(pod)
                if message is not None:
                    counts.update(set(unschedulable_reasons(message)))
        except Exception:
            log.exception("counting unschedulable pods failed")
        for reason, count in sorted(counts.items()):
            family.add_metric([reason], count)
        yield family


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "tessellate_schedule_attempts", "Scheduling attempts by result", ["result"], registry=r
        )
        self.algorithm = Histogram(
            "tessellate_scheduling_algorithm_duration_seconds",
            "Per-pod decision latency: filter, score and device choice",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "tessellate_e2e_scheduling_duration_seconds",
            "From a pod entering the queue to its bind completing",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.bind = Histogram(
            "tessellate_binding_duration_seconds", "Binding request latency", buckets=E2E_BUCKETS, registry=r
        )
        self.pending = Gauge("tessellate_pending_pods", "Pods waiting, by queue", ["queue"], registry=r)
        self.leader = Gauge("tessellate_leader", "1 while this replica is the leader", registry=r)
        self.cache_rebuilds = Gauge(
            "tessellate_cache_rebuilds",
            "Rebuilds of the placement state (node changes) since start",
            registry=r,
        )
        self.preemption_victims = Counter(
            "tessellate_preemption_victims", "Pods deleted to make room for higher-priority pods", registry=r
        )
        self.batches = Counter(
            "tessellate_batch_decisions",
            "Pods retried after a cluster change, decided together; result=improved when the "
            "CP-SAT answer placed more than one-at-a-time would have",
            ["result"],
            registry=r,
        )
        for result in ("improved", "greedy"):
            self.batches.labels(result)
        self.reclaims = Counter(
            "tessellate_queue_reclaims",
            "Pods preempted because their queue borrowed over its quota, by the claimant's queue",
            ["queue"],
            registry=r,
        )
        self.borrowed = Counter(
            "tessellate_queue_borrowed_binds",
            "Pods bound while their queue was over its quota for the pod's GPU model (borrowing)",
            ["queue"],
            registry=r,
        )
        labels = ["queue", "gpu_model"]
        self.queue_allocated = Gauge(
            "tessellate_queue_allocated_gpus", "GPU units the queue's pods hold", labels, registry=r
        )
        self.queue_quota = Gauge(
            "tessellate_queue_quota_gpus", "The queue's guaranteed GPUs", labels, registry=r
        )
        self.queue_fair_share = Gauge(
            "tessellate_queue_fair_share_gpus",
            "Quota plus the queue's share of idle GPUs",
            labels,
            registry=r,
        )
        self.queue_pending = Gauge(
            "tessellate_queue_pending_gpus", "GPU units the queue's pending pods ask for", labels, registry=r
        )
        for result in ("scheduled", "unschedulable", "error", "waiting_for_mig"):
            self.attempts.labels(result)

    def observe_queues(self, tenancy: Tenancy, fair: Mapping, pending: Mapping) -> None:
        """Per queue and GPU model: allocated, quota, fair share, pending (replacing old series)."""
        book = tenancy.book
        gauges = (self.queue_allocated, self.queue_quota, self.queue_fair_share, self.queue_pending)
        for gauge in gauges:
            gauge.clear()
        if book is None:
            return
        models = set(book.models) | {m for _, m in fair} | {m for _, m in pending}
        for queue in tenancy.tree.leaves:
            for model in sorted(models):
                labels = (queue, model)
                self.queue_allocated.labels(*labels).set(float(book.usage(queue, model)))
                self.queue_quota.labels(*labels).set(float(book.entry(queue, model).quota))
                if labels in fair:
                    self.queue_fair_share.labels(*labels).set(float(fair[labels]))
                self.queue_pending.labels(*labels).set(float(pending.get(labels, 0)))

    def watch_gpus(self, usage: Callable[[], dict[str, tuple[int, int, float, float]]]) -> None:
        self.registry.register(GpuCollector(usage))

    def watch_nodes(self, problems: Callable[[], dict[str, bool]]) -> None:
        self.registry.register(NodeProblemCollector(problems))

    def watch_unschedulable(self, cache: ClusterCache, pending: Callable[[PodRecord], bool]) -> None:
        """Export `tessellate_unschedulable_pods` for the pods `pending` says are ours to place
        (bound pods and decisions whose bind is in flight are not waiting)."""

        def waiting() -> list[Mapping]:
            with cache.lock:
                return [r.obj for r in cache.pods.values() if pending(r) and r.uid not in cache.assumed]

        self.registry.register(UnschedulableCollector(waiting))

    def watch_queue(self, depth: Callable[[], dict[str, int]]) -> None:
        for name in ("active", "backoff", "unschedulable"):
            self.pending.labels(name).set_function(lambda name=name: depth().get(name, 0))


class HealthServer:
    """Plain-HTTP /metrics, /healthz (the loop is alive) and /readyz (caches synced)."""

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
    ):
        host, _, port = address.rpartition(":")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez"):
                    self._probe(outer.healthy())
                elif path == "/readyz":
                    self._probe(outer.ready())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _probe(self, result: tuple[bool, str]) -> None:
                ok, why = result
                self._send(200 if ok else 503, (why or ("ok" if ok else "not ok")).encode() + b"\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self.healthy = healthy
        self.ready = ready
        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
