"""The live scheduler: informers feed the cache and queue; one loop decides; a pool binds.

Only the leader decides and binds. Standbys keep their caches warm so a
takeover starts from a consistent list, not from nothing. Losing the Lease
ends the process (as kube-scheduler does), so a replica never binds on a
stale belief that it leads.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tessellate.placement.batch import BatchOptions
from tessellate.scheduler.cache import AccountingProblem, ClusterCache, NodeProblem, Placed
from tessellate.scheduler.config import SchedulerConfig
from tessellate.scheduler.cycle import (
    Bind,
    BindGroup,
    CycleSettings,
    Invalid,
    Rejected,
    Skip,
    WaitForMig,
    retry_cycle,
    scheduling_cycle,
)
from tessellate.scheduler.gang import GroupDecision
from tessellate.scheduler.informer import Reflector
from tessellate.scheduler.leader import LeaderElectionConfig, LeaderElector, default_identity
from tessellate.scheduler.metrics import HealthServer, SchedulerMetrics
from tessellate.scheduler.migplans import MigWait
from tessellate.scheduler.podrecord import PodRecord
from tessellate.scheduler.preemption import Preemption
from tessellate.scheduler.queue import QueuedPod, SchedulingQueue
from tessellate.scheduler.recorder import Recorder
from tessellate.scheduler.tenancy import QUEUES_PATH, tenant_of

from tessellate.kube import ApiError, KubeClient
from tessellate.wire.assignment import ASSIGNMENT
from tessellate.wire.migplan import PLAN

log = logging.getLogger("tessellate.scheduler")

# kube-scheduler ignores terminal pods in its informer the same way.
POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
TARGET_REFRESH_SECONDS = 30.0
QUEUE_RANK_SECONDS = 0.5
"""How often fair shares and the tenant queues' order are recomputed."""
QUEUE_STATUS_SECONDS = 5.0
"""How often the leader writes the Queues' status."""
GIL_SWITCH_INTERVAL = 0.0005
LOOP_ERRORS_UNREADY = 3
"""Unexpected failures in a row after which /readyz reports the loop as failing."""


class Scheduler:
    def __init__(self, api: KubeClient, config: SchedulerConfig, identity: str | None = None):
        self.api = api
        self.config = config
        self.identity = identity or default_identity()
        self.stop = threading.Event()
        self.leading = threading.Event()
        self.lost_leadership = False
        self.metrics = SchedulerMetrics()
        self.recorder = Recorder(api, config.schedulerName, self.identity)
        self.cache = ClusterCache(
            config.policy,
            on_problem=self._accounting_problem,
            max_sharers=config.maxGpuSharers,
            scheduler_name=config.schedulerName,
            on_node_problem=self._node_problem,
            filters=config.filters,
        )
        self.queue = SchedulingQueue(
            config.podInitialBackoffSeconds, config.podMaxBackoffSeconds, config.unschedulableRetrySeconds
        )
        self.binder = ThreadPoolExecutor(config.bindWorkers, thread_name_prefix="bind")
        self.pods = Reflector(
            api,
            "/api/v1/pods",
            self._replace_pods,
            self._pod_event,
            self.stop,
            {"fieldSelector": POD_SELECTOR},
        )
        self.nodes = Reflector(api, "/api/v1/nodes", self._replace_nodes, self._node_event, self.stop)
        self.queues = Reflector(
            api, QUEUES_PATH, self._replace_queues, self._queue_event, self.stop, optional=True
        )
        self.queue.rank = lambda: self.cache.tenancy.rank
        self._queue_fair: dict = {}
        self.elector: LeaderElector | None = None
        le = config.leaderElection
        if le.leaderElect:
            self.elector = LeaderElector(
                api,
                LeaderElectionConfig(
                    namespace=le.resourceNamespace,
                    name=le.resourceName,
                    identity=self.identity,
                    lease_duration=le.leaseDuration,
                    renew_deadline=le.renewDeadline,
                    retry_period=le.retryPeriod,
                ),
            )
        self.metrics.watch_queue(self.queue.depth)
        self.metrics.watch_gpus(self._gpu_usage)
        self.metrics.watch_nodes(self._node_problems)
        self.metrics.watch_unschedulable(self.cache, self._pending)
        self.metrics.cache_rebuilds.set_function(lambda: self.cache.rebuilds)
        self._heartbeat = time.monotonic()
        self._loop_errors = 0
        """Scheduling cycles in a row that failed unexpectedly (readiness)."""
        self._assumed_before: set[str] = set()
        """Decisions assumed before the current cycle began (an error keeps those)."""
        self._submitted: set[str] = set()
        """Decisions the current cycle handed to the bind pool (an error keeps those too)."""
        self._cycle_settings = CycleSettings(
            mig_plan_timeout=config.migPlanTimeoutSeconds,
            preemption=config.preemption,
            pending=self._pending,
            nominator=self.queue.nominator,
            group_batch=(
                BatchOptions(max_pods=64, time_limit_s=config.podGroupBatchSeconds)
                if config.podGroupBatchSeconds > 0
                else None
            ),
            retry_batch=(
                BatchOptions(max_pods=config.retryBatchPods, time_limit_s=config.retryBatchSeconds)
                if config.retryBatchSeconds > 0
                else None
            ),
        )
        self._loop_thread: threading.Thread | None = None
        self.http = HealthServer(config.bindAddress, self.metrics.registry, self._healthy, self._ready)

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until leadership is lost (1)."""
        # A decision takes well under a millisecond of CPU, but with the default 5 ms
        # GIL switch interval it can wait several intervals behind bind and watch threads.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.http.start()
        log.info(
            "tessellate scheduler %s: schedulerName=%s policy=%s metrics on %s",
            self.identity,
            self.config.schedulerName,
            self.config.policy,
            self.config.bindAddress,
        )
        self.nodes.start()
        self.pods.start()
        self.queues.start()
        while not all(r.synced.is_set() for r in (self.nodes, self.pods, self.queues)):
            if self.stop.wait(0.1):
                return self._shutdown()
        log.info("caches synced: %d nodes, %d pods", len(self.cache.nodes), len(self.cache.pods))
        if self.elector is None:
            self._start_leading()
            self.stop.wait()
        else:
            self.elector.run(self.stop, self._start_leading, self._stop_leading)
        return self._shutdown()

    def request_stop(self, *_: Any) -> None:
        self.stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _start_leading(self) -> None:
        if self.elector is not None:
            # A previous leader's last binds may not have reached our watch yet.
            log.info("leading: resyncing pods before the first decision")
            self.pods.resync()
        else:
            log.info("leading (leader election off: this is the only binder)")
        self.metrics.leader.set(1)
        self.leading.set()
        with self.cache.lock:
            problems = self.cache.node_problems()
        for problem in problems:
            self._post_node_event(problem)
        self._loop_thread = threading.Thread(target=self._loop, name="schedule", daemon=True)
        self._loop_thread.start()

    def _stop_leading(self) -> None:
        self.metrics.leader.set(0)
        was_leading = self.leading.is_set()
        self.leading.clear()
        if not self.stop.is_set() and was_leading:
            self.lost_leadership = True
            log.error(
                "lost the lease %s; exiting so that only one replica binds",
                self.config.leaderElection.resourceName,
            )
            self.stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=5)
        self.binder.shutdown(wait=True)  # in-flight binds finish before the Lease is released

    def _shutdown(self) -> int:
        self.stop.set()
        self.leading.clear()
        self.queue.close()
        self.binder.shutdown(wait=True)
        self.recorder.close(wait=True)
        self.http.stop()
        log.info("stopped")
        return 1 if self.lost_leadership else 0

    # -- health ----------------------------------------------------------------------

    def _healthy(self) -> tuple[bool, str]:
        if not (self.nodes.is_alive() and self.pods.is_alive() and self.queues.is_alive()):
            return False, "an informer thread died"
        if self.leading.is_set() and time.monotonic() - self._heartbeat > 30:
            return False, "the scheduling loop is stuck"
        return True, "ok"

    def _ready(self) -> tuple[bool, str]:
        """Ready means able to work: caches synced, the API server reachable, cycles working."""
        if not all(r.synced.is_set() for r in (self.nodes, self.pods, self.queues)):
            return False, "caches not synced yet"
        down = self._api_unreachable_for()
        if down > self.config.readinessApiTimeoutSeconds:
            return False, f"the API server has been unreachable for {down:.0f}s (lists and watches fail)"
        build_error = self.cache.build_error
        if build_error is not None:
            return False, build_error
        if self._loop_errors >= LOOP_ERRORS_UNREADY:
            return False, f"the last {self._loop_errors} scheduling cycles failed unexpectedly (see the log)"
        return True, "ok" + (" (leader)" if self.leading.is_set() else " (standby)")

    def _api_unreachable_for(self) -> float:
        since = [r.failing_since for r in (self.nodes, self.pods, self.queues) if r.failing_since is not None]
        return time.monotonic() - min(since) if since else 0.0

    def _node_problems(self) -> dict[str, bool]:
        with self.cache.lock:
            return {p.node: p.quarantined for p in self.cache.node_problems()}

    def _gpu_usage(self) -> dict[str, tuple[int, int, float, float]]:
        with self.cache.lock:
            return self.cache.gpu_usage_by_model()

    # -- informer handlers ---------------------------------------------------------------

    def _ours(self, rec: PodRecord) -> bool:
        return rec.scheduler_name == self.config.schedulerName and not rec.node_name

    def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        with self.cache.lock:
            pending = self.cache.replace_pods(items)
            known = set(self.cache.pods)
        for uid in self.queue.uids():
            if uid not in known:
                self.queue.remove(uid)
        for rec in pending:
            if self._ours(rec) and not rec.deleting and not rec.gated and rec.uid not in self.queue:
                self.queue.add(rec.uid, rec.key, rec.priority, tenant_of(rec))
        self.queue.move_all_to_active()

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        uid = (obj.get("metadata") or {}).get("uid", "")
        with self.cache.lock:
            old = self.cache.pods.get(uid)
            if kind == "DELETED":
                rec, freed = None, self.cache.delete_pod(uid)
            else:
                rec, freed = self.cache.upsert_pod(obj)
        if rec is None or rec.node_name or rec.deleting:
            self.queue.remove(uid)
        elif self._ours(rec) and not rec.gated:
            spec_changed = old is None or old.obj.get("spec") != rec.obj.get("spec")
            labels_changed = old is None or old.obj.get("metadata", {}).get("labels") != rec.obj.get(
                "metadata", {}
            ).get("labels")
            if spec_changed or labels_changed or uid not in self.queue:
                self.queue.add(uid, rec.key, rec.priority, tenant_of(rec))
        if freed:
            self.queue.move_all_to_active()

    def _replace_nodes(self, items: list[dict[str, Any]]) -> None:
        with self.cache.lock:
            self.cache.replace_nodes(items)
        self.queue.move_all_to_active()

    def _node_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.cache.lock:
            if kind == "DELETED":
                changed = self.cache.delete_node(obj["metadata"]["name"])
            else:
                changed = self.cache.upsert_node(obj)
        if changed and kind != "DELETED":
            self.queue.move_all_to_active()

    def _replace_queues(self, items: list[dict[str, Any]]) -> None:
        with self.cache.lock:
            self.cache.tenancy.replace(items)
        self.queue.move_all_to_active()

    def _queue_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.cache.lock:
            if kind == "DELETED":
                self.cache.tenancy.delete(obj)
            else:
                self.cache.tenancy.upsert(obj)
        self.queue.move_all_to_active()

    def _accounting_problem(self, problem: AccountingProblem, rec: PodRecord) -> None:
        self.recorder.event(rec.obj, "Warning", "InvalidAssignment", "Accounting", problem.message)

    def _node_problem(self, problem: NodeProblem) -> None:
        if self.leading.is_set():  # a new leader reports what stands when it takes over
            self._post_node_event(problem)

    def _post_node_event(self, problem: NodeProblem) -> None:
        reason = "GpuInventoryQuarantined" if problem.quarantined else "GpuInventoryIgnored"
        obj = {"metadata": {"name": problem.node}}
        self.recorder.event(obj, "Warning", reason, "ReadInventory", problem.message, kind="Node")

    # -- the scheduling loop -------------------------------------------------------------

    def _loop(self) -> None:
        last_target = time.monotonic()
        last_rank = last_status = 0.0  # the first pass ranks the tenant queues before any decision
        while self.leading.is_set() and not self.stop.is_set():
            self._heartbeat = time.monotonic()
            if self._heartbeat - last_rank > QUEUE_RANK_SECONDS:
                last_rank = self._heartbeat
                self._refresh_queues(publish=self._heartbeat - last_status > QUEUE_STATUS_SECONDS)
                if self._heartbeat - last_status > QUEUE_STATUS_SECONDS:
                    last_status = self._heartbeat
            if self._heartbeat - last_target > TARGET_REFRESH_SECONDS:
                last_target = self._heartbeat
                with self.cache.lock:
                    if self.cache.refresh_target():
                        log.info("FGD target workload updated: %d task types", len(self.cache.target.types))
            queued = self.queue.pop(timeout=1.0)
            if queued is None:
                continue
            try:
                self.schedule_one(queued)
            except Exception as exc:
                self._cycle_failed(queued, exc)
            else:
                self._loop_errors = 0

    def _refresh_queues(self, publish: bool) -> None:
        """Fair shares and the tenant order for the queue; the Queues' status when `publish`."""
        tenancy = self.cache.tenancy
        if not tenancy.active:
            return
        with self.cache.lock:
            pending = tenancy.pending_demand(self.cache, self._pending)
            fair = tenancy.publish_rank(self.cache, pending)
            self.metrics.observe_queues(tenancy, fair, pending)
            statuses = tenancy.status(fair, pending) if publish else {}
        for name, status in statuses.items():
            self.binder.submit(self._write_queue_status, name, status)

    def _write_queue_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self.api.patch(f"{QUEUES_PATH}/{name}/status", {"status": status})
        except ApiError as exc:
            if not exc.is_not_found:
                log.warning("could not write the status of Queue %s: %s", name, exc)

    def _cycle_failed(self, queued: QueuedPod, exc: Exception) -> None:
        """An unexpected error: tell the pod, throw away whatever the cycle left half-done
        (assumptions without a bind, partial charges), and retry the pod after its backoff."""
        log.exception("scheduling %s failed unexpectedly", queued.key)
        self._loop_errors += 1
        self.metrics.attempts.labels("error").inc()
        with self.cache.lock:
            orphans = set(self.cache.assumed) - self._assumed_before - self._submitted
            for uid in orphans - set(self.cache.mig_waits):
                self.cache.forget(uid)  # assumed by this cycle, never to be bound
            self.cache.invalidate()
            rec = self.cache.pods.get(queued.uid)
        if rec is not None:
            message = (
                f"internal error while scheduling ({type(exc).__name__}: {exc}); retrying after a backoff. "
                "This is a bug in tessellate: please report it with the scheduler's log"
            )
            self.recorder.event(rec.obj, "Warning", "FailedScheduling", "Scheduling", message)
        self.queue.retry(queued.uid)

    def schedule_one(self, queued: QueuedPod) -> None:
        """The scheduling cycle (`scheduler/cycle.py`, under the cache lock, no I/O), then what
        its outcome asks of the API server: bind, fail, preempt, or publish a MIG plan."""
        if self._schedule_retries(queued):
            return
        with self.cache.lock:
            self._assumed_before, self._submitted = set(self.cache.assumed), set()
            outcome, elapsed = scheduling_cycle(self.cache, queued.uid, self._cycle_settings)
        match outcome:
            case Skip(park=park):
                (self.queue.unschedulable if park else self.queue.done)(queued.uid)
                return
            case BindGroup(decision=decision):
                self.metrics.algorithm.observe(elapsed)
                self._finish_group(decision, queued)
            case Invalid(rec=rec, message=message, as_written=as_written):
                self.metrics.algorithm.observe(elapsed)
                if not as_written:
                    self.queue.move_all_to_active()  # the dropped reservation may fit someone else
                self._fail(rec, queued, message, invalid=as_written)
            case Rejected(rec=rec, message=message, preemption=preemption):
                self.metrics.algorithm.observe(elapsed)
                self._fail(rec, queued, message)
                if preemption is not None:
                    self._preempt(rec, preemption)
            case WaitForMig(rec=rec, wait=wait, plan=plan):
                self.metrics.algorithm.observe(elapsed)
                self._publish_plan(rec, queued, wait, plan)
            case Bind(rec=rec, placed=placed):
                self.metrics.algorithm.observe(elapsed)
                self._submit_bind(placed, rec, queued)

    def _schedule_retries(self, queued: QueuedPod) -> bool:
        """The Batch phase: a retried pod and the retries behind it decided together. True when
        `queued` was placed by it; pods it left go on to their own cycles."""
        settings = self._cycle_settings
        if settings.retry_batch is None:
            return False
        companions = {p.uid: p for p in self.queue.claim_retries(queued, settings.retry_batch.max_pods - 1)}
        if not companions:
            return False
        try:
            with self.cache.lock:
                self._assumed_before, self._submitted = set(self.cache.assumed), set()
                batch, elapsed = retry_cycle(self.cache, [queued.uid, *companions], settings)
        except Exception:
            for uid in companions:  # back in line; the head is retried by `_cycle_failed`
                self.queue.release(uid)
            raise
        if batch is None:
            for uid in companions:
                self.queue.release(uid)
            return False
        self.metrics.algorithm.observe(elapsed)
        self.metrics.batches.labels("improved" if batch.improved else "greedy").inc()
        in_flight = {queued.uid: queued, **companions}
        if batch.placed:
            log.info("placing %d retried pod(s) decided together", len(batch.placed))
        for rec, placed in batch.placed:
            self._submit_bind(placed, rec, in_flight[rec.uid])
        for uid in batch.left:
            if uid != queued.uid:
                self.queue.release(uid)
        return queued.uid not in batch.left

    def _submit_bind(self, placed: Placed, rec: PodRecord, queued: QueuedPod) -> None:
        self.binder.submit(self._bind, placed, rec, queued)
        self._submitted.add(placed.uid)
        if self.cache.tenancy.active:
            self._after_placement(placed.uid)

    def _after_placement(self, uid: str) -> None:
        """Re-rank the tenant queues (usage moved); count the pod if its queue borrows."""
        with self.cache.lock:
            tenancy = self.cache.tenancy
            book = tenancy.sync(self.cache)
            charge = book.charges.get(uid) if book is not None else None
            tenancy.rerank(self.cache, charge.queue if charge is not None else None)
            if charge is not None and book is not None and book.over_quota(charge.queue, charge.model):
                self.metrics.borrowed.labels(charge.queue).inc()

    def _preempt(self, rec: PodRecord, preemption: Preemption) -> None:
        """Nominate the node on the pod, delete the victims, and retry the pod once they are gone."""
        if self.elector is not None and not self.elector.is_leader:
            return
        namespace, name = rec.key.split("/", 1)
        log.info("pod %s: %s", rec.key, preemption.describe())
        try:
            status = {"status": {"nominatedNodeName": preemption.node}}
            self.api.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", status)
        except ApiError as exc:
            log.warning("could not nominate %s for %s: %s", preemption.node, rec.key, exc)
        for victim in preemption.victims:
            victim_ns, victim_name = victim.key.split("/", 1)
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": victim.uid}}
            try:
                self.api.delete(f"/api/v1/namespaces/{victim_ns}/pods/{victim_name}", options)
            except ApiError as exc:
                if not (exc.is_not_found or exc.is_conflict):
                    log.warning("preempting %s for %s failed: %s", victim.key, rec.key, exc)
                continue
            self.metrics.preemption_victims.inc()
            if preemption.reclaimed_by is not None:
                self.metrics.reclaims.labels(preemption.reclaimed_by).inc()
                note = (
                    f"Reclaimed by queue {preemption.reclaimed_by} for pod {rec.key} "
                    f"on node {preemption.node}: this pod's queue was over its quota"
                )
                self.recorder.event(victim.obj, "Normal", "Reclaimed", "Preempting", note)
                continue
            self.recorder.event(
                victim.obj,
                "Normal",
                "Preempted",
                "Preempting",
                f"Preempted by pod {rec.key} on node {preemption.node}",
            )
        self.queue.clear_backoff(rec.uid)

    def _pending(self, rec: PodRecord) -> bool:
        """Ours to place now: this scheduler's, unbound, not being deleted, not gated."""
        return self._ours(rec) and not rec.deleting and not rec.gated

    def _finish_group(self, group: GroupDecision, queued: QueuedPod) -> None:
        """Bind what a pod group's pass placed; fail the rest. Members leave the queue's line
        together, so one pass per group serves them all."""
        in_flight = {
            rec.uid: queued if rec.uid == queued.uid else self.queue.claim(rec.uid, rec.key, rec.priority)
            for rec in group.members
        }
        if queued.uid not in in_flight:  # not a member to place after all (e.g. already assumed)
            self.queue.done(queued.uid)
        records = {rec.uid: rec for rec in group.members}
        if group.placed:
            log.info(
                "pod group %s: placing %d pod(s) (%d already running, %s needed)",
                group.group.key,
                len(group.placed),
                group.running,
                group.group.min_available,
            )
        for placed in group.placed:
            self._submit_bind(placed, records[placed.uid], in_flight[placed.uid])
        for uid, message in group.failed.items():
            self._fail(records[uid], in_flight[uid], message)

    def _publish_plan(self, rec: PodRecord, queued: QueuedPod, wait: MigWait, value: str) -> None:
        """Ask the node agent for the new MIG instances; the pod waits (parked) until it answers.

        Published from the scheduling loop, not the bind pool, so that a node's plans land in
        generation order."""
        try:
            if self.elector is not None and not self.elector.is_leader:
                raise _NotLeader()
            self.api.patch(f"/api/v1/nodes/{wait.node}", {"metadata": {"annotations": {PLAN: value}}})
        except Exception as exc:
            with self.cache.lock:
                self.cache.forget(rec.uid)
            log.warning("publishing the MIG plan for %s on %s failed: %s", rec.key, wait.node, exc)
            self.recorder.event(
                rec.obj, "Warning", "FailedScheduling", "MigPlan", f"Publishing the MIG plan failed: {exc}"
            )
            self.queue.retry(queued.uid)
            return
        self.metrics.attempts.labels("waiting_for_mig").inc()
        log.info("pod %s waits for %s (MIG plan generation %d)", rec.key, wait.description, wait.generation)
        self.queue.unschedulable(queued.uid)
        self.recorder.event(
            rec.obj,
            "Normal",
            "WaitingForMIG",
            "MigPlan",
            f"Waiting for the node agent to create {wait.description} "
            f"(MIG plan generation {wait.generation})",
        )

    def _fail(self, rec: PodRecord, queued: QueuedPod, message: str, invalid: bool = False) -> None:
        self.metrics.attempts.labels("unschedulable").inc()
        level = logging.WARNING if invalid else logging.INFO
        log.log(level, "pod %s unschedulable: %s", rec.key, message)
        self.queue.unschedulable(queued.uid, invalid=invalid)
        self.recorder.unschedulable(rec.obj, message)
        self.recorder.event(rec.obj, "Warning", "FailedScheduling", "Scheduling", message)

    def _bind(self, placed: Placed, rec: PodRecord, queued: QueuedPod) -> None:
        namespace, name = rec.key.split("/", 1)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": rec.uid,
                "annotations": {ASSIGNMENT: placed.annotation.encode()},
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": placed.node},
        }
        started = time.perf_counter()
        try:
            if self.elector is not None and not self.elector.is_leader:
                raise _NotLeader()
            self.api.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body)
        except Exception as exc:
            self._bind_failed(placed, rec, queued, exc)
            return
        self.metrics.bind.observe(time.perf_counter() - started)
        self.metrics.e2e.observe(time.monotonic() - queued.first_seen)
        self.metrics.attempts.labels("scheduled").inc()
        self.queue.done(queued.uid)
        log.debug("bound %s to %s %s", rec.key, placed.node, placed.annotation.encode())
        self.recorder.event(
            rec.obj, "Normal", "Scheduled", "Binding", f"Successfully assigned {rec.key} to {placed.node}"
        )

    def _bind_failed(self, placed: Placed, rec: PodRecord, queued: QueuedPod, exc: Exception) -> None:
        with self.cache.lock:
            self.cache.forget(placed.uid)
        self.queue.move_all_to_active()  # the forgotten share may fit someone else
        self.metrics.attempts.labels("error").inc()
        if isinstance(exc, _NotLeader):
            log.warning("not binding %s: this replica no longer leads", rec.key)
            return
        if isinstance(exc, ApiError) and exc.status in (404, 409):
            # Gone, already bound or being deleted: the watch brings the truth; never retry blindly.
            log.info("bind of %s not applied (%s); waiting for the pod's next update", rec.key, exc.message)
            self.queue.remove(queued.uid)
            return
        log.warning("bind of %s to %s failed: %s; retrying after backoff", rec.key, placed.node, exc)
        self.recorder.event(rec.obj, "Warning", "FailedScheduling", "Binding", f"Binding rejected: {exc}")
        self.queue.retry(queued.uid)


class _NotLeader(Exception):
    pass
