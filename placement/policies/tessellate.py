"""Tessellate's own policy: FGD's score, with its ties settled by what the node can still host.

FGD (`placement.policies.fgd`) ranks nodes by `trunc(100 * sigmoid(-dF / 1000))`. Near
dF = 0 one integer step is about 40 milli-GPU wide, so many nodes tie, and the tie goes to
the lowest node index, i.e. to chance. Those ties are where this policy differs; wherever
FGD's integer scores differ, it makes FGD's choice.

Ranking by the exact dF instead is worse (about 1 point of allocation on the openb traces):
FGD's F asks only whether *one* pod of a type still fits, so at fine resolution it steers
pods onto small, CPU-poor nodes whose few GPUs it then strands. The tie-break therefore
uses a different, finer model of the same expected workload, *hostable capacity*: for
each task type m (cpu c, per-GPU milli g, GPU count n) how many copies of m the node could
still take,

    copies_m = min(GPU copies, cpu_left // c)    GPU copies = sum_i left_i // g  (fractions)
                                                              free GPUs // n     (whole GPUs)

and value(node) = sum_m w_m * copies_m * g * n over the types its GPU model serves. The
policy keeps as much value as it can: among FGD's best integer score it picks the
placement that loses the least value. This counts what F cannot see: CPU running out
before the GPUs do (a node with 8 free GPUs and CPU for 2 more pods hosts 2), and the
remainder a fraction leaves on a GPU (a fresh GPU hosts one 810-milli pod, not 1000 milli
of them). The value uses the product's expected workload (every shape, `placement.workload`)
when the context has one, since the paper's 95 % cut drops exactly the rare large shapes
(8-GPU jobs needing 120 cores) whose few possible nodes are worth keeping.
"""

from __future__ import annotations

import numpy as np
from tessellate.placement.fragmentation import Fragmentation, TargetWorkload
from tessellate.placement.model import MILLI_PER_GPU, Request
from tessellate.placement.policies.base import Policy, register
from tessellate.placement.policies.fgd import (
    GpuChoiceMemo,
    fraction_variants,
    gpus_after_whole,
    quantised_gain,
)
from tessellate.placement.state import ClusterState

_PRIMARY = 1 << 40
"""Weight of FGD's integer score in the combined int64 score; the value loss (in milli-GPU,
scaled by `_RESOLUTION`) stays far below one step of it."""
_RESOLUTION = 1000
"""Value loss is compared to 1/1000 milli-GPU."""
_MAX_SECONDARY = _PRIMARY // 2 - 1


class HostableCapacity:
    """value(node) = expected milli-GPU of the workload's pods the node could still host."""

    def __init__(self, workload: TargetWorkload, state: ClusterState):
        types = workload.types
        self.cpu = np.array([t[0] for t in types], dtype=np.int64)
        milli = np.array([t[1] for t in types], dtype=np.int64)
        count = np.array([t[2] for t in types], dtype=np.int64)
        self.fraction = (count == 1) & (milli < MILLI_PER_GPU)
        self.whole = (count > 0) & (milli == MILLI_PER_GPU)
        self.count = np.maximum(count, 1)
        self.sizes = np.unique(milli[self.fraction])
        self.size_of = np.searchsorted(self.sizes, milli[self.fraction])
        # Value per copy of each type: its probability times its GPU demand (CPU-only types
        # hold no GPU and are worth nothing here; they matter only through the CPU they take).
        self.copy_value = np.array(workload.weights) * milli * count
        access = np.zeros((len(state.gpu_models) + 1, len(types)), dtype=bool)
        for m, (_, _, _, models) in enumerate(types):
            wanted = {x for x in models if x}
            for j, model in enumerate(state.gpu_models):
                access[j, m] = not wanted or model in wanted
        self.access_by_model = access  # [model id (-1: no GPU), type]

    def value(self, cpu_left: np.ndarray, gpu_left: np.ndarray, model_id: np.ndarray) -> np.ndarray:
        """[X] value of X node states (cpu_left [X], gpu_left [X, G], model_id [X])."""
        rows = len(cpu_left)
        copies = np.zeros((rows, len(self.cpu)), dtype=np.int64)
        if self.sizes.size:
            per_size = (gpu_left[:, None, :] // self.sizes[None, :, None]).sum(axis=2)  # [X, S]
            copies[:, self.fraction] = per_size[:, self.size_of]
        free = (gpu_left == MILLI_PER_GPU).sum(axis=1)
        copies[:, self.whole] = free[:, None] // self.count[None, self.whole]
        by_cpu = cpu_left[:, None] // np.maximum(self.cpu, 1)[None, :]
        copies = np.where(self.cpu[None, :] > 0, np.minimum(copies, by_cpu), copies)
        copies = copies * self.access_by_model[model_id]
        return copies @ self.copy_value


@register
class TessellatePolicy(Policy):
    """FGD's quantised score first; among equal scores, the placement keeping most hostable capacity."""

    name = "tessellate"
    description = "FGD's score, ties broken by the least loss of hostable capacity (CPU and GPU remainders)"

    def bind(self, state: ClusterState) -> None:
        if self.context.target is None:
            raise ValueError("the tessellate policy needs a target workload (typical pods)")
        self.fragmentation = Fragmentation(self.context.target, state)
        self.capacity = HostableCapacity(self.context.expected or self.context.target, state)
        self._gpu_choice = GpuChoiceMemo()

    def score(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        if request.is_fraction:
            per_gpu = self._per_gpu_scores(state, request, nodes)
            self._gpu_choice.remember(state, request, nodes, per_gpu.argmax(axis=1))
            return per_gpu.max(axis=1)
        cpu = state.cpu_left[nodes]
        gpu = state.gpu_left[nodes]
        gpu_after = gpus_after_whole(state, request, nodes)
        before = self._measure(state, nodes, cpu, gpu)
        return self._combine(before, self._measure(state, nodes, cpu - request.cpu_milli, gpu_after))

    def _measure(
        self, state: ClusterState, nodes: np.ndarray, cpu: np.ndarray, gpu: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(FGD's F, hostable value) of `nodes` in the given (possibly hypothetical) states."""
        models = state.model_id[nodes]
        frag, _ = self.fragmentation.amounts(cpu, gpu, models, state.replicas[nodes])
        return frag, self.capacity.value(cpu, gpu, models)

    @staticmethod
    def _combine(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """FGD's integer score in the high bits, minus the value loss (1/1000 milli-GPU) below."""
        loss = np.clip(np.rint((before[1] - after[1]) * _RESOLUTION), -_MAX_SECONDARY, _MAX_SECONDARY)
        return quantised_gain(before[0], after[0]) * _PRIMARY - loss.astype(np.int64)

    def choose_fraction_gpu(self, state: ClusterState, node: int, request: Request) -> int:
        remembered = self._gpu_choice.recall(state, request, node)
        if remembered is not None:
            return remembered
        return int(np.argmax(self._per_gpu_scores(state, request, np.array([node]))[0]))

    def _per_gpu_scores(self, state: ClusterState, request: Request, nodes: np.ndarray) -> np.ndarray:
        """[k, G] scores of putting the fraction on each GPU; the int64 minimum where it does not fit.

        GPUs of a node with equal free share give the same outcome, so only the first of each
        is evaluated (as in FGD); only GPUs with GPU memory and a sharer slot to spare count.
        """
        k, g = len(nodes), state.max_gpus
        left = state.gpu_left[nodes]
        cpu = state.cpu_left[nodes]
        node_of, gpu, variants = fraction_variants(state, request, nodes)
        frag, value = self._measure(state, nodes, cpu, left)
        after = self._measure(state, nodes[node_of], cpu[node_of] - request.cpu_milli, variants)
        scores = np.full((k, g), np.iinfo(np.int64).min, dtype=np.int64)
        scores[node_of, gpu] = self._combine((frag[node_of], value[node_of]), after)
        return scores
