"""Hypothesis strategies for small clusters with every kind of GPU node, and requests for them.

Whole-GPU nodes, time-sliced ones (`gpu_replicas` > 1), nodes whose GPUs know their
memory (some limiting sharers), dynamic and static MIG nodes and CPU nodes; requests
are CPU-only, whole GPUs, fractions (some bounded by GPU memory) and MIG instances,
some naming a model. Capacities are small so that pods wait for each other.
"""

from __future__ import annotations

from hypothesis import strategies as st
from tessellate.placement import MILLI_PER_GPU, MigSpec, NodeSpec, Request
from tessellate.placement.mig import MigLayout

GIB = 1024
MIG_MODEL = "A100-80GB"
STATIC_LAYOUT = MigLayout.of(MIG_MODEL, ("3g.40gb", 0), ("3g.40gb", 4))

cpus = st.sampled_from([2000, 8000, 16000])


KINDS = ("whole", "sliced", "bounded", "mig", "cpu")


@st.composite
def node_specs(draw, name: str, kinds: tuple[str, ...] = KINDS) -> NodeSpec:
    kind = draw(st.sampled_from(kinds))
    cpu, memory = draw(cpus), draw(st.sampled_from([8 * GIB, 64 * GIB]))
    if kind == "cpu":
        return NodeSpec(name, cpu, memory)
    if kind == "whole":
        return NodeSpec(name, cpu, memory, draw(st.integers(1, 4)), draw(st.sampled_from(["T4", "A10"])))
    if kind == "sliced":
        replicas = draw(st.integers(2, 4))
        return NodeSpec(name, cpu, memory, draw(st.integers(1, 2)), "T4", gpu_replicas=replicas)
    if kind == "bounded":
        return NodeSpec(
            name,
            cpu,
            memory,
            draw(st.integers(1, 2)),
            "A10",
            gpu_memory_mib=16 * GIB,
            max_sharers=draw(st.sampled_from([0, 0, 2])),
        )
    dynamic = draw(st.booleans())
    mig = MigSpec(dynamic=True) if dynamic else MigSpec(layouts=(STATIC_LAYOUT,))
    return NodeSpec(name, cpu, memory, 1, MIG_MODEL, mig=mig)


@st.composite
def node_lists(draw, kinds: tuple[str, ...] = KINDS, min_size: int = 1, max_size: int = 4) -> list[NodeSpec]:
    n = draw(st.integers(min_size, max_size))
    return [draw(node_specs(f"n{i}", kinds)) for i in range(n)]


flavours = st.sampled_from([*((k,) for k in KINDS[:-1]), KINDS])
"""One kind of GPU node (pods then contend for it), or any kinds."""


models = st.sampled_from([(), (), (), (), ("T4",), ("A10",), ("T4", "A10"), ("",)])
pod_cpu = st.sampled_from([1000, 1000, 1000, 0, 2000])
pod_memory = st.sampled_from([0, 0, 0, 4 * GIB])
"""Mostly alike, so that shapes often need no more than one another (the queue's shortcut)."""

cpu_only = st.builds(Request, cpu_milli=pod_cpu, memory_mib=pod_memory)
whole = st.builds(
    Request,
    cpu_milli=pod_cpu,
    memory_mib=pod_memory,
    gpu_count=st.sampled_from([1, 1, 2]),
    gpu_milli=st.just(MILLI_PER_GPU),
    gpu_models=models,
)
fraction = st.builds(
    Request,
    cpu_milli=pod_cpu,
    memory_mib=pod_memory,
    gpu_count=st.just(1),
    gpu_milli=st.sampled_from([250, 300, 500, 700]),
    gpu_models=models,
    gpu_memory_mib=st.sampled_from([0, 2 * GIB, 6 * GIB, 12 * GIB]),
)
mig = st.builds(
    Request,
    cpu_milli=pod_cpu,
    memory_mib=pod_memory,
    mig_profile=st.sampled_from(["1g.10gb", "3g.40gb"]),
    mig_count=st.integers(1, 2),
)
requests = st.one_of(cpu_only, whole, whole, fraction, fraction, fraction, mig)
"""Weighted towards GPU shapes, which is where the kinds of node differ."""
REQUESTS_FOR = {
    "whole": st.one_of(cpu_only, whole, fraction),
    "sliced": st.one_of(cpu_only, whole, whole, fraction),
    "bounded": st.one_of(cpu_only, whole, fraction, fraction, fraction),
    "mig": st.one_of(cpu_only, whole, mig, mig),
}
"""What pods mostly ask of clusters of one kind of node."""


@st.composite
def request_pools(draw, kinds: tuple[str, ...] = KINDS, max_size: int = 5) -> list[Request]:
    """A few shapes, as in real traces: many pods share one, and shapes nest."""
    shapes = REQUESTS_FOR[kinds[0]] if len(kinds) == 1 else requests
    return draw(st.lists(shapes, min_size=1, max_size=max_size))
