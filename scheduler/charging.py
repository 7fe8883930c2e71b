"""What every bound or assumed pod holds on its node: the charges behind the placement state.

Every bound pod is charged, including pods of other schedulers: GPUs from our
assignment annotation when this scheduler wrote it, otherwise the GPUs the device
plugin would most likely give (first free; tightest for a fraction; the GPUs with the
most free slices on a time-sliced node). Extended resources the core does not model
(hugepages, vendor devices) are counted beside it. One `Charges` belongs to one
`ClusterState`: the cache makes a new one with every rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from tessellate.placement import MILLI_PER_GPU, Assignment, ClusterState, OverCommitError, Request
from tessellate.placement.devices import first_free, tightest_fit
from tessellate.placement.model import MigSlot
from tessellate.placement.timeslice import replica_request
from tessellate.scheduler.nodes import NodeInfo
from tessellate.scheduler.podrecord import PodRecord

from tessellate.wire.assignment import ASSIGNMENT, GpuAssignment

log = logging.getLogger("tessellate.charging")

Report = Callable[[PodRecord, str], None]
"""Tells (once, as an event on the pod) what of a bound pod could not be counted as written."""


class Charges:
    """Charges bound pods and assumed decisions to `state`, and takes them back."""

    def __init__(self, state: ClusterState, infos: Sequence[NodeInfo], scheduler_name: str, report: Report):
        self.state = state
        self.scheduler_name = scheduler_name
        """Only pods with this schedulerName carry assignments that are believed."""
        self._report = report
        self._closed = {i.name for i in infos if i.quarantine is not None}
        names = sorted({r for i in infos for r in i.extended})
        self.ext_alloc = {r: np.array([i.extended.get(r, 0) for i in infos], dtype=np.int64) for r in names}
        self.ext_used = {r: np.zeros(len(infos), dtype=np.int64) for r in names}
        self.overcommitted = np.zeros(len(infos), dtype=bool)
        """Nodes whose bound pods claim more than they have: they take no new pods."""
        self._slice_ids: dict[str, tuple[str, ...]] = {}
        """Bound pods charged as several one-slice assignments (k replicas on a time-sliced node)."""
        self._extended: dict[str, tuple[int, dict[str, int]]] = {}

    def block_unhealthy_gpus(self, infos: Sequence[NodeInfo]) -> list[tuple[int, str]]:
        """An unhealthy GPU, or one in MIG mode without instances, is charged to a placeholder
        so no decision can pick it; returns the nodes where that failed, and why."""
        busy = Request(cpu_milli=0, gpu_count=1, gpu_milli=MILLI_PER_GPU)
        failed: list[tuple[int, str]] = []
        for index, info in enumerate(infos):
            blocked = dict.fromkeys(info.unhealthy_gpus, "unhealthy-gpu")
            blocked.update({g: "mig-mode-empty-gpu" for g in info.mig_empty_gpus if g not in blocked})
            try:
                for gpu, why in blocked.items():
                    self.state.allocate(
                        Assignment(f"{why}/{info.name}/{gpu}", index, info.name, busy, (gpu,))
                    )
            except (OverCommitError, ValueError, IndexError) as exc:
                failed.append((index, f"its unhealthy or MIG-mode GPUs cannot be blocked ({exc})"))
        return failed

    # -- bound pods --------------------------------------------------------------------

    def charge_bound(self, rec: PodRecord) -> None:
        """Count a bound pod where it runs; what cannot be counted is reported, and a node
        whose pods claim more than it has is marked over-committed. Raises only on bugs."""
        state = self.state
        if rec.uid in state.live or rec.node_name not in state.index:
            return  # unknown node: charged when the node shows up (a rebuild)
        if rec.request is None:
            self._report(rec, f"bound pod's resources cannot be read ({rec.request_error}); not counted")
            return
        if rec.node_name in self._closed:
            return  # it has no capacity to count against and takes no pods; its event says why
        node = state.index[rec.node_name]
        request = rec.request.request
        if request.gpu_count and state.replicas[node] > 1:
            self._charge_slices(rec, node)
            return
        if request.is_mig:
            assignment = Assignment(rec.uid, node, rec.node_name, request, mig=self._mig_of(rec, node))
        else:
            assignment = Assignment(rec.uid, node, rec.node_name, request, self._gpus_of(rec, node))
        try:
            state.allocate(assignment)
        except OverCommitError as exc:
            self.overcommitted[node] = True
            self._report(rec, f"cannot be counted on {rec.node_name} ({exc}); the node takes no new pods")
            return
        self.charge_extended(rec.uid, node, rec.request.extended)

    def _charge_slices(self, rec: PodRecord, node: int) -> None:
        """A pod on a time-sliced node holds one slice per replica it asked for: on the GPU its
        annotation names, else (another scheduler's pod) where NVIDIA's plugin puts replicas,
        the GPUs with the most free slices."""
        state = self.state
        assert rec.request is not None
        request = rec.request.request
        one = replica_request(replace(request, gpu_count=1), int(state.replicas[node]))
        if one is None:
            self.overcommitted[node] = True
            self._report(rec, f"asks for {request.describe()} on time-sliced {rec.node_name}; not counted")
            return
        assignment = self._trusted_assignment(rec)
        shares = assignment.gpus if assignment is not None else ()
        if shares and len(shares) == request.gpu_count and all(s.milli == one.gpu_milli for s in shares):
            gpus = [s.index for s in shares]
        else:
            if assignment is not None or (rec.assignment_error and self._ours(rec)):
                self._report(rec, f"annotation {ASSIGNMENT} does not match its slices; counting likely ones")
            gpus = []
            left = state.gpu_left[node].copy()
            for _ in range(request.gpu_count):
                gpu = int(np.argmax(np.where(state.gpu_exists[node], left, -1)))
                gpus.append(gpu)
                left[gpu] -= one.gpu_milli
        ids = tuple(rec.uid if k == 0 else f"{rec.uid}#slice{k}" for k in range(len(gpus)))
        try:
            for k, (pod, gpu) in enumerate(zip(ids, gpus, strict=True)):
                held = one if k == 0 else replace(one, cpu_milli=0, memory_mib=0)
                state.allocate(Assignment(pod, node, rec.node_name, held, (gpu,)))
        except OverCommitError as exc:
            for pod in ids:
                if pod in state.live:
                    state.release(pod)
            self.overcommitted[node] = True
            self._report(rec, f"cannot be counted on {rec.node_name} ({exc}); the node takes no new pods")
            return
        if len(ids) > 1:
            self._slice_ids[rec.uid] = ids[1:]
        self.charge_extended(rec.uid, node, rec.request.extended)

    def _gpus_of(self, rec: PodRecord, node: int) -> tuple[int, ...]:
        """GPUs from the annotation when it fits the request, else the likely device-plugin choice."""
        assert rec.request is not None
        request = rec.request.request
        if not request.gpu_count:
            return ()
        assignment = self._trusted_assignment(rec)
        if rec.assignment_error and self._ours(rec):
            self._report(rec, f"{rec.assignment_error}; counting the GPUs the device plugin would pick")
        elif assignment is not None:
            shares = assignment.gpus
            if len(shares) == request.gpu_count and all(s.milli == request.gpu_milli for s in shares):
                return assignment.indices
            self._report(
                rec,
                f"annotation {ASSIGNMENT} lists {len(shares)} GPU(s) at "
                f"{sorted({s.milli for s in shares})} milli but the pod asks for {request.describe()}; "
                "counting the GPUs the device plugin would pick",
            )
        if request.is_fraction:
            return (tightest_fit(self.state, node, request),)  # -1 if none fits: allocate refuses it
        return first_free(self.state, node, request.gpu_count)

    def _mig_of(self, rec: PodRecord, node: int) -> tuple[MigSlot, ...]:
        """MIG instances from the annotation when it fits the request, else the first free ones
        (what NVIDIA's device plugin would most likely give)."""
        assert rec.request is not None
        request, state = rec.request.request, self.state
        assignment = self._trusted_assignment(rec)
        if rec.assignment_error and self._ours(rec):
            self._report(
                rec, f"{rec.assignment_error}; counting the MIG instances the device plugin would pick"
            )
        elif assignment is not None:
            shares = assignment.gpus
            if len(shares) == request.mig_count and all(s.mig == request.mig_profile for s in shares):
                return tuple(MigSlot(s.index, request.mig_profile, s.start or 0) for s in shares)
            listed = [s.mig or "whole GPU" for s in shares]
            self._report(
                rec,
                f"annotation {ASSIGNMENT} lists {listed} but the pod asks for {request.describe()}; "
                "counting the MIG instances the device plugin would pick",
            )
        if node not in state.mig.layouts:
            return ()  # allocate refuses: the node is marked over-committed
        free = [
            MigSlot(gpu, i.profile, i.start)
            for gpu, (layout, busy) in enumerate(state.mig.slots_of(node))
            for i in layout
            if i.profile == request.mig_profile and i not in busy
        ]
        return tuple(free[: request.mig_count])

    def _ours(self, rec: PodRecord) -> bool:
        return rec.scheduler_name == self.scheduler_name

    def _trusted_assignment(self, rec: PodRecord) -> GpuAssignment | None:
        """The pod's assignment if this scheduler wrote it: on any other pod the annotation is
        the pod author's words, so it is ignored and the pod counted as the device plugin
        would place it (a forged one must not move GPUs around, nor close the node)."""
        if rec.assignment is None and rec.assignment_error is None:
            return None
        if not self._ours(rec):
            self._report(
                rec,
                f"annotation {ASSIGNMENT} ignored: only pods with schedulerName {self.scheduler_name} "
                "carry one; counting the GPUs the device plugin would pick",
            )
            return None
        return rec.assignment

    # -- any charged pod ---------------------------------------------------------------

    def charge_extended(self, uid: str, node: int, extended: dict[str, int]) -> None:
        """Count the extended resources a pod holds on `node` (its GPUs are in the state)."""
        for name, amount in extended.items():
            if name in self.ext_used:
                self.ext_used[name][node] += amount
        self._extended[uid] = (node, dict(extended))

    def is_charged(self, uid: str) -> bool:
        return uid in self._extended

    def holdings(self, uid: str) -> list[str]:
        """The placement state's allocation keys a charged pod holds (several slices on a
        time-sliced node); empty if it holds nothing."""
        keys = [uid, *self._slice_ids.get(uid, ())]
        return [key for key in keys if key in self.state.live]

    def extended_charge(self, uid: str) -> dict[str, int]:
        """The other extended resources a charged pod holds on its node."""
        charged = self._extended.get(uid)
        return dict(charged[1]) if charged is not None else {}

    def uncharge(self, uid: str) -> bool:
        """Take back everything `uid` holds; True if it held anything."""
        charged = self._extended.pop(uid, None)
        if charged is not None:
            node, extended = charged
            for name, amount in extended.items():
                if name in self.ext_used:
                    self.ext_used[name][node] -= amount
        released = False
        for key in [uid, *self._slice_ids.pop(uid, ())]:
            if key in self.state.live:
                self.state.release(key)
                released = True
        return released or charged is not None
