"""Measure the openb 2023 workload mix that `simulator.traces.synthetic` embeds.

The synthetic generator must not ship the Alibaba trace itself, only summary
parameters of it; this script is how those parameters were obtained, so that
anyone can re-derive (and test) them:

    .venv/bin/python scripts/measure_openb_mix.py [TRACE_DIR]

TRACE_DIR defaults to ../shared/traces/openb-2023 next to the repository.
It prints a `WorkloadMix(...)` literal ready to paste into synthetic.py.
"""

from __future__ import annotations

import pprint
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tessellate.simulator.trace import PodRecord
from tessellate.simulator.traces import openb

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "openb-2023"
NODE_FILE = "openb_node_list_gpu_node.csv"
POD_FILE = "openb_pod_list_default.csv"
SPEC_FILE = "openb_pod_list_gpuspec25.csv"
"""The default trace has no gpu_spec at all; the model sets come from the 25% variant."""

PERCENTILES = (
    0.0,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    70.0,
    80.0,
    90.0,
    95.0,
    98.0,
    99.0,
    100.0,
)
PAIR_COVERAGE = 0.95
"""Keep the most common (cpu, memory) pairs of a group until they cover this share of its pods."""


def pod_class(pod: PodRecord) -> str:
    """cpu_only / fraction / whole, the classes of fgd-protocol.md Sec. 1.2."""
    if pod.request.is_cpu_only:
        return "cpu_only"
    return "fraction" if pod.request.is_fraction else "whole"


def cpu_memory_group(pod: PodRecord) -> str:
    """CPU and memory grow with the GPU count, so whole-GPU pods are grouped by it."""
    cls = pod_class(pod)
    return f"whole-{pod.request.gpu_count}" if cls == "whole" else cls


def common_pairs(pods: Iterable[PodRecord]) -> tuple[tuple[int, int, int], ...]:
    """(cpu_milli, memory_mib, count) of the most common pairs, most common first."""
    counts = Counter((p.request.cpu_milli, p.request.memory_mib) for p in pods)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept: list[tuple[int, int, int]] = []
    covered = 0
    for (cpu, memory), count in ranked:
        kept.append((cpu, memory, count))
        covered += count
        if covered >= PAIR_COVERAGE * total:
            break
    return tuple(kept)


def percentiles(values: Iterable[float]) -> tuple[int, ...]:
    """Whole seconds at PERCENTILES (the trace's times are whole seconds)."""
    return tuple(round(v) for v in np.percentile(np.asarray(list(values), dtype=float), PERCENTILES))


def measure(trace_dir: Path = DEFAULT_DIR) -> dict[str, object]:
    """The WorkloadMix fields, measured from the openb files in `trace_dir`."""
    nodes = openb.load_nodes(trace_dir / NODE_FILE)
    pods = openb.load_pods(trace_dir / POD_FILE)

    shapes = Counter((n.gpu_model, n.gpu_count, n.cpu_milli, n.memory_mib) for n in nodes)
    classes = Counter(pod_class(p) for p in pods)
    whole_counts = Counter(p.request.gpu_count for p in pods if pod_class(p) == "whole")
    fraction_milli = Counter(p.request.gpu_milli for p in pods if pod_class(p) == "fraction")
    groups: dict[str, list[PodRecord]] = {}
    for pod in pods:
        groups.setdefault(cpu_memory_group(pod), []).append(pod)
    group_order = sorted(groups, key=lambda g: (g.startswith("whole"), len(g), g))

    gpu_pods = [p for p in pods if not p.request.is_cpu_only]
    spec_share = sum(1 for p in gpu_pods if p.request.gpu_models) / len(gpu_pods)
    spec_sets: tuple[tuple[str, int], ...] = ()
    spec_path = trace_dir / SPEC_FILE
    if spec_path.is_file():
        sets = Counter(
            "|".join(p.request.gpu_models) for p in openb.load_pods(spec_path) if p.request.gpu_models
        )
        spec_sets = tuple(sorted(sets.items(), key=lambda item: (-item[1], item[0])))

    lifetimes: dict[str, list[float]] = {}
    for pod in pods:
        if pod.creation_time is not None and pod.deletion_time is not None:
            lifetimes.setdefault(pod_class(pod), []).append(pod.deletion_time - pod.creation_time)

    return {
        "node_shapes": tuple((*shape, count) for shape, count in sorted(shapes.items())),
        "class_counts": tuple((c, classes[c]) for c in ("cpu_only", "fraction", "whole")),
        "whole_gpu_counts": tuple(sorted(whole_counts.items())),
        "fraction_milli": tuple(sorted(fraction_milli.items())),
        "cpu_memory": tuple((g, common_pairs(groups[g])) for g in group_order),
        "gpu_spec_share": round(spec_share, 4),
        "gpu_spec_sets": spec_sets,
        "percentiles": PERCENTILES,
        "creation_time": percentiles(p.creation_time for p in pods if p.creation_time is not None),
        "lifetime": tuple((c, percentiles(lifetimes[c])) for c in ("cpu_only", "fraction", "whole")),
    }


def render(params: dict[str, object]) -> str:
    """Python source for synthetic.py, wrapped to the project's line length."""
    lines = ["OPENB_2023 = WorkloadMix("]
    for key, value in params.items():
        text = pprint.pformat(value, width=88, compact=True).replace("\n", "\n    ")
        lines.append(f"    {key}={text},")
    lines.append(")")
    return "\n".join(lines)


def summary(params: dict[str, object]) -> str:
    """The derived figures a reader wants first: sizes, class shares, GPU demand ratio."""
    shapes = params["node_shapes"]
    classes = dict(params["class_counts"])  # type: ignore[arg-type]
    whole = dict(params["whole_gpu_counts"])  # type: ignore[arg-type]
    milli = dict(params["fraction_milli"])  # type: ignore[arg-type]
    nodes = sum(s[4] for s in shapes)  # type: ignore[union-attr]
    gpus = sum(s[1] * s[4] for s in shapes)  # type: ignore[union-attr]
    pods = sum(classes.values())
    demand = 1000 * sum(n * c for n, c in whole.items()) + sum(m * c for m, c in milli.items())
    shares = ", ".join(f"{c} {n / pods:.4f}" for c, n in classes.items())
    return (
        f"# {nodes} nodes, {gpus} GPUs, {pods} pods ({shares});\n"
        f"# GPU demand {demand} milli-GPU = {demand / (1000 * gpus):.4f} of capacity;\n"
        f"# mean fraction {sum(m * c for m, c in milli.items()) / sum(milli.values()):.1f} milli-GPU"
    )


def main(argv: list[str]) -> int:
    trace_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    params = measure(trace_dir)
    print(summary(params))
    print(render(params))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
