"""A workload trace: the cluster's nodes and the pods that arrive at it."""

from __future__ import annotations

from dataclasses import dataclass

from tessellate.placement import NodeSpec, Request


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file, line and column."""

    def __init__(self, path: object, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


@dataclass(frozen=True, slots=True)
class PodRecord:
    """One pod of a trace; times are seconds from the trace start (None: not recorded).

    `queue` names the pod's queue ("": the default queue), `priority` orders it within its
    queue and as a reclaim victim (higher matters more), and `pod_group` / `pod_group_min`
    make it a member of a gang that starts only when at least `pod_group_min` members run
    (0: every member of the group in the trace)."""

    name: str
    request: Request
    creation_time: float | None = None
    deletion_time: float | None = None
    queue: str = ""
    priority: int = 0
    pod_group: str = ""
    pod_group_min: int = 0


@dataclass(frozen=True)
class Trace:
    """Nodes plus pods; `name` is what reports call the workload (the pod file's stem)."""

    name: str
    nodes: tuple[NodeSpec, ...]
    pods: tuple[PodRecord, ...]

    @property
    def total_gpus(self) -> int:
        return sum(node.gpu_count for node in self.nodes)

    @property
    def gpu_demand_milli(self) -> int:
        return sum(p.request.total_gpu_milli for p in self.pods)
