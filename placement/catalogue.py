"""GPU models Tessellate knows, by the names traces and node labels use.

Only the name matters to the FGD-paper policies (GPUs are 1000-milli bins);
memory is carried for fractions bounded by memory and for reports. Unknown
names are an error that lists these, so a typo never silently becomes a new model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    memory_mib: int | None
    """None where the vendor code is undisclosed (the Alibaba trace's G2, G3)."""
    note: str = ""


_MODELS = (
    GpuModel("A10", 24 * 1024, "NVIDIA A10 (openb trace)"),
    GpuModel("G2", None, "undisclosed model in the Alibaba openb trace"),
    GpuModel("G3", None, "undisclosed model in the Alibaba openb trace"),
    GpuModel("P100", 16 * 1024, "NVIDIA Tesla P100 (openb trace)"),
    GpuModel("T4", 16 * 1024, "NVIDIA T4 (openb trace)"),
    GpuModel("V100M16", 16 * 1024, "NVIDIA V100 16 GB (openb trace)"),
    GpuModel("V100M32", 32 * 1024, "NVIDIA V100 32 GB (openb trace)"),
    GpuModel("A30-24GB", 24 * 1024),
    GpuModel("A100-40GB", 40 * 1024),
    GpuModel("A100-80GB", 80 * 1024),
    GpuModel("A800-80GB", 80 * 1024),
    GpuModel("H100-80GB", 80 * 1024),
    GpuModel("H100-NVL-94GB", 94 * 1024),
    GpuModel("H800-80GB", 80 * 1024),
    GpuModel("H200-141GB", 141 * 1024),
)

GPU_MODELS: dict[str, GpuModel] = {m.name: m for m in _MODELS}


class UnknownGpuModelError(ValueError):
    """A GPU model name that is not in the catalogue."""


def gpu_model(name: str) -> GpuModel:
    """Look a model up by name; the error lists every known name."""
    try:
        return GPU_MODELS[name]
    except KeyError:
        known = ", ".join(GPU_MODELS)
        raise UnknownGpuModelError(f"unknown GPU model {name!r}; known models: {known}") from None
