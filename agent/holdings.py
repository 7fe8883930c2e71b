"""What the live pods on this node hold: GPUs (whole or milli), and MIG devices, by whom.

The agent must never hand out a GPU, a share beyond what is left of a GPU's
1000 milli, or a MIG device, that another live pod holds. Pod annotations are
written by whoever may update the pod, so only these count as held:

* what this agent process served (it remembers every container it answered);
* the scheduler's `tessellate.dev/assignment` on a Tessellate pod
  (`spec.schedulerName` is the scheduler's name): the GPUs, shares and MIG
  instances it names, served yet or not; any other pod's assignment is
  ignored, since anyone who can create a pod can write one;
* a container's `tessellate.dev/allocated` entry (what an agent served,
  recorded on the pod) when the pod is a Tessellate pod or the kubelet reports
  the container started (a container ID in its status): that covers pods
  admitted before this agent process started. A foreign pod's entry for a
  container that has not started counts for nothing, so a pod author cannot
  block the node's GPUs by writing one. An entry never counts for more than
  the container asks for (its `nvidia.com/gpu` count, one GPU for a
  fraction, its MIG count), nor for a container that asks for no GPU.

Pods in phase Succeeded or Failed hold nothing; a deleting pod still does (it
may still run). A pod holds on a GPU the largest of what it needs in any one
phase: each init container alone, or its app containers and sidecars
together (a whole GPU counts 1000 milli, a MIG device 1000 of itself), and at
least what its trusted assignment gives it there. So a pod's own containers
never count against each other more than they can run at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessellate.agent.inventory import Gpu

from tessellate.wire.assignment import ASSIGNMENT, AssignmentError, GpuShare, decode
from tessellate.wire.podspec import GPU, GPU_MILLI, MIG_PREFIX, QuantityError, count, is_sidecar

ALLOCATED = "tessellate.dev/allocated"
TESSELLATE = "tessellate"
"""The scheduler's default name (`schedulerName` in its configuration)."""
WHOLE = 1000
FINISHED = ("Succeeded", "Failed")


def served_containers(pod: dict[str, Any]) -> dict[str, list[str]]:
    """The pod's `tessellate.dev/allocated` annotation: container -> UUIDs (as written, unchecked)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ALLOCATED)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [u for u in v if isinstance(u, str)] for k, v in data.items() if isinstance(v, list)}


def started(pod: dict[str, Any]) -> set[str]:
    """Containers the kubelet has created (a container ID in the status, which pods cannot write)."""
    status = pod.get("status") or {}
    names = set()
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item.get("containerID"):
            names.add(item.get("name", ""))
    return names


def amount(container: dict[str, Any], resource: str) -> int:
    """What the container asks of `resource` (requests over limits; 0 when unreadable)."""
    resources = container.get("resources") or {}
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    raw = merged.get(resource)
    if raw is None:
        return 0
    try:
        return max(count(raw), 0)
    except QuantityError:
        return 0


def mig_amount(container: dict[str, Any]) -> int:
    resources = container.get("resources") or {}
    names = {*(resources.get("limits") or {}), *(resources.get("requests") or {})}
    return sum(amount(container, n) for n in names if n.startswith(MIG_PREFIX))


def finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in FINISHED


def scheduler_of(pod: dict[str, Any]) -> str:
    """The pod's `spec.schedulerName` (the API server's default when unset)."""
    return (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"


def pod_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def uid_of(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("uid", "")


def age_key(pod: dict[str, Any]) -> tuple[str, str, str]:
    """Oldest first, as the kubelet admits pods (names break ties)."""
    meta = pod.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("namespace") or "", meta.get("name") or "")


@dataclass(frozen=True)
class Grant:
    """What one container was handed: GPU UUIDs (a share when milli is set) or MIG device UUIDs."""

    uuids: tuple[str, ...]
    milli: int | None = None


@dataclass(frozen=True)
class Holder:
    """One pod's hold on one GPU (milli, 1000 = whole) or MIG device (always 1000)."""

    uid: str
    pod: str
    milli: int

    def describe(self, device: str = "") -> str:
        if device.startswith("MIG-"):
            return f"pod {self.pod}"
        if self.milli >= WHOLE:
            return f"pod {self.pod} as a whole GPU"
        return f"pod {self.pod} ({self.milli} milli)"


@dataclass
class Holdings:
    """Per GPU UUID and per MIG device UUID (`MIG-...`), who holds how much of it."""

    held: dict[str, list[Holder]] = field(default_factory=dict)

    def holders(self, uuid: str, besides: str | None = None) -> list[Holder]:
        """Who holds `uuid`, leaving out the pod with uid `besides`."""
        return [h for h in self.held.get(uuid, []) if h.uid != besides]

    def milli(self, uuid: str, besides: str | None = None) -> int:
        return sum(h.milli for h in self.holders(uuid, besides))

    def own(self, uuid: str, uid: str) -> int:
        return sum(h.milli for h in self.held.get(uuid, []) if h.uid == uid)


Served = Mapping[tuple[str, str], Grant]
"""(pod uid, container) -> what this agent process served it."""


@dataclass(frozen=True)
class Rules:
    """What the accounting trusts and how it finds the node's devices."""

    scheduler_name: str = TESSELLATE
    uuid_of_index: Callable[[int], str | None] = lambda index: None
    gpu_at: Callable[[int], Gpu | None] = lambda index: None

    def trusted(self, pod: dict[str, Any]) -> bool:
        """A Tessellate pod: its assignment was written with the scheduler's Binding."""
        return scheduler_of(pod) == self.scheduler_name


def holdings(pods: Iterable[dict[str, Any]], rules: Rules, served: Served) -> Holdings:
    """Who holds what among the pods that have not finished (see the module docstring)."""
    out = Holdings()
    for pod in sorted(pods, key=age_key):
        if finished(pod):
            continue
        holder = pod_name(pod)
        for uuid, milli in pod_holdings(pod, rules, served).items():
            out.held.setdefault(uuid, []).append(Holder(uid_of(pod), holder, milli))
    return out


def pod_holdings(pod: dict[str, Any], rules: Rules, served: Served) -> dict[str, int]:
    """UUID (GPU or MIG device) -> milli this pod holds of it."""
    spec = pod.get("spec") or {}
    grants = container_grants(pod, rules, served)
    alone: dict[str, int] = {}
    together: dict[str, int] = {}
    for container in spec.get("initContainers") or []:
        grant = grants.get(container.get("name", ""))
        if grant is not None:
            into = together if is_sidecar(container) else alone
            _add_grant(into, grant, keep_max=into is alone)
    for container in spec.get("containers") or []:
        grant = grants.get(container.get("name", ""))
        if grant is not None:
            _add_grant(together, grant, keep_max=False)
    out = {u: max(alone.get(u, 0), together.get(u, 0)) for u in {*alone, *together}}
    if rules.trusted(pod):
        for uuid, milli in assigned(pod, rules).items():
            out[uuid] = max(out.get(uuid, 0), milli)
    return {u: m for u, m in out.items() if m > 0}


def _add_grant(into: dict[str, int], grant: Grant, keep_max: bool) -> None:
    for uuid in dict.fromkeys(grant.uuids):
        milli = WHOLE if grant.milli is None or uuid.startswith("MIG-") else grant.milli
        into[uuid] = max(into.get(uuid, 0), milli) if keep_max else into.get(uuid, 0) + milli


def container_grants(pod: dict[str, Any], rules: Rules, served: Served) -> dict[str, Grant]:
    """Container -> what it holds: this process's record, else an annotation entry that counts."""
    spec = pod.get("spec") or {}
    uid = uid_of(pod)
    recorded = served_containers(pod)
    believed = rules.trusted(pod)
    running = started(pod)
    out: dict[str, Grant] = {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        name = container.get("name", "")
        if (uid, name) in served:
            out[name] = served[(uid, name)]
        elif name in recorded and (believed or name in running):
            grant = _bounded(container, recorded[name])
            if grant is not None:
                out[name] = grant
    return out


def _bounded(container: dict[str, Any], uuids: list[str]) -> Grant | None:
    """An annotation entry cut to what the container asks for (a pod may write more)."""
    migs = [u for u in dict.fromkeys(uuids) if u.startswith("MIG-")][: mig_amount(container)]
    gpus = [u for u in dict.fromkeys(uuids) if u and not u.startswith("MIG-")]
    whole, milli = amount(container, GPU), amount(container, GPU_MILLI)
    if whole:
        return Grant((*gpus[:whole], *migs))
    if milli and gpus:
        if migs:
            return None  # a fraction and MIG devices at once: never something an agent wrote
        return Grant((gpus[0],), min(milli, WHOLE))
    return Grant(tuple(migs)) if migs else None


def assigned(pod: dict[str, Any], rules: Rules) -> dict[str, int]:
    """UUID -> milli the pod's assignment gives it (read only for Tessellate pods)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ASSIGNMENT)
    if not raw:
        return {}
    try:
        shares = decode(raw).gpus
    except AssignmentError:
        return {}
    containers = ((pod.get("spec") or {}).get("initContainers") or []) + (
        (pod.get("spec") or {}).get("containers") or []
    )
    asks_gpu = any(amount(c, GPU) or amount(c, GPU_MILLI) for c in containers)
    asks_mig = any(mig_amount(c) for c in containers)
    out: dict[str, int] = {}
    for share in shares:
        if share.mig is None and asks_gpu:
            uuid = share.uuid or rules.uuid_of_index(share.index)
            if uuid:
                out[uuid] = max(out.get(uuid, 0), share.milli)
        elif share.mig is not None and asks_mig:
            for uuid in instance_uuids(share, rules.gpu_at):
                out[uuid] = WHOLE
    return out


def instance_uuids(share: GpuShare, gpu_at: Callable[[int], Gpu | None]) -> list[str]:
    """The MIG devices on the node at the share's GPU, start slot and profile (none if absent)."""
    gpu = gpu_at(share.index)
    if gpu is None or not gpu.mig_enabled or (share.uuid and share.uuid != gpu.uuid):
        return []
    return [m.uuid for m in gpu.mig if m.start == share.start and m.profile == share.mig]


def gpu_users(holdings_: Holdings) -> dict[str, str]:
    """GPU UUID -> who uses it whole or in part, e.g. `pod ns/p as a whole GPU` (MIG devices left out).

    Switching such a GPU to MIG mode would pull it from under that pod.
    """
    out: dict[str, str] = {}
    for uuid, holders in holdings_.held.items():
        if uuid.startswith("MIG-") or not holders:
            continue
        first = holders[0]
        kind = "a whole GPU" if first.milli >= WHOLE else "a fraction"
        out[uuid] = f"pod {first.pod} as {kind}"
    return out
