"""Which pod an Allocate call is for, and which GPUs the scheduler gave it.

The kubelet's Allocate names device IDs, not a pod. But the kubelet admits the
pods bound to its node one at a time, oldest first, and allocates each pod's
containers in order (init containers, then the others). So the pod being
admitted is the oldest pod on this node that still has a container asking for
this resource which has not been served yet, and that container is its first
such one. The scheduler's `tessellate.dev/assignment` annotation, written with
the Binding, says which GPUs that pod gets.

A container counts as served once this agent process served it, once the
kubelet reports it created (a container ID in its status), or once an agent
recorded it in the pod's `tessellate.dev/allocated` annotation
(`{"container": ["GPU-...", ...]}`), which covers pods admitted before this
agent ran. That annotation is writable by the pod's author, so when it alone
makes an older pod look served and a newer one is picked instead, the
Allocate is refused: the agent cannot tell which of the two the kubelet is
admitting, and guessing wrong would hand one pod the other's GPUs.

Trust (see `holdings.py` for the full rules):

* the assignment is honoured only on Tessellate pods (`spec.schedulerName` is
  the scheduler's name, `--scheduler-name`); any other pod is an unassigned
  pod whatever it carries: it gets the devices the kubelet picked, and a
  fraction is refused;
* nothing is handed out that another live pod holds: an assignment that
  collides is refused (the scheduler must place the pod again), and a
  kubelet pick that collides is swapped for free devices of the same resource
  when there are enough, else refused; a fraction fits only in what is left
  of its GPU's 1000 milli.

For `nvidia.com/mig-<profile>` the assignment's MIG entries (`mig`, `start`)
name instances on a GPU; the container gets the UUIDs of the MIG devices at
that GPU's start slot with that profile, which must exist on the node now.

A fraction (`tessellate.dev/gpu-milli`) in a pod whose assignment gives whole
GPUs (an init container's fraction next to whole GPUs in the app containers,
or the other way round: they never run at once) runs on the assignment's
first GPU, which the pod holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from tessellate.agent.holdings import (
    ALLOCATED,
    TESSELLATE,
    WHOLE,
    Grant,
    Holdings,
    Rules,
    age_key,
    holdings,
    pod_name,
    scheduler_of,
    served_containers,
    started,
)
from tessellate.agent.holdings import amount as _amount
from tessellate.agent.holdings import gpu_users as _gpu_users
from tessellate.agent.inventory import Gpu

from tessellate.kube import ApiError, KubeClient
from tessellate.wire.assignment import ASSIGNMENT, AssignmentError, GpuAssignment, GpuShare, decode
from tessellate.wire.podspec import GPU_MEMORY, GPU_MILLI, MIG_PREFIX

__all__ = ["ALLOCATED", "Claim", "ClaimError", "Claims", "KubePods", "PodSource", "gpu_users"]
log = logging.getLogger("tessellate.agent.claims")
T = TypeVar("T")


class ClaimError(Exception):
    """No pod on this node can be the one the kubelet is allocating for, or its record is bad."""


@dataclass(frozen=True)
class Claim:
    """What one container gets."""

    namespace: str
    pod: str
    uid: str
    container: str
    uuids: tuple[str, ...]
    milli: int | None = None
    """The container's share of its GPU (fractions only)."""
    memory_mib: int | None = None
    """GPU memory bound for the container (fractions with a memory request only)."""
    assigned: bool = True
    """False: the pod has no scheduler assignment and got what the kubelet picked."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.uid, self.container)

    @property
    def grant(self) -> Grant:
        return Grant(self.uuids, self.milli)

    def describe(self) -> str:
        return f"{self.namespace}/{self.pod} container {self.container}"


class PodSource(Protocol):
    def pods(self) -> list[dict[str, Any]]:
        """Every pod bound to this node, fresh from the API server."""
        ...

    def record(self, claim: Claim) -> None:
        """Remember on the pod that this container has been served."""
        ...


class KubePods:
    """The pods bound to one node, read and annotated through the API server."""

    def __init__(self, api: KubeClient, node: str):
        self.api = api
        self.node = node

    def pods(self) -> list[dict[str, Any]]:
        items, _ = self.api.list_all("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node}")
        return items

    def record(self, claim: Claim, attempts: int = 5) -> None:
        path = f"/api/v1/namespaces/{claim.namespace}/pods/{claim.pod}"
        for _ in range(attempts):
            pod = self.api.get(path)
            if (pod.get("metadata") or {}).get("uid") != claim.uid:
                return  # deleted and recreated under the same name: nothing to record
            served = served_containers(pod)
            served[claim.container] = list(claim.uuids)
            meta = {
                "resourceVersion": pod["metadata"]["resourceVersion"],
                "annotations": {ALLOCATED: json.dumps(served, separators=(",", ":"))},
            }
            try:
                self.api.patch(path, {"metadata": meta})
                return
            except ApiError as exc:
                if not exc.is_conflict:
                    raise
                # The pod changed under us (a status update): read it again.
        raise ApiError(
            409, "Conflict", f"pod kept changing; gave up after {attempts} attempts", "PATCH", path
        )


@dataclass(frozen=True)
class _Slot:
    """One container's slice of the pod's assignment."""

    container: str
    amount: int
    init: bool
    offset: int


def _container_share(items: Sequence[T], slot: _Slot, noun: str, where: str) -> Sequence[T]:
    """The container's part of the assignment's items: an init container's from the first,
    the others' at their offset."""
    start = 0 if slot.init else slot.offset
    mine = items[start : start + slot.amount]
    if len(mine) != slot.amount:
        raise ClaimError(
            f"{where}: container {slot.container} needs {slot.amount} {noun} from positions "
            f"{start}..{start + slot.amount - 1} of the assignment, which lists {len(items)}"
        )
    return mine


def _slots(pod: dict[str, Any], resource: str) -> list[_Slot]:
    """The pod's containers that ask for `resource`, in the kubelet's allocation order.

    Init containers run one after another, before the others, so each may use
    the pod's first GPUs; the other containers run together and split them.
    """
    spec = pod.get("spec") or {}
    out = []
    for c in spec.get("initContainers") or []:
        amount = _amount(c, resource)
        if amount:
            out.append(_Slot(c["name"], amount, True, 0))
    offset = 0
    for c in spec.get("containers") or []:
        amount = _amount(c, resource)
        if amount:
            out.append(_Slot(c["name"], amount, False, offset))
            offset += amount
    return out


def _uid(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("uid", "")


def _waiting(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def gpu_users(
    pods: list[dict[str, Any]],
    uuid_of_index: Callable[[int], str | None],
    scheduler_name: str = TESSELLATE,
) -> dict[str, str]:
    """GPU UUID -> who uses it as a whole GPU or a fraction, e.g. `pod ns/p as a whole GPU`.

    What `holdings.py` counts as held (MIG instances left out): switching such a GPU to
    MIG mode would pull it from under that pod. `Claims.gpu_users` also counts what the
    running agent served.
    """
    return _gpu_users(holdings(pods, Rules(scheduler_name, uuid_of_index), {}))


class Claims:
    """Find the claim behind an Allocate (or GetPreferredAllocation) call."""

    def __init__(
        self,
        source: PodSource,
        uuid_of_index: Callable[[int], str | None],
        gpu_at: Callable[[int], Gpu | None] | None = None,
        scheduler_name: str = TESSELLATE,
    ):
        self.source = source
        self.uuid_of_index = uuid_of_index
        self.gpu_at = gpu_at or (lambda index: None)
        """The node's GPU at an index now, with its MIG instances (MIG claims need them)."""
        self.scheduler_name = scheduler_name
        """Only pods with this spec.schedulerName have their assignment honoured."""
        self.rules = Rules(scheduler_name, uuid_of_index, self.gpu_at)
        self._served: dict[tuple[str, str], Grant] = {}
        """Containers served by this process and what they got; the annotation can lag
        behind a fast kubelet, and a pod's author may rewrite it."""

    def trusted(self, pod: dict[str, Any]) -> bool:
        return self.rules.trusted(pod)

    def holdings(self, pods: list[dict[str, Any]]) -> Holdings:
        """Who holds which GPU, share and MIG device on this node now."""
        return holdings(pods, self.rules, self._served)

    def gpu_users(self, pods: list[dict[str, Any]]) -> dict[str, str]:
        """`gpu_users`, counting what this process served too (for MIG plans)."""
        return _gpu_users(self.holdings(pods))

    def next_slot(
        self, resource: str, amount: int, pods: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, Any], _Slot] | None:
        """The (pod, container) the kubelet is allocating `amount` devices of `resource` for.

        Raises ClaimError when only a pod-written annotation tells it from an older pod.
        """
        pods = self.source.pods() if pods is None else pods
        chosen = self._oldest_pending(resource, amount, pods, believe_annotation=True)
        doubt = self._oldest_pending(resource, amount, pods, believe_annotation=False)
        if chosen is not None and doubt is not None and doubt[0] is not chosen[0]:
            raise ClaimError(
                f"cannot tell whether the kubelet is admitting pod {pod_name(doubt[0])} or the newer "
                f"{pod_name(chosen[0])}: both wait for {amount} {resource}, and container "
                f"{doubt[1].container} of {pod_name(doubt[0])} counts as served only by its {ALLOCATED} "
                "annotation (written by an earlier agent, or by the pod's author) and has not started; "
                "refusing rather than hand one pod the other's GPUs; recreate the refused pod once "
                f"{pod_name(doubt[0])} runs (or is deleted)"
            )
        return chosen

    def _oldest_pending(
        self, resource: str, amount: int, pods: list[dict[str, Any]], believe_annotation: bool
    ) -> tuple[dict[str, Any], _Slot] | None:
        candidates = []
        for pod in pods:
            if not _waiting(pod):
                continue
            uid = pod["metadata"].get("uid", "")
            done = started(pod) | (set(served_containers(pod)) if believe_annotation else set())
            pending = [
                s
                for s in _slots(pod, resource)
                if s.container not in done and (uid, s.container) not in self._served
            ]
            if pending and pending[0].amount == amount:
                candidates.append((pod, pending[0]))
        if not candidates:
            return None
        return min(candidates, key=lambda c: age_key(c[0]))

    def find(
        self,
        resource: str,
        requested: list[str],
        gpu_of: Callable[[str], str],
        candidates: Sequence[str] = (),
    ) -> Claim:
        """The claim for an Allocate of `requested` device IDs; does not record it.

        `candidates`: the healthy device IDs of this resource, from which a pod without a
        trusted assignment gets free devices in place of held ones the kubelet picked.
        """
        pods = self.source.pods()
        self._forget_gone(pods)
        found = self.next_slot(resource, len(requested), pods)
        if found is None:
            raise ClaimError(
                f"no pod bound to this node is waiting for {len(requested)} {resource}; "
                "was it scheduled by tessellate, and is the agent's view of the node's pods current?"
            )
        pod, slot = found
        return self.claim_for(pod, slot, resource, requested, gpu_of, pods, candidates)

    def claim_for(
        self,
        pod: dict[str, Any],
        slot: _Slot,
        resource: str,
        requested: list[str],
        gpu_of: Callable[[str], str],
        pods: list[dict[str, Any]] | None = None,
        candidates: Sequence[str] = (),
    ) -> Claim:
        """What the container gets, never a device another live pod holds (ClaimError if so)."""
        pods = self.source.pods() if pods is None else pods
        if not any(p is pod or _uid(p) == _uid(pod) for p in pods):
            pods = [*pods, pod]
        claim = self._claim(pod, slot, resource, requested, gpu_of)
        if claim.assigned:
            self._refuse_overlap(claim, pods)
            return claim
        return self._free_pick(pod, claim, pods, [gpu_of(d) for d in candidates])

    def _claim(
        self,
        pod: dict[str, Any],
        slot: _Slot,
        resource: str,
        requested: list[str],
        gpu_of: Callable[[str], str],
    ) -> Claim:
        meta = pod["metadata"]
        where = f"pod {meta.get('namespace')}/{meta.get('name')}"
        base = {
            "namespace": meta["namespace"],
            "pod": meta["name"],
            "uid": meta.get("uid", ""),
            "container": slot.container,
        }
        raw = (meta.get("annotations") or {}).get(ASSIGNMENT) if self.trusted(pod) else None
        if not raw:
            if resource == GPU_MILLI:
                raise ClaimError(self._no_fraction(pod, where))
            picked = tuple(dict.fromkeys(gpu_of(i) for i in requested))
            return Claim(**base, uuids=picked, assigned=False)
        try:
            assignment = decode(raw)
        except AssignmentError as exc:
            raise ClaimError(f"{where}: bad {ASSIGNMENT} annotation: {exc}") from None
        if resource.startswith(MIG_PREFIX):
            return Claim(**base, uuids=self._mig_uuids(assignment, slot, resource, where))
        instances = [s for s in assignment.gpus if s.mig is not None]
        if instances:
            first = instances[0]
            raise ClaimError(
                f"{where} asks for {resource}, but its assignment gives it MIG instances "
                f"({first.mig} at start {first.start} of GPU {first.index}); "
                f"a MIG instance is asked for as {MIG_PREFIX}{first.mig}"
            )
        uuids = self._uuids(assignment, where)
        if resource == GPU_MILLI:
            whole = all(s.milli == WHOLE for s in assignment.gpus)
            if not uuids or (len(uuids) > 1 and not whole):
                raise ClaimError(
                    f"{where}: a GPU fraction must be assigned exactly one GPU, got {len(uuids)}"
                )
            # With whole GPUs (a fraction in another phase than the whole GPUs): the first one.
            memory = self._memory(pod, slot, assignment)
            return Claim(**base, uuids=uuids[:1], milli=slot.amount, memory_mib=memory)
        return Claim(**base, uuids=_container_share(uuids, slot, "GPUs", where))

    def _no_fraction(self, pod: dict[str, Any], where: str) -> str:
        if not self.trusted(pod):
            return (
                f"{where} asks for {GPU_MILLI} but is not a Tessellate pod (spec.schedulerName is "
                f"{scheduler_of(pod)!r}, not {self.scheduler_name!r}), so it has no {ASSIGNMENT} "
                f"annotation the agent may trust; GPU fractions need schedulerName: {self.scheduler_name}"
            )
        return (
            f"{where} asks for {GPU_MILLI} but has no {ASSIGNMENT} annotation; GPU fractions need "
            f"schedulerName: {self.scheduler_name} and a binding by the Tessellate scheduler: delete "
            "and recreate the pod without spec.nodeName"
        )

    def _with(self, claim: Claim, grant: Grant, pods: list[dict[str, Any]]) -> Holdings:
        """Who would hold what if the claim's container got `grant`."""
        return holdings(pods, self.rules, {**self._served, claim.key: grant})

    def _refuse_overlap(self, claim: Claim, pods: list[dict[str, Any]]) -> None:
        held = self._with(claim, claim.grant, pods)
        for uuid in dict.fromkeys(claim.uuids):
            if held.milli(uuid) > WHOLE:
                raise ClaimError(self._overlap(claim, uuid, held))

    def _overlap(self, claim: Claim, uuid: str, held: Holdings) -> str:
        where = f"pod {claim.namespace}/{claim.pod}"
        label = self._label(uuid)
        others = held.holders(uuid, besides=claim.uid)
        own = held.own(uuid, claim.uid)
        again = "delete and recreate this pod so the scheduler places it again"
        if not others:
            return (
                f"{where}: its containers would hold {own} milli of {label}, more than the whole GPU, "
                f"so its {ASSIGNMENT} annotation does not add up; {again}"
            )
        who = ", ".join(h.describe(uuid) for h in others)
        if claim.milli is None:
            return f"{where}: {label} is already held by {who}; refusing to hand it out twice; {again}"
        taken = sum(h.milli for h in others)
        return (
            f"{where}: {label} has {taken} of its {WHOLE} milli held by {who}, and this pod needs {own} "
            f"(container {claim.container}: {claim.milli}); refusing to hand out more than the whole "
            f"GPU; {again}"
        )

    def _free_pick(
        self, pod: dict[str, Any], claim: Claim, pods: list[dict[str, Any]], spare: list[str]
    ) -> Claim:
        """The kubelet's pick, with any device another pod holds swapped for a free one."""
        wanted = len(claim.uuids)
        chosen: list[str] = []
        for uuid in dict.fromkeys([*claim.uuids, *spare]):
            if len(chosen) == wanted:
                break
            if self._with(claim, Grant((*chosen, uuid), claim.milli), pods).milli(uuid) <= WHOLE:
                chosen.append(uuid)
        if len(chosen) < wanted:
            raise ClaimError(self._no_free(pod, claim, pods))
        if chosen != list(claim.uuids):
            log.info(
                "%s: the kubelet picked %s, held by others; giving it %s",
                claim.describe(),
                list(claim.uuids),
                chosen,
            )
        return replace(claim, uuids=tuple(chosen))

    def _no_free(self, pod: dict[str, Any], claim: Claim, pods: list[dict[str, Any]]) -> str:
        held = self.holdings(pods)
        taken = next((u for u in claim.uuids if held.holders(u, besides=claim.uid)), claim.uuids[0])
        who = (
            ", ".join(h.describe(taken) for h in held.holders(taken, besides=claim.uid))
            or "its own containers"
        )
        why = (
            f"has no {ASSIGNMENT} annotation"
            if self.trusted(pod)
            else f"is not a Tessellate pod (spec.schedulerName {scheduler_of(pod)!r})"
        )
        return (
            f"pod {claim.namespace}/{claim.pod} {why}, so container {claim.container} gets the devices "
            f"the kubelet picked, but {self._label(taken)} is already held by {who} and this node has "
            f"no other free healthy device for it ({len(claim.uuids)} needed); refusing to hand it out "
            f"twice; recreate the pod once GPUs are free, or give it schedulerName: {self.scheduler_name} "
            "so the scheduler places it"
        )

    def _label(self, uuid: str) -> str:
        """`GPU 3 (GPU-...)`, `MIG device MIG-... (1g.10gb at start 0 of GPU 1)`, or the UUID."""
        for index in range(1024):
            if uuid.startswith("MIG-"):
                gpu = self.gpu_at(index)
                if gpu is None:
                    break
                found = next((m for m in gpu.mig if m.uuid == uuid), None)
                if found is not None:
                    return f"MIG device {uuid} ({found.profile} at start {found.start} of GPU {index})"
            else:
                mine = self.uuid_of_index(index)
                if mine is None:
                    break
                if mine == uuid:
                    return f"GPU {index} ({uuid})"
        return f"MIG device {uuid}" if uuid.startswith("MIG-") else f"GPU {uuid}"

    def _forget_gone(self, pods: list[dict[str, Any]]) -> None:
        """Drop what this process served to pods that no longer exist."""
        alive = {_uid(p) for p in pods}
        for key in [k for k in self._served if k[0] not in alive]:
            del self._served[key]

    def _uuids(self, assignment: GpuAssignment, where: str) -> tuple[str, ...]:
        out = []
        for share in assignment.gpus:
            mine = self.uuid_of_index(share.index)
            if share.uuid and mine and share.uuid != mine:
                raise ClaimError(
                    f"{where}: the assignment says GPU {share.index} is {share.uuid}, but on this node "
                    f"GPU {share.index} is {mine}; refusing to guess which one was meant"
                )
            uuid = share.uuid or mine
            if uuid is None:
                raise ClaimError(
                    f"{where}: the assignment names GPU {share.index}, which this node does not have"
                )
            out.append(uuid)
        return tuple(out)

    def _mig_uuids(
        self, assignment: GpuAssignment, slot: _Slot, resource: str, where: str
    ) -> tuple[str, ...]:
        """The MIG device UUIDs of the container's slice of the assignment's MIG instances."""
        profile = resource.removeprefix(MIG_PREFIX)
        shares = [s for s in assignment.gpus if s.mig is not None]
        if not shares:
            raise ClaimError(
                f"{where} asks for {resource}, but its assignment names no MIG instance "
                f"(it lists {len(assignment.gpus)} whole GPU(s) or fractions)"
            )
        for share in shares:
            if share.mig != profile:
                raise ClaimError(
                    f"{where}: the assignment names a {share.mig} instance on GPU {share.index}, "
                    f"but the container asks for {resource}"
                )
        out: list[str] = []
        for share in _container_share(shares, slot, "MIG instances", where):
            out.extend(self._instance(share, profile, where))
        return tuple(out)

    def _instance(self, share: GpuShare, profile: str, where: str) -> list[str]:
        """The UUIDs of the MIG device(s) the share names; refuses what does not exist."""
        gpu = self.gpu_at(share.index)
        named = f"{profile} at start {share.start} of GPU {share.index}"
        if gpu is None:
            raise ClaimError(f"{where}: the assignment names {named}, but this node has no GPU {share.index}")
        if share.uuid and share.uuid != gpu.uuid:
            raise ClaimError(
                f"{where}: the assignment says GPU {share.index} is {share.uuid}, but on this node "
                f"GPU {share.index} is {gpu.uuid}; refusing to guess which one was meant"
            )
        if not gpu.mig_enabled:
            raise ClaimError(
                f"{where}: the assignment names {named}, but GPU {share.index} is not in MIG mode"
            )
        there = [m for m in gpu.mig if m.start == share.start]
        uuids = [m.uuid for m in there if m.profile == profile]
        if not uuids:
            listed = sorted(gpu.mig, key=lambda m: m.start)
            has = ", ".join(f"{m.profile} at start {m.start}" for m in listed) or "no instances"
            raise ClaimError(
                f"{where}: the assignment names {named}, which does not exist on this node "
                f"(GPU {share.index} has {has})"
            )
        return uuids

    @staticmethod
    def _memory(pod: dict[str, Any], slot: _Slot, assignment: GpuAssignment) -> int | None:
        containers = (pod.get("spec") or {}).get("initContainers", []) + (pod.get("spec") or {}).get(
            "containers", []
        )
        own = next((_amount(c, GPU_MEMORY) for c in containers if c.get("name") == slot.container), 0)
        if own:
            return own
        sharing = _slots(pod, GPU_MILLI)
        if len(sharing) == 1:
            return assignment.gpus[0].memory_mib
        return None

    def served(self, claim: Claim) -> None:
        """Record that the claim's container got its devices (here and on the pod)."""
        self._served[claim.key] = claim.grant
        try:
            self.source.record(claim)
        except (ApiError, OSError) as exc:
            # The devices are handed out either way; without the record a later Allocate
            # could pick this container again only after the agent restarts.
            log.warning("could not record the allocation on %s: %s", claim.describe(), exc)
