"""The `tessellate.dev/assignment` annotation: the scheduler's GPU choice on the pod.

Written on the Binding so the API server stores it atomically with
`spec.nodeName`; read back on restart to rebuild the cache and by the node
agent to hand the kubelet exactly these devices. Parsing is strict: a value
that does not match the schema is an error naming what is wrong, never a
silent guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tessellate.placement import MILLI_PER_GPU

ASSIGNMENT = "tessellate.dev/assignment"


class AssignmentError(ValueError):
    """An assignment annotation that does not follow the schema."""


@dataclass(frozen=True)
class GpuShare:
    index: int
    milli: int = MILLI_PER_GPU
    uuid: str | None = None
    memory_mib: int | None = None
    mig: str | None = None
    """A MIG instance's profile (then `start` is its first memory slice and milli is unused)."""
    start: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.uuid:
            out["uuid"] = self.uuid
        if self.mig is not None:
            out["mig"] = self.mig
            out["start"] = self.start
            return out
        out["milli"] = self.milli
        if self.memory_mib:
            out["memoryMiB"] = self.memory_mib
        return out


@dataclass(frozen=True)
class GpuAssignment:
    gpus: tuple[GpuShare, ...]
    numa: tuple[int, ...] = ()
    """NUMA nodes of the chosen GPUs (when the node's topology is known), for CPU pinning."""

    def encode(self) -> str:
        data: dict[str, Any] = {"gpus": [g.to_json() for g in self.gpus]}
        if self.numa:
            data["numa"] = list(self.numa)
        return json.dumps(data, separators=(",", ":"))

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)


def _int(item: dict[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AssignmentError(f"{where}: '{key}' must be an integer, got {value!r}")
    return value


def decode(text: str) -> GpuAssignment:
    """Parse and validate an annotation value."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AssignmentError(f"not JSON ({exc.args[0]}): {text[:80]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise AssignmentError(f'expected an object like {{"gpus": [...]}}, got {text[:80]!r}')
    shares = []
    for i, item in enumerate(data["gpus"]):
        where = f"gpus[{i}]"
        if not isinstance(item, dict):
            raise AssignmentError(f"{where}: expected an object, got {item!r}")
        index = _int(item, "index", where)
        milli = _int(item, "milli", where) if "milli" in item else MILLI_PER_GPU
        if index < 0:
            raise AssignmentError(f"{where}: negative GPU index {index}")
        if not 0 < milli <= MILLI_PER_GPU:
            raise AssignmentError(f"{where}: milli must be 1..{MILLI_PER_GPU}, got {milli}")
        uuid = item.get("uuid")
        if uuid is not None and not isinstance(uuid, str):
            raise AssignmentError(f"{where}: 'uuid' must be a string, got {uuid!r}")
        memory = _int(item, "memoryMiB", where) if "memoryMiB" in item else None
        mig, start = item.get("mig"), None
        if mig is not None:
            if not isinstance(mig, str) or not mig:
                raise AssignmentError(f"{where}: 'mig' must be a MIG profile name, got {mig!r}")
            start = _int(item, "start", where)
            if start < 0:
                raise AssignmentError(f"{where}: negative MIG start slot {start}")
        shares.append(GpuShare(index=index, milli=milli, uuid=uuid, memory_mib=memory, mig=mig, start=start))
    whole = [s.index for s in shares if s.mig is None]
    if len(set(whole)) != len(whole):
        raise AssignmentError(f"the same GPU index is listed twice: {whole}")
    instances = [(s.index, s.start) for s in shares if s.mig is not None]
    if len(set(instances)) != len(instances):
        raise AssignmentError(f"the same MIG instance is listed twice: {instances}")
    numa = data.get("numa", [])
    if not isinstance(numa, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in numa):
        raise AssignmentError(f"'numa' must be a list of integers, got {numa!r}")
    return GpuAssignment(tuple(shares), tuple(numa))
