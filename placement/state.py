"""The cluster state: numpy arrays indexed by node and GPU.

`allocate` and `release` are the only writers. Both validate first and write
second, so a refused call leaves the state exactly as it was. Every write bumps
the node's `version`, which lets scorers recompute only nodes that changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tessellate.placement.checks import ALL, Need, Nodes, refusal_of
from tessellate.placement.migstate import MigAllocationError, MigBook
from tessellate.placement.model import MILLI_PER_GPU, Assignment, NodeSpec

SHARE_TAG = 0
"""Affinity-tag column for sharing (fractional) pods; column n is `n-gpu` pods."""

UNBOUNDED = 1 << 62
"""Free GPU memory (MiB) and sharer limit of a GPU where neither is known or set: never limits."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class OverCommitError(ValueError):
    """An allocate or release that would break the state's invariants; nothing was written."""


class ClusterState:
    """Free capacity per node and per GPU, plus the live assignments that explain it.

    Node order matters: scores that tie go to the lowest node index, so a driver
    that wants a particular tie-break (the simulator's seeded permutation, the
    scheduler's name order) builds the state with nodes in that order.
    """

    def __init__(self, nodes: Sequence[NodeSpec]):
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.nodes: tuple[NodeSpec, ...] = tuple(nodes)
        self.names: tuple[str, ...] = tuple(n.name for n in self.nodes)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise ValueError("duplicate node names in the cluster")
        n = len(self.nodes)
        self.max_gpus = max(1, max(node.gpu_count for node in self.nodes))
        self.gpu_models: tuple[str, ...] = tuple(
            sorted({node.gpu_model for node in self.nodes if node.gpu_count})
        )
        model_ids = {m: i for i, m in enumerate(self.gpu_models)}
        self.model_id = np.array(
            [model_ids[node.gpu_model] if node.gpu_count else -1 for node in self.nodes],
            dtype=np.int32,
        )
        self.gpu_count = np.array([node.gpu_count for node in self.nodes], dtype=np.int64)
        self.cpu_cap = np.array([node.cpu_milli for node in self.nodes], dtype=np.int64)
        self.mem_cap = np.array([node.memory_mib for node in self.nodes], dtype=np.int64)
        self.max_pods = np.array([node.max_pods for node in self.nodes], dtype=np.int64)
        self.gpu_exists = np.arange(self.max_gpus)[None, :] < self.gpu_count[:, None]
        self.replicas = np.array([node.gpu_replicas for node in self.nodes], dtype=np.int64)
        """Time-slicing replicas per GPU (1: GPUs are not time-sliced); see `placement.timeslice`."""
        self.time_sliced = bool((self.replicas > 1).any())
        self.replica_groups: tuple[tuple[int, np.ndarray], ...] = tuple(
            (int(r), _frozen(self.replicas == r)) for r in np.unique(self.replicas)
        )
        """(replicas, nodes with that many) per count present, ascending: ordinary nodes first."""
        # Mutable state (written only by _apply):
        self.cpu_left = self.cpu_cap.copy()
        self.mem_left = self.mem_cap.copy()
        self.pod_count = np.zeros(n, dtype=np.int64)
        self.gpu_left = np.where(self.gpu_exists, MILLI_PER_GPU, 0).astype(np.int64)
        self.mig = MigBook(self.nodes)
        for node in self.mig.layouts:  # partitioned GPUs offer no milli-GPU
            mode = self.mig.in_mig_mode(node)
            self.gpu_left[node, : len(mode)][mode] = 0
        self.affinity = np.zeros((n, self.max_gpus + 1), dtype=np.int64)
        # Fraction bounds: free GPU memory and sharer count per GPU. The flags stay False
        # unless some node knows its GPU memory or limits sharers, so that unbounded
        # clusters (the FGD paper's) take exactly the paths they took before.
        mem = np.array([node.gpu_memory_mib or UNBOUNDED for node in self.nodes], dtype=np.int64)
        self.gpu_mem_left = np.where(self.gpu_exists, mem[:, None], 0).astype(np.int64)
        sharers = np.array([node.max_sharers or UNBOUNDED for node in self.nodes], dtype=np.int64)
        self.sharer_cap = np.broadcast_to(sharers[:, None], self.gpu_left.shape)
        self.gpu_sharers = np.zeros_like(self.gpu_left)
        self.gpu_memory_known = any(node.gpu_memory_mib and node.gpu_count for node in self.nodes)
        self.sharers_limited = any(node.max_sharers and node.gpu_count for node in self.nodes)
        self.version = np.zeros(n, dtype=np.int64)
        # Derived per-node summaries, kept in step with gpu_left:
        self.gpu_total_left = self.gpu_left.sum(axis=1)
        self.gpu_free_count = (self.gpu_left == MILLI_PER_GPU).sum(axis=1)
        self.gpu_max_left = self.gpu_left.max(axis=1)
        self.live: dict[str, Assignment] = {}
        self.keys_on: list[set[str]] = [set() for _ in range(n)]
        """Per node, the keys of `live` placed there (followers of the state, such as the quota
        book, re-read only the nodes whose `version` moved)."""

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum()) * MILLI_PER_GPU

    @property
    def allocated_gpu_milli(self) -> int:
        """Milli-GPU in use; a GPU in MIG mode counts its busy instances' compute share."""
        mig_idle = self.mig.mode_gpus * MILLI_PER_GPU - self.mig.used_milli
        return self.total_gpu_milli - int(self.gpu_total_left.sum()) - mig_idle

    def fraction_room(self, request: Need, nodes: Nodes = ALL) -> np.ndarray | None:
        """Per GPU of `nodes`: True where the fraction's GPU memory and a sharer slot are free.

        None when nothing bounds this fraction (no memory asked or none known, no sharer
        limit), so callers keep their milli-only fast path. `request` may also be rows of
        requests (`placement.checks`): the result then has a leading row axis.
        """
        if not (self.gpu_memory_known or self.sharers_limited):
            return None
        memory, sharers = self.gpu_memory_room(request, nodes), self.sharer_room(nodes)
        if memory is None:
            return sharers
        return memory if sharers is None else memory & sharers

    def gpu_memory_room(self, request: Need, nodes: Nodes = ALL) -> np.ndarray | None:
        """Per GPU of `nodes`: True where the fraction's GPU memory is free (None: unbounded)."""
        if not self.gpu_memory_known:
            return None
        memory = request.gpu_memory_mib
        if isinstance(memory, np.ndarray):
            if not (memory > 0).any():
                return None
            memory = memory[..., None]  # rows of requests: a trailing GPU axis
        elif memory <= 0:  # type: ignore[operator]
            return None
        return (self.gpu_mem_left if nodes is ALL else self.gpu_mem_left[nodes]) >= memory

    def sharer_room(self, nodes: Nodes = ALL) -> np.ndarray | None:
        """Per GPU of `nodes`: True where a sharer slot is free (None: no node limits sharers)."""
        if not self.sharers_limited:
            return None
        if nodes is ALL:
            return self.gpu_sharers < self.sharer_cap
        return self.gpu_sharers[nodes] < self.sharer_cap[nodes]

    def allocate(self, assignment: Assignment) -> None:
        """Commit a placement; refuse (and change nothing) if it over-commits anything."""
        if assignment.pod in self.live:
            raise OverCommitError(f"pod {assignment.pod} is already allocated")
        self._check_fits(assignment)
        if assignment.request.is_mig:
            try:
                change = self.mig.check(assignment, self.gpu_left[assignment.node])
            except MigAllocationError as exc:
                raise OverCommitError(str(exc)) from None
            if self.mig.apply(assignment, change, self.gpu_left[assignment.node]):
                self._summarise_gpus(assignment.node)
        elif assignment.mig or assignment.mig_plans:
            raise OverCommitError(f"pod {assignment.pod}: MIG instances for a request without MIG")
        self._apply(assignment, sign=-1)
        self.live[assignment.pod] = assignment
        self.keys_on[assignment.node].add(assignment.pod)

    def release(self, pod: str) -> Assignment:
        """Give back everything `pod` holds; the state returns exactly to what it was."""
        assignment = self.live.pop(pod, None)
        if assignment is None:
            raise OverCommitError(f"pod {pod} holds no allocation to release")
        if assignment.request.is_mig and self.mig.undo(assignment, self.gpu_left[assignment.node]):
            self._summarise_gpus(assignment.node)
        self._apply(assignment, sign=+1)
        self.keys_on[assignment.node].discard(pod)
        return assignment

    def _check_fits(self, a: Assignment) -> None:
        """Refuse `a` unless its node is this state's and every resource check passes there."""
        node = a.node
        if not 0 <= node < len(self.nodes) or self.names[node] != a.node_name:
            raise OverCommitError(f"pod {a.pod}: unknown node {a.node_name!r} (index {node})")
        reason = refusal_of(self, a)
        if reason is not None:
            raise OverCommitError(f"pod {a.pod} on {a.node_name}: {reason}")

    def _apply(self, a: Assignment, sign: int) -> None:
        req, node = a.request, a.node
        self.cpu_left[node] += sign * req.cpu_milli
        self.mem_left[node] += sign * req.memory_mib
        self.pod_count[node] -= sign
        if req.gpu_count:
            gpus = list(a.gpus)
            self.gpu_left[node, gpus] += sign * req.gpu_milli
            tag = SHARE_TAG if req.is_fraction else req.gpu_count
            self.affinity[node, tag] -= sign
            if req.is_fraction:
                self.gpu_sharers[node, gpus] -= sign
                self.gpu_mem_left[node, gpus] += sign * req.gpu_memory_mib
            self._summarise_gpus(node)
        self.version[node] += 1

    def _summarise_gpus(self, node: int) -> None:
        row = self.gpu_left[node]
        self.gpu_total_left[node] = row.sum()
        self.gpu_free_count[node] = (row == MILLI_PER_GPU).sum()
        self.gpu_max_left[node] = row.max()
