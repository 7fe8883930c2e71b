"""Which pod an Allocate call is for, and which GPUs the scheduler gave it.

The kubelet's Allocate names device IDs, not a pod. But the kubelet admits the
pods bound to its node one at a time, oldest first, and allocates each pod's
containers in order (init containers, then the others). So the pod being
admitted is the oldest pod on this node that still has a container asking for
this resource which has not been served yet, and that container is its first
such one. The scheduler's `tessellate.dev/assignment` annotation, written with
the Binding, says which GPUs that pod gets.

A container counts as served once the agent has recorded it in the pod's
`tessellate.dev/allocated` annotation (`{"container": ["GPU-...", ...]}`), or
once the kubelet reports it created (a container ID in its status), which
covers pods admitted before this agent ran.

For `nvidia.com/mig-<profile>` the assignment's MIG entries (`mig`, `start`)
name instances on a GPU; the container gets the UUIDs of the MIG devices at
that GPU's start slot with that profile, which must exist on the node now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from scheduler.agent.inventory import Gpu
from scheduler.annotations import ASSIGNMENT, AssignmentError, GpuAssignment, GpuShare, decode
from scheduler.kube import ApiError, KubeClient
from scheduler.podspec import GPU_MEMORY, GPU_MILLI, MIG_PREFIX, QuantityError, count

ALLOCATED = "tessellate.dev/allocated"
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


def served_containers(pod: dict[str, Any]) -> dict[str, list[str]]:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ALLOCATED)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): list(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _started(pod: dict[str, Any]) -> set[str]:
    status = pod.get("status") or {}
    names = set()
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item.get("containerID"):
            names.add(item.get("name", ""))
    return names


def _amount(container: dict[str, Any], resource: str) -> int:
    resources = container.get("resources") or {}
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    raw = merged.get(resource)
    if raw is None:
        return 0
    try:
        return count(raw)
    except QuantityError:
        return 0


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


def _waiting(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def gpu_users(pods: list[dict[str, Any]], uuid_of_index: Callable[[int], str | None]) -> dict[str, str]:
    """GPU UUID -> who uses it as a whole GPU or a fraction, e.g. `pod ns/p as a whole GPU`.

    A GPU counts as used when a pod that has not finished (a deleting one may still
    run) was served it (`tessellate.dev/allocated`) or is assigned it by the
    scheduler (admitted or not yet): either way, switching the GPU to MIG mode
    would pull it from under that pod. MIG instances do not count.
    """
    out: dict[str, str] = {}
    for pod in sorted(pods, key=_age_key):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        meta = pod.get("metadata") or {}
        kind = "a fraction" if _slots(pod, GPU_MILLI) else "a whole GPU"
        who = f"pod {meta.get('namespace')}/{meta.get('name')} as {kind}"
        uuids = [u for served in served_containers(pod).values() for u in served]
        raw = (meta.get("annotations") or {}).get(ASSIGNMENT)
        if raw:
            try:
                shares = decode(raw).gpus
            except AssignmentError:
                shares = ()
            uuids += [s.uuid or uuid_of_index(s.index) or "" for s in shares if s.mig is None]
        for uuid in uuids:
            if isinstance(uuid, str) and uuid and not uuid.startswith("MIG-"):
                out.setdefault(uuid, who)
    return out


def _age_key(pod: dict[str, Any]) -> tuple[str, str, str]:
    meta = pod.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("namespace") or "", meta.get("name") or "")


class Claims:
    """Find the claim behind an Allocate (or GetPreferredAllocation) call."""

    def __init__(
        self,
        source: PodSource,
        uuid_of_index: Callable[[int], str | None],
        gpu_at: Callable[[int], Gpu | None] | None = None,
    ):
        self.source = source
        self.uuid_of_index = uuid_of_index
        self.gpu_at = gpu_at or (lambda index: None)
        """The node's GPU at an index now, with its MIG instances (MIG claims need them)."""
        self._served: set[tuple[str, str]] = set()
        """Containers served by this process; the annotation can lag behind a fast kubelet."""

    def next_slot(
        self, resource: str, amount: int, pods: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, Any], _Slot] | None:
        """The (pod, container) the kubelet is allocating `amount` devices of `resource` for."""
        candidates = []
        for pod in pods if pods is not None else self.source.pods():
            if not _waiting(pod):
                continue
            uid = pod["metadata"].get("uid", "")
            done = set(served_containers(pod)) | _started(pod)
            pending = [
                s
                for s in _slots(pod, resource)
                if s.container not in done and (uid, s.container) not in self._served
            ]
            if pending and pending[0].amount == amount:
                candidates.append((pod, pending[0]))
        if not candidates:
            return None
        return min(candidates, key=lambda c: _age_key(c[0]))

    def find(self, resource: str, requested: list[str], gpu_of: Callable[[str], str]) -> Claim:
        """The claim for an Allocate of `requested` device IDs; does not record it."""
        found = self.next_slot(resource, len(requested))
        if found is None:
            raise ClaimError(
                f"no pod bound to this node is waiting for {len(requested)} {resource}; "
                "was it scheduled by tessellate, and is the agent's view of the node's pods current?"
            )
        pod, slot = found
        return self.claim_for(pod, slot, resource, requested, gpu_of)

    def claim_for(
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
        raw = (meta.get("annotations") or {}).get(ASSIGNMENT)
        if not raw:
            if resource == GPU_MILLI:
                raise ClaimError(
                    f"{where} asks for {GPU_MILLI} but has no {ASSIGNMENT} annotation; "
                    "GPU fractions need schedulerName: tessellate"
                )
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
            if len(uuids) != 1:
                raise ClaimError(
                    f"{where}: a GPU fraction must be assigned exactly one GPU, got {len(uuids)}"
                )
            memory = self._memory(pod, slot, assignment)
            return Claim(**base, uuids=uuids, milli=slot.amount, memory_mib=memory)
        return Claim(**base, uuids=_container_share(uuids, slot, "GPUs", where))

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
        self._served.add(claim.key)
        try:
            self.source.record(claim)
        except (ApiError, OSError) as exc:
            # The devices are handed out either way; without the record a later Allocate
            # could pick this container again only after the agent restarts.
            log.warning("could not record the allocation on %s: %s", claim.describe(), exc)
