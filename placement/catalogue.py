"""GPU models Tessellate knows, by the names traces and node labels use.

Only the name matters to the FGD-paper policies (GPUs are 1000-milli bins);
memory is carried for fractions bounded by memory and for reports. Unknown
names are an error that lists these, so a typo never silently becomes a new model.

Nodes name their GPUs by the `nvidia.com/gpu.product` label of NVIDIA's GPU feature
discovery (`NVIDIA-A100-SXM4-80GB`, `Tesla-T4`, `NVIDIA-H100-80GB-HBM3`); traces by
catalogue names. `model_for_product` maps the first to the second, for the live
scheduler and the simulator alike, so a recorded cluster replays with the models the
scheduler saw. `extend_catalogue` adds models and product names from a YAML file
(`tessellate --gpu-catalogue extra.yaml`), for GPUs this list lacks or anonymised names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    GpuModel("H20-96GB", 96 * 1024),
    GpuModel("A2-16GB", 16 * 1024),
    GpuModel("A40-48GB", 48 * 1024),
    GpuModel("L4-24GB", 24 * 1024),
    GpuModel("L40-48GB", 48 * 1024),
    GpuModel("L40S-48GB", 48 * 1024),
    GpuModel("RTX-PRO-6000-96GB", 96 * 1024, "NVIDIA RTX PRO 6000 Blackwell Server Edition"),
    GpuModel("B200-180GB", 180 * 1024),
    GpuModel("B300-288GB", 288 * 1024),
    GpuModel("GB200-186GB", 186 * 1024),
    GpuModel("GB300-288GB", 288 * 1024),
)

GPU_MODELS: dict[str, GpuModel] = {m.name: m for m in _MODELS}

_PRODUCTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), model)
    for pattern, model in (
        # GPU feature discovery's product names (spaces become dashes), most specific first.
        (r"^A100.*80GB", "A100-80GB"),
        (r"^A100.*40GB", "A100-40GB"),  # a bare A100 is 40 or 80 GB: not guessed
        (r"^A800", "A800-80GB"),
        (r"^A30\b", "A30-24GB"),
        (r"^A10G?(-|$)", "A10"),
        (r"^A2(-|$)", "A2-16GB"),
        (r"^A40(-|$)", "A40-48GB"),
        (r"^H100.*NVL", "H100-NVL-94GB"),
        (r"^H100", "H100-80GB"),
        (r"^H800", "H800-80GB"),
        (r"^H200", "H200-141GB"),
        (r"^H20(-|$)", "H20-96GB"),
        (r"^L40S", "L40S-48GB"),
        (r"^L40(-|$)", "L40-48GB"),
        (r"^L4(-|$)", "L4-24GB"),
        (r"^RTX-PRO-6000", "RTX-PRO-6000-96GB"),
        (r"^GB300", "GB300-288GB"),
        (r"^GB200", "GB200-186GB"),
        (r"^B300", "B300-288GB"),
        (r"^B200", "B200-180GB"),
        (r"^T4(-|$)", "T4"),
        (r"^P100", "P100"),
        (r"^V100.*32GB", "V100M32"),
        (r"^V100", "V100M16"),
    )
]
_ALIASES: dict[str, str] = {}
"""Exact product names added by `extend_catalogue` (normalised, see `_normalise`)."""


class UnknownGpuModelError(ValueError):
    """A GPU model name that is not in the catalogue."""


def gpu_model(name: str) -> GpuModel:
    """Look a model up by name; the error lists every known name."""
    try:
        return GPU_MODELS[name]
    except KeyError:
        known = ", ".join(GPU_MODELS)
        raise UnknownGpuModelError(
            f"unknown GPU model {name!r}; known models: {known}; for another model (or an anonymised "
            "name) add it with --gpu-catalogue extra.yaml (docs/trace-schema.md)"
        ) from None


def _normalise(label: str) -> str:
    """`NVIDIA A100-SXM4-80GB`, `nvidia-a100-sxm4-80gb` and `Tesla-T4` alike: upper case,
    dashes for spaces and underscores, no vendor prefix."""
    key = "-".join(label.strip().replace("_", " ").split()).upper()
    for prefix in ("NVIDIA-", "TESLA-"):
        key = key.removeprefix(prefix)
    return key


def model_for_product(label: str) -> str:
    """The catalogue name for a GPU product label (or a catalogue name); the label itself,
    unchanged, when nothing matches (the caller decides whether that is an error)."""
    if label in GPU_MODELS:
        return label
    key = _normalise(label)
    if key in _ALIASES:
        return _ALIASES[key]
    upper = {name.upper(): name for name in GPU_MODELS}
    if key in upper:
        return upper[key]
    for pattern, model in _PRODUCTS:
        if pattern.search(key):
            return model
    return label


class CatalogueFileError(ValueError):
    """An extra-catalogue file that cannot be used as written."""


def extend_catalogue(path: str | Path) -> list[str]:
    """Add the models (and product names) of a YAML file; returns the models added.

    The file is a list of `{name: L20-48GB, memoryGiB: 48, products: [NVIDIA-L20], note: ...}`;
    `memoryGiB` may be omitted (undisclosed), `products` lists node labels that mean it.
    A name already in the catalogue is refused unless it is identical (loading twice is fine)."""
    import yaml  # only when a file is given

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueFileError(f"{path}: cannot read the GPU catalogue file: {exc}") from None
    if not isinstance(doc, list):
        raise CatalogueFileError(
            f"{path}: expected a list of models like [{{name: L20-48GB, memoryGiB: 48}}]"
        )
    return [_add(path, i, entry) for i, entry in enumerate(doc)]


def _add(path: str | Path, index: int, entry: Any) -> str:
    where = f"{path}: entry {index}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise CatalogueFileError(f"{where}: needs a name, e.g. {{name: L20-48GB, memoryGiB: 48}}")
    unknown = set(entry) - {"name", "memoryGiB", "products", "note"}
    if unknown:
        raise CatalogueFileError(
            f"{where}: unknown field(s) {sorted(unknown)}; use name, memoryGiB, products, note"
        )
    name = entry["name"].strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise CatalogueFileError(
            f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)"
        )
    memory = entry.get("memoryGiB")
    if memory is not None and (not isinstance(memory, int | float) or not 0 < memory <= 4096):
        raise CatalogueFileError(f"{where}: memoryGiB must be a number of GiB in (0, 4096], got {memory!r}")
    model = GpuModel(name, None if memory is None else int(memory * 1024), str(entry.get("note") or ""))
    known = GPU_MODELS.get(name)
    if known is not None and known != model:
        raise CatalogueFileError(f"{where}: {name} is already in the catalogue as {known}; pick another name")
    products = entry.get("products") or []
    if not isinstance(products, list) or not all(isinstance(x, str) for x in products):
        raise CatalogueFileError(f"{where}: products must be a list of node label values")
    GPU_MODELS[name] = model
    _ALIASES.update({_normalise(x): name for x in _iter(products)})
    return name


def _iter(products: Iterable[str]) -> Iterable[str]:
    return (x for x in products if x.strip())
