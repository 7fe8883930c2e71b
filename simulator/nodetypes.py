"""Candidate node shapes for capacity planning (`types.yaml`) and GPU speeds.

A shape is what one can buy or rent: a GPU model, GPUs per node, CPU and memory,
a price per hour, and how many such nodes exist already (kept in every mix). A
speed per GPU model says how much faster a job runs there than on the reference
GPU (V100 = 1.0): trace lifetimes are taken as runtimes on the reference and
divided by the speed of the model a pod starts on.

DEFAULT_SPEEDS are rounded ballpark figures of mixed-precision deep-learning
training throughput relative to V100, compiled from public MLPerf Training
results and vendor and cloud benchmark reports (ResNet-50 / BERT-class models).
They are a starting point, not a measurement of your jobs: real speed-ups range
widely with the model, precision and memory boundness, so set `speeds:` in
types.yaml from your own benchmarks. The openb trace's anonymised G2 and G3 and
any model without a figure count as 1.0 only when listed in `speeds:`; a shape
whose model has no speed is an error, so an unknown speed is never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from tessellate.placement import NodeSpec
from tessellate.placement.catalogue import gpu_model

DEFAULT_SPEEDS: dict[str, float] = {
    "P100": 0.55,
    "T4": 0.4,
    "V100M16": 1.0,
    "V100M32": 1.0,
    "A2-16GB": 0.2,
    "A10": 0.75,
    "L4-24GB": 0.6,
    "A30-24GB": 1.2,
    "A40-48GB": 1.2,
    "L40-48GB": 1.4,
    "L40S-48GB": 1.7,
    "H20-96GB": 1.8,
    "A100-40GB": 2.2,
    "A100-80GB": 2.4,
    "A800-80GB": 2.4,
    "RTX-PRO-6000-96GB": 2.5,
    "H800-80GB": 4.3,
    "H100-80GB": 4.5,
    "H100-NVL-94GB": 4.8,
    "H200-141GB": 5.2,
    "B200-180GB": 9.0,
    "GB200-186GB": 9.5,
    "B300-288GB": 10.0,
    "GB300-288GB": 10.5,
}
"""Relative training speed per catalogue GPU model, V100 = 1.0 (see the module docstring)."""


class NodeTypesError(ValueError):
    """A types.yaml that cannot be used; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class NodeShape:
    """One kind of node a planner can add."""

    name: str
    gpu_model: str
    gpus: int
    cpu_milli: int
    memory_mib: int
    price_per_hour: float
    existing: int = 0
    """Nodes of this shape already owned: every mix keeps at least these."""
    gpu_replicas: int = 1
    """Time-slicing replicas per GPU (1: not sliced)."""
    max_count: int = 4096
    """The search never goes above this many nodes of the shape."""

    def node(self, index: int) -> NodeSpec:
        return NodeSpec(
            name=f"{self.name}-{index:05d}",
            cpu_milli=self.cpu_milli,
            memory_mib=self.memory_mib,
            gpu_count=self.gpus,
            gpu_model=self.gpu_model,
            gpu_replicas=self.gpu_replicas,
        )


@dataclass(frozen=True)
class NodeTypes:
    shapes: tuple[NodeShape, ...]
    speeds: dict[str, float]


_FIELDS = {"name", "gpu_model", "gpus", "cpu", "memory_gib", "price_per_hour", "existing"}
_OPTIONAL = {"gpu_replicas", "max_count"}


def _number(path: Path, where: str, entry: dict, key: str, kind: type, minimum: float) -> float:
    value = entry.get(key)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise NodeTypesError(f"{path}: {where}: {key} must be a number, not {value!r}") from None
    if number < minimum:
        raise NodeTypesError(f"{path}: {where}: {key} must be at least {minimum}, not {number}")
    return number


def _shape(path: Path, index: int, entry: object) -> NodeShape:
    where = f"node_types[{index}]"
    if not isinstance(entry, dict):
        raise NodeTypesError(f"{path}: {where} must be a mapping with {', '.join(sorted(_FIELDS))}")
    unknown = set(entry) - _FIELDS - _OPTIONAL
    if unknown:
        raise NodeTypesError(
            f"{path}: {where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_FIELDS | _OPTIONAL))}"
        )
    missing = {"name", "gpu_model", "gpus", "cpu", "memory_gib", "price_per_hour"} - set(entry)
    if missing:
        raise NodeTypesError(f"{path}: {where}: missing {', '.join(sorted(missing))}")
    where = f"node type {entry['name']!r}"
    model = str(entry["gpu_model"])
    gpu_model(model)  # unknown models: UnknownGpuModelError lists the catalogue
    return NodeShape(
        name=str(entry["name"]),
        gpu_model=model,
        gpus=int(_number(path, where, entry, "gpus", int, 1)),
        cpu_milli=round(1000 * _number(path, where, entry, "cpu", float, 0.001)),
        memory_mib=round(1024 * _number(path, where, entry, "memory_gib", float, 0.001)),
        price_per_hour=_number(path, where, entry, "price_per_hour", float, 0.0),
        existing=int(_number(path, where, entry, "existing", int, 0)) if "existing" in entry else 0,
        gpu_replicas=int(_number(path, where, entry, "gpu_replicas", int, 1))
        if "gpu_replicas" in entry
        else 1,
        max_count=int(_number(path, where, entry, "max_count", int, 1)) if "max_count" in entry else 4096,
    )


def load_node_types(path: str | Path) -> NodeTypes:
    """Read types.yaml: `node_types:` (a list of shapes) and optional `speeds:` (model: factor)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise NodeTypesError(f"{path}: no such file (see docs/planning.md for the format)") from None
    except yaml.YAMLError as exc:
        raise NodeTypesError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("node_types"), list) or not data["node_types"]:
        raise NodeTypesError(f"{path}: expected a mapping with a non-empty `node_types:` list")
    shapes = tuple(_shape(path, i, e) for i, e in enumerate(data["node_types"]))
    names = [s.name for s in shapes]
    if len(set(names)) != len(names):
        raise NodeTypesError(f"{path}: node type names must be unique, got {names}")
    speeds = dict(DEFAULT_SPEEDS)
    for model, factor in (data.get("speeds") or {}).items():
        gpu_model(str(model))
        if not isinstance(factor, int | float) or factor <= 0:
            raise NodeTypesError(f"{path}: speeds: {model} must be a positive number, not {factor!r}")
        speeds[str(model)] = float(factor)
    for shape in shapes:
        if shape.gpu_model not in speeds:
            raise NodeTypesError(
                f"{path}: node type {shape.name!r}: no speed known for {shape.gpu_model}; add "
                f"`speeds: {{{shape.gpu_model}: 1.0}}` (relative to V100 = 1.0)"
            )
    return NodeTypes(shapes=shapes, speeds=speeds)
