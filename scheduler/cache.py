"""The scheduler's view of the cluster: every node and every bound pod, counted.

Every bound pod is charged to its node, including pods of other schedulers:
GPUs from our assignment annotation when it has one, otherwise the GPUs the
device plugin would most likely give (first free; tightest for a fraction).
A decision is *assumed* (charged at once) before its bind is sent and
*forgotten* if the bind fails, so no GPU share is ever offered twice. The
placement core's state is rebuilt from these records whenever the node set
changes, and on start, which is how a restarted scheduler finds its own past
decisions again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tessellate.placement import (
    MILLI_PER_GPU,
    Assignment,
    ClusterState,
    Decision,
    NumpyInts,
    OverCommitError,
    Placer,
    PolicyContext,
    TargetWorkload,
    Unschedulable,
    create_policy,
)
from tessellate.placement.fragmentation import Fragmentation, FragmentationTracker
from tessellate.placement.topology import numa_nodes
from tessellate.placement.workload import expected_workload
from tessellate.scheduler.charging import Charges
from tessellate.scheduler.constraints import EligibilityCache
from tessellate.scheduler.framework import FilterContext, build_filters, run_filters
from tessellate.scheduler.migplans import (
    MigWait,
    PlanRecord,
    WaitOutcome,
    describe_new,
    instance_counts,
    plan_record,
    wait_outcome,
    wanted_plan,
)
from tessellate.scheduler.nodes import NodeInfo, node_info
from tessellate.scheduler.plugins import DEFAULT_FILTERS
from tessellate.scheduler.podrecord import TERMINAL_PHASES, PodRecord
from tessellate.scheduler.target import products, target_requests
from tessellate.scheduler.tenancy import Tenancy

from tessellate.wire.assignment import ASSIGNMENT, GpuAssignment, GpuShare
from tessellate.wire.migplan import encode_plan
from tessellate.wire.podspec import GPU_SHARED

log = logging.getLogger("tessellate.cache")


@dataclass(frozen=True)
class Placed:
    """A decision that is assumed in the cache and ready to bind."""

    uid: str
    key: str
    node: str
    assignment: Assignment
    annotation: GpuAssignment


@dataclass
class AccountingProblem:
    """A bound pod the cache could not charge as its annotation says (for an event)."""

    key: str
    uid: str
    message: str


@dataclass(frozen=True)
class NodeProblem:
    """Something a node declares that the cache ignored or that closed the node (for an event)."""

    node: str
    message: str
    quarantined: bool


class ClusterCache:
    """Nodes, pods and the placement state; every method expects `lock` held."""

    def __init__(
        self,
        policy: str,
        on_problem: Callable[[AccountingProblem, PodRecord], None] | None = None,
        seed: int | None = None,
        max_sharers: int = 0,
        scheduler_name: str = "tessellate",
        on_node_problem: Callable[[NodeProblem], None] | None = None,
        filters: Iterable[str] = DEFAULT_FILTERS,
    ):
        self.lock = threading.RLock()
        self.policy_name = policy
        self.scheduler_name = scheduler_name
        """Only pods with this schedulerName carry assignments the cache believes."""
        self.filters = build_filters(list(filters))
        """The profile's Filter plugins, in order (`scheduler/framework.py`)."""
        self.tenancy = Tenancy(scheduler_name)
        """Queues and their quota book (`scheduler/tenancy.py`), fed by the Queue informer."""
        self.anti_affinity_uids: set[str] = set()
        """Pods with required anti-affinity: every decision checks their terms."""
        self.max_sharers = max_sharers
        """Most fractions one GPU may hold (the config's maxGpuSharers); 0: unlimited."""
        self.rng = NumpyInts(seed)
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodRecord] = {}
        self.assumed: dict[str, Placed] = {}
        self._groups: dict[str, set[str]] = {}
        """Pod group key -> uids of its members (bound or not)."""
        self.priorities: Counter[int] = Counter()
        """How many known pods have each priority: preemption is skipped when none is lower."""
        self.state: ClusterState | None = None
        self.placer: Placer | None = None
        self.target: TargetWorkload | None = None
        self.eligibility = EligibilityCache()
        self.quarantined = np.zeros(0, dtype=bool)
        """Nodes that take no new pods because what they declare cannot be trusted."""
        self.quarantine_reasons: dict[str, str] = {}
        self.build_error: str | None = None
        """Why the last rebuild failed (nothing is placed until one succeeds); None when fine."""
        self.charges: Charges | None = None
        """What every bound and assumed pod holds in `state` (`scheduler/charging.py`)."""
        self.serves_fractions = np.zeros(0, dtype=bool)
        self.renamed_replicas = np.zeros(0, dtype=bool)
        """Nodes whose time-sliced replicas are `nvidia.com/gpu.shared` (none of `nvidia.com/gpu`)."""
        self.plan_records: dict[str, PlanRecord] = {}
        """Per node, what its MIG plan annotations say (`scheduler/migplans.py`)."""
        self.published: dict[str, int] = {}
        """Per node, the last MIG plan generation this scheduler published."""
        self.mig_waits: dict[str, MigWait] = {}
        """Pods whose new MIG instances are reserved while the node agent creates them."""
        self._dirty = True
        self._reported: set[tuple[str, str]] = set()
        self.on_problem = on_problem
        self.on_node_problem = on_node_problem
        self._node_reported: dict[str, str] = {}
        self.rebuilds = 0
        self._fragmentation: FragmentationTracker | None = None

    # -- nodes ---------------------------------------------------------------------

    def upsert_node(self, node: dict[str, Any]) -> bool:
        """Record a node; True when scheduling-relevant facts changed."""
        info = node_info(node)
        self._report_node(info)
        record = plan_record(node)
        plans_moved = self.plan_records.get(info.name, PlanRecord()) != record
        if plans_moved:
            self.plan_records[info.name] = record
            if record.problem:
                log.warning("node %s: %s", info.name, record.problem)
        if self.nodes.get(info.name) == info:
            return plans_moved  # waiting MIG pods look again; the placement state stands
        self.nodes[info.name] = info
        self._dirty = True
        return True

    def delete_node(self, name: str) -> bool:
        self._node_reported.pop(name, None)
        if self.nodes.pop(name, None) is None:
            return False
        self._dirty = True
        return True

    def replace_nodes(self, nodes: Iterable[dict[str, Any]]) -> None:
        nodes = list(nodes)
        self.plan_records = {n["metadata"]["name"]: plan_record(n) for n in nodes}
        infos = {i.name: i for i in map(node_info, nodes)}
        for info in infos.values():
            self._report_node(info)
        if infos != self.nodes:
            self.nodes = infos
            self._dirty = True

    def _report_node(self, info: NodeInfo, quarantine: str | None = None) -> None:
        """Tell once per change what of a node was ignored or why it takes no new pods."""
        why = quarantine or info.quarantine
        message = why or info.problem
        if message is None:
            self._node_reported.pop(info.name, None)
            return
        if self._node_reported.get(info.name) == message:
            return
        self._node_reported[info.name] = message
        log.warning("node %s: %s", info.name, message)
        if self.on_node_problem is not None:
            self.on_node_problem(NodeProblem(info.name, message, quarantined=why is not None))

    def node_problems(self) -> list[NodeProblem]:
        """What stands reported of each node now (for metrics and a new leader's events)."""
        return [
            NodeProblem(
                name, message, self.nodes[name].quarantine is not None or name in self.quarantine_reasons
            )
            for name, message in self._node_reported.items()
            if name in self.nodes
        ]

    # -- pods ----------------------------------------------------------------------

    def upsert_pod(self, pod: dict[str, Any]) -> tuple[PodRecord | None, bool]:
        """Record a pod; returns (record, freed) where freed says capacity was released."""
        rec = PodRecord.parse(pod)
        phase = (pod.get("status") or {}).get("phase")
        if phase in TERMINAL_PHASES:
            return None, self.delete_pod(rec.uid)
        old = self.pods.get(rec.uid)
        if old is not None and old.node_name and old.node_name == rec.node_name:
            self._keep_first_assignment(old, rec)
        self.pods[rec.uid] = rec
        self._regroup(old, rec)
        self._count_priority(old, rec)
        if rec.anti_affinity:
            self.anti_affinity_uids.add(rec.uid)
        else:
            self.anti_affinity_uids.discard(rec.uid)
        freed = False
        if not rec.node_name:
            return rec, False
        if rec.uid in self.assumed:
            placed = self.assumed.pop(rec.uid)
            same = placed.node == rec.node_name and (
                rec.assignment is not None and rec.assignment.indices == placed.annotation.indices
            )
            if same:
                return rec, False  # our bind landed: the charge stands
            self._uncharge(rec.uid)
            freed = True
        elif old is not None and old.node_name == rec.node_name and self._charged(rec.uid):
            return rec, False  # already charged (a later update of a bound pod)
        if not self._dirty:
            try:
                self._charge(rec)
            except Exception:
                log.exception("charging pod %s failed; rebuilding the cluster view", rec.key)
                self._dirty = True  # the rebuild charges from the records, all or nothing
        return rec, freed

    def _keep_first_assignment(self, old: PodRecord, new: PodRecord) -> None:
        """A bound pod holds the GPUs it was given when it started: an annotation edited
        afterwards changes nothing on the node, so the cache keeps counting the first one."""
        if (old.assignment, old.assignment_error) == (new.assignment, new.assignment_error):
            return
        self._report(
            new,
            f"annotation {ASSIGNMENT} changed after the pod was bound; ignored (the pod keeps "
            "the GPUs it was given; only the scheduler writes this annotation, with the binding)",
        )
        new.assignment, new.assignment_error = old.assignment, old.assignment_error

    def invalidate(self) -> None:
        """Rebuild the placement state from the records before the next decision (after an
        unexpected error, whatever it left half-written is thrown away)."""
        self._dirty = True

    def delete_pod(self, uid: str) -> bool:
        rec = self.pods.pop(uid, None)
        self._regroup(rec, None)
        self._count_priority(rec, None)
        self.anti_affinity_uids.discard(uid)
        self.assumed.pop(uid, None)
        self.mig_waits.pop(uid, None)
        freed = self._uncharge(uid)
        overcommitted = self.charges is not None and self.charges.overcommitted.any()
        if rec is not None and rec.node_name and overcommitted:
            self._dirty = True  # maybe the over-committed node is fine again
        return freed

    def group_members(self, key: str) -> list[PodRecord]:
        """Every known pod of a pod group (`scheduler/gang.py`), bound or not."""
        return [self.pods[uid] for uid in self._groups.get(key, ())]

    def _count_priority(self, old: PodRecord | None, new: PodRecord | None) -> None:
        if old is not None:
            self.priorities[old.priority] -= 1
            if not self.priorities[old.priority]:
                del self.priorities[old.priority]
        if new is not None:
            self.priorities[new.priority] += 1

    def _regroup(self, old: PodRecord | None, new: PodRecord | None) -> None:
        before = old.group.key if old is not None and old.group is not None else None
        after = new.group.key if new is not None and new.group is not None else None
        if before == after:
            return
        if before is not None and old is not None:
            members = self._groups.get(before, set())
            members.discard(old.uid)
            if not members:
                self._groups.pop(before, None)
        if after is not None and new is not None:
            self._groups.setdefault(after, set()).add(new.uid)

    def replace_pods(self, pods: Iterable[dict[str, Any]]) -> list[PodRecord]:
        """A relist: forget pods that vanished, record the rest; returns pending records."""
        seen: set[str] = set()
        pending: list[PodRecord] = []
        for pod in pods:
            rec, _ = self.upsert_pod(pod)
            if rec is not None:
                seen.add(rec.uid)
                if not rec.node_name:
                    pending.append(rec)
        for uid in list(self.pods):
            if uid not in seen:
                self.delete_pod(uid)
        return pending

    # -- the placement state -------------------------------------------------------

    def ensure_built(self) -> bool:
        """Rebuild the placement state if the node set changed; False if nothing may be placed
        (no nodes, or the rebuild failed: `build_error` says why).

        All or nothing: the cache is marked clean only once every node and every bound pod is
        in the new state. A node or pod that cannot be counted quarantines that node; any
        other failure leaves no state at all, so no decision is ever taken on a half-built one.
        """
        if not self._dirty and self.state is not None:
            return True
        self.rebuilds += 1
        infos = [self.nodes[n] for n in sorted(self.nodes)]
        try:
            self._rebuild(infos)
        except Exception as exc:
            log.exception("rebuilding the cluster view failed; nothing is placed until it succeeds")
            self._drop_state()
            self.build_error = (
                f"the scheduler could not rebuild its view of the cluster ({type(exc).__name__}: {exc}); "
                "retrying on the next change"
            )
            return False
        self.build_error = None
        self._dirty = False
        return self.state is not None

    def _drop_state(self) -> None:
        self.state = self.placer = self.charges = None
        self.eligibility.reset(())
        self._fragmentation = None

    def _rebuild(self, infos: list[NodeInfo]) -> None:
        self._drop_state()
        if not infos:
            return
        state = ClusterState([replace(i.spec, max_sharers=self.max_sharers) for i in infos])
        self.quarantined = np.array([i.quarantine is not None for i in infos], dtype=bool)
        self.quarantine_reasons = {}
        self.serves_fractions = np.array([i.serves_fractions for i in infos], dtype=bool)
        self.renamed_replicas = np.array([i.replica_resource == GPU_SHARED for i in infos], dtype=bool)
        self.state = state
        self.charges = Charges(state, infos, self.scheduler_name, self._report)
        self.target = self._target_workload()
        self.placer = self._new_placer()
        for node, why in self.charges.block_unhealthy_gpus(infos):
            self._quarantine(node, why)
        for rec in self.pods.values():
            if rec.node_name and rec.uid not in self.assumed:
                self._charge_or_quarantine(rec)
        for placed in list(self.assumed.values()):
            rec = self.pods.get(placed.uid)
            if placed.node not in state.index or rec is None:
                self.assumed.pop(placed.uid)
                continue
            index = state.index[placed.node]
            # Plans are derived again: instances a pending plan asked for may exist by now.
            moved = replace(placed.assignment, pod=placed.uid, node=index, mig_plans=())
            try:
                state.allocate(moved)
                self.charges.charge_extended(placed.uid, index, rec.request.extended if rec.request else {})
            except OverCommitError as exc:
                log.error("in-flight decision for %s no longer fits after a node change: %s", placed.key, exc)
        self.eligibility.reset(infos)

    def _quarantine(self, node: int, why: str) -> None:
        """Close one node for a reason found while counting it (its event says what to fix)."""
        assert self.state is not None
        name = self.state.names[node]
        self.quarantined[node] = True
        self.quarantine_reasons[name] = why
        self._report_node(self.nodes[name], quarantine=why)

    def _charge_or_quarantine(self, rec: PodRecord) -> None:
        """Charge a bound pod; an unexpected failure closes its node, never the whole view."""
        assert self.state is not None
        try:
            self._charge(rec)
        except Exception as exc:
            log.exception("charging pod %s on %s failed", rec.key, rec.node_name)
            self._uncharge(rec.uid)
            self._quarantine(
                self.state.index[rec.node_name],
                f"bound pod {rec.key} could not be counted ({type(exc).__name__}: {exc}); "
                "the node takes no new pods until the cluster view is rebuilt",
            )

    def refresh_target(self) -> bool:
        """Re-derive FGD's expected workload from the pods seen now; True if it changed."""
        if self.state is None:
            return False
        target = self._target_workload()
        if target == self.target:
            return False
        self.target = target
        self.placer = self._new_placer()
        self._fragmentation = None
        return True

    def _target_workload(self) -> TargetWorkload:
        """FGD's expected workload from the pods seen now, each with the GPU models its
        product constraints allow: the simulator's definition for the same pods."""
        known = products(self.nodes.values())
        pods = [
            (r.request.request, r.constraints)
            for r in self.pods.values()
            if r.request is not None and r.constraints is not None
        ]
        return expected_workload(target_requests(pods, known), set(known.values()))

    def _new_placer(self) -> Placer:
        assert self.state is not None
        policy = create_policy(self.policy_name, PolicyContext(rng=self.rng, target=self.target))
        return Placer(self.state, policy)

    # -- charging (scheduler/charging.py) --------------------------------------------

    def _charge(self, rec: PodRecord) -> None:
        if self.charges is not None:
            self.charges.charge_bound(rec)

    def _charged(self, uid: str) -> bool:
        return self.charges is not None and self.charges.is_charged(uid)

    def _uncharge(self, uid: str) -> bool:
        return self.charges is not None and self.charges.uncharge(uid)

    def _report(self, rec: PodRecord, message: str) -> None:
        log.warning("pod %s: %s", rec.key, message)
        if (rec.uid, message) not in self._reported:
            self._reported.add((rec.uid, message))
            if self.on_problem is not None:
                self.on_problem(AccountingProblem(rec.key, rec.uid, message), rec)

    # -- deciding ----------------------------------------------------------------------

    def filter(
        self,
        rec: PodRecord,
        used: dict[str, np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        pods_matter: bool = True,
    ) -> tuple[np.ndarray, Counter[str]]:
        """Nodes the profile's filters let the pod use (within `mask`), with kube-scheduler-style
        reasons for the others. `used`: extended-resource usage to test against (a what-if);
        `pods_matter=False` leaves out the filters that other pods' presence decides, for the
        nodes preemption may free."""
        assert self.state is not None and rec.request is not None and rec.constraints is not None
        filters = self.filters if pods_matter else [f for f in self.filters if not f.reads_pods]
        assert self.charges is not None
        ctx = FilterContext(self, self.charges.ext_used if used is None else used)
        return run_filters(filters, ctx, rec, mask)

    def decide(self, rec: PodRecord) -> Placed | Unschedulable:
        """Run one scheduling cycle for a pending pod and assume the result."""
        if not self.ensure_built():
            if self.build_error is not None:
                return Unschedulable(len(self.nodes), Counter({self.build_error: len(self.nodes)}))
            return Unschedulable(node_count=0)
        assert self.state is not None and self.placer is not None and rec.request is not None
        state = self.state
        mask, reasons = self.filter(rec)
        decision: Decision = self.placer.place(rec.uid, rec.request.request, mask)
        if isinstance(decision, Unschedulable):
            return Unschedulable(node_count=len(state), reasons=reasons + decision.reasons)
        return self.reserve(rec, decision)

    def reserve(self, rec: PodRecord, decision: Assignment) -> Placed:
        """Reserve: charge a decision (this cycle's, or a batch's) and assume it until its bind
        lands or fails. Raises OverCommitError, with nothing charged, if it does not fit."""
        assert self.state is not None and self.charges is not None and rec.request is not None
        self.state.allocate(decision)
        self.charges.charge_extended(rec.uid, decision.node, rec.request.extended)
        try:
            placed = self._placed(rec, decision)
        except Exception:
            self._uncharge(rec.uid)  # nothing half-assumed stays behind
            raise
        self.assumed[rec.uid] = placed
        return placed

    def _placed(self, rec: PodRecord, decision: Assignment) -> Placed:
        """The decision with the annotation the Binding will carry."""
        assert rec.request is not None
        info = self.nodes[decision.node_name]
        memory = rec.request.gpu_memory_mib or None
        topology = info.spec.topology
        shares = tuple(
            GpuShare(index=g, milli=decision.gpu_milli, uuid=info.uuid_of(g), memory_mib=memory)
            for g in decision.gpus
        ) + tuple(
            GpuShare(index=m.gpu, uuid=info.uuid_of(m.gpu), mig=m.profile, start=m.start)
            for m in decision.mig
        )
        annotation = GpuAssignment(
            shares,
            numa=numa_nodes(topology, decision.gpus) if topology is not None and decision.gpus else (),
        )
        return Placed(rec.uid, rec.key, decision.node_name, decision, annotation)

    def forget(self, uid: str) -> None:
        """Undo an assumed decision whose bind failed (or whose MIG wait ended)."""
        self.mig_waits.pop(uid, None)
        if self.assumed.pop(uid, None) is not None:
            self._uncharge(uid)

    # -- dynamic MIG: reserve, publish, wait (scheduler/migplans.py) ----------------------

    def start_mig_wait(self, placed: Placed, timeout: float) -> tuple[MigWait, str]:
        """Hold an assumed decision that creates MIG instances; returns the wait and the node's
        new `tessellate.dev/mig-plan` value to publish."""
        assert self.state is not None
        node = placed.node
        record = self.plan_records.get(node, PlanRecord())
        answered = record.status.generation if record.status is not None else 0
        generation = max(record.generation, answered, self.published.get(node, 0)) + 1
        self.published[node] = generation
        uuids = self.nodes[node].gpu_uuids
        plan = wanted_plan(self.state, self.state.index[node], generation, uuids)
        wait = MigWait(
            node,
            generation,
            time.monotonic() + timeout,
            describe_new(placed.assignment.mig_plans, node),
        )
        self.mig_waits[placed.uid] = wait
        return wait, encode_plan(plan)

    def mig_wait_outcome(self, uid: str, now: float | None = None) -> WaitOutcome:
        wait = self.mig_waits[uid]
        info = self.nodes.get(wait.node)
        if info is None:
            return WaitOutcome(message=f"node {wait.node} is gone")
        record = self.plan_records.get(wait.node, PlanRecord())
        return wait_outcome(wait, record, instance_counts(info.spec.mig), info.mig_allocatable, now)

    # -- observations --------------------------------------------------------------------

    def gpu_usage_by_model(self) -> dict[str, tuple[int, int, float, float]]:
        """Per GPU model: (total milli, allocated milli, FGD fragment milli, fragmentation ratio)."""
        state = self.state
        if state is None:
            return {}
        if self._fragmentation is None and self.target is not None:
            self._fragmentation = FragmentationTracker(Fragmentation(self.target, state), state)
        tracker = self._fragmentation
        if tracker is not None:
            tracker.refresh()
        out: dict[str, tuple[int, int, float, float]] = {}
        for m, model in enumerate(state.gpu_models):
            nodes = state.model_id == m
            total = int(state.gpu_count[nodes].sum()) * MILLI_PER_GPU
            free = int(state.gpu_total_left[nodes].sum())
            frag = float(tracker.frag[nodes].sum()) if tracker is not None else 0.0
            out[model] = (total, total - free, frag, frag / free if free else 0.0)
        return out
