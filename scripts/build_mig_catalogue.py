#!/usr/bin/env python3
"""Regenerate placement/data/mig_catalogue.json from the shared MIG reference data.

The placement core reads the generated JSON (no YAML dependency at run time);
this script is how it is refreshed when ../shared/reference/mig-profiles.yaml
changes. It needs PyYAML. Run from anywhere:

    python3 scripts/build_mig_catalogue.py            # rewrite the JSON
    python3 scripts/build_mig_catalogue.py --check    # exit 1 if the JSON is stale

Every GPU of the reference whose profiles all carry placements is written out;
a GPU with a profile lacking placements (GB200 today) is skipped with a note,
because the placement core must never guess slot positions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "mig-profiles.yaml"
OUT = ROOT / "placement" / "data" / "mig_catalogue.json"
SCHEMA_VERSION = 1

# Other names the same geometry goes by: the names of placement/catalogue.py and the
# issue (A100-40GB, H100-NVL-94GB), board variants, and nvidia.com/gpu.product values
# (looked up case-insensitively with spaces as dashes and any "NVIDIA-" prefix dropped).
ALIASES: dict[str, list[str]] = {
    "A30-24GB": ["A30"],
    "A100-SXM4-40GB": ["A100-40GB", "A100-PCIE-40GB"],
    "A100-80GB": ["A100-SXM4-80GB", "A100-PCIE-80GB", "A100-80GB-PCIE"],
    "H100-80GB": ["H100-SXM5-80GB", "H100-PCIE-80GB", "H100-80GB-HBM3", "H100-PCIE"],
    "H100-94GB": ["H100-NVL-94GB", "H100-NVL", "H100-SXM5-94GB"],
    "H100-96GB-GH200": [],
    "GH200-144GB-HBM3e": ["GH200-144G-HBM3e"],
    "H200-141GB": ["H200-SXM5-141GB", "H200-NVL-141GB", "H200-NVL", "H200"],
    "B200-180GB": ["B200"],
}

_NAME = re.compile(r"^(\d+)g\.(\d+)gb(\+me)?$")
_GIB = re.compile(r"\d+(?:\.\d+)?")


def _memory(profile: dict[str, Any]) -> tuple[float | None, int, str]:
    """(GiB reported by nvidia-smi or None, MiB, where the MiB figure comes from).

    Order of trust: `memory_gib_reported` (real -lgip output; where captures disagree
    the smaller is kept, so a fit check never promises memory a driver does not give),
    then NVML's mock size, then the decimal GB in the profile name (a lower bound of
    what the board reports, marked "name" so nobody mistakes it for a measurement).
    """
    reported = profile.get("memory_gib_reported")
    if reported is not None:
        gib = min(float(x) for x in _GIB.findall(str(reported)))
        return gib, round(gib * 1024), "reported"
    if profile.get("nvml_memory_mb_mock") is not None:
        return None, int(profile["nvml_memory_mb_mock"]), "nvml_mock"
    match = _NAME.match(profile["name"])
    if match is None:
        raise SystemExit(f"cannot read a memory size from profile name {profile['name']!r}")
    return None, int(match.group(2)) * 10**9 // 2**20, "name"


def _profile(gpu_id: str, profile: dict[str, Any]) -> dict[str, Any]:
    name = profile["name"]
    where = f"{gpu_id} {name}"
    placements = profile["placements"]
    match = _NAME.match(name)
    if match is None:
        raise SystemExit(f"{where}: profile name does not look like <N>g.<M>gb[+me]")
    if int(match.group(1)) != profile["compute_slices"]:
        raise SystemExit(
            f"{where}: name says {match.group(1)} compute slices, data says {profile['compute_slices']}"
        )
    if placements["size"] != profile["memory_slices"]:
        raise SystemExit(
            f"{where}: placement size {placements['size']} != memory_slices {profile['memory_slices']}"
        )
    gib, mib, source = _memory(profile)
    return {
        "name": name,
        "profile_id": profile.get("nvidia_smi_profile_id"),
        "compute_slices": profile["compute_slices"],
        "memory_slices": profile["memory_slices"],
        "placements": {"starts": list(placements["starts"]), "size": placements["size"]},
        "max_count": profile["max_count"],
        "memory_gib": gib,
        "memory_mib": mib,
        "memory_source": source,
        "sm_count": profile.get("sm_count"),
    }


def _borrow_media_extension_memory(profiles: list[dict[str, Any]]) -> None:
    """A `+me` profile owns the same memory slices as its base profile, so it has the same memory."""
    by_name = {p["name"]: p for p in profiles}
    for profile in profiles:
        base = by_name.get(profile["name"].removesuffix("+me"))
        if (
            profile["memory_source"] == "name"
            and base is not profile
            and base
            and base["memory_source"] != "name"
        ):
            profile.update(memory_gib=base["memory_gib"], memory_mib=base["memory_mib"])
            profile["memory_source"] = f"same as {base['name']}"


def _check_against_table(gpu: dict[str, Any], table: dict[str, dict]) -> None:
    """A profile ID that appears in the shared placement table must have that table's slots."""
    for profile in gpu["profiles"]:
        row = table.get(str(profile.get("nvidia_smi_profile_id")))
        if row is None:
            continue
        placements = profile["placements"]
        if (list(placements["starts"]), placements["size"]) != (list(row["starts"]), row["size"]):
            raise SystemExit(
                f"{gpu['id']} {profile['name']}: placements {placements} disagree with the shared "
                f"placement table row {row}"
            )


def build(reference: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The catalogue as a JSON-ready dict, and notes on what was skipped."""
    tables = {8: reference["placement_table_8x7"], 4: reference["placement_table_4x4"]}
    models: list[dict[str, Any]] = []
    skipped: list[str] = []
    for gpu in reference["gpus"]:
        missing = [p["name"] for p in gpu["profiles"] if "placements" not in p]
        if missing:
            skipped.append(f"{gpu['id']}: no placements for {', '.join(missing)}")
            continue
        _check_against_table(gpu, tables[gpu["memory_slices"]])
        profiles = [_profile(gpu["id"], p) for p in gpu["profiles"]]
        _borrow_media_extension_memory(profiles)
        for profile in profiles:
            top = max(profile["placements"]["starts"]) + profile["placements"]["size"]
            if top > gpu["memory_slices"]:
                raise SystemExit(
                    f"{gpu['id']} {profile['name']}: placement runs past slice {gpu['memory_slices']}"
                )
        models.append({
            "model": gpu["id"],
            "aliases": ALIASES.get(gpu["id"], []),
            "product_names": list(gpu.get("product_names", [])),
            "memory_total_gb": gpu["memory_total_gb"],
            "memory_slices": gpu["memory_slices"],
            "compute_slices": gpu["compute_slices"],
            "max_gpu_instances": gpu["max_gpu_instances"],
            "placement_verification": gpu["placement_verification"],
            "profiles": profiles,
        })  # fmt: skip
    catalogue = {
        "schema_version": SCHEMA_VERSION,
        "generated_by": "scripts/build_mig_catalogue.py",
        "source": "shared/reference/mig-profiles.yaml",
        "source_schema_version": reference["schema_version"],
        "note": (
            "Generated file: do not edit by hand. Slots are memory slices; an instance of a "
            "profile at start s occupies memory slices [s, s + size)."
        ),
        "models": models,
    }
    return catalogue, skipped


def render(catalogue: dict[str, Any]) -> str:
    """Indented JSON with one line per profile, for readable diffs."""

    def one_line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def block(mapping: dict[str, Any], indent: str, nested: str) -> str:
        lines = []
        for key, value in mapping.items():
            if key == nested:
                inner = ",\n".join(item for item in value)
                lines.append(f'{indent}  "{key}": [\n{inner}\n{indent}  ]')
            else:
                lines.append(f"{indent}  {one_line(key)}: {one_line(value)}")
        return indent + "{\n" + ",\n".join(lines) + "\n" + indent + "}"

    models = []
    for model in catalogue["models"]:
        rendered = {**model, "profiles": ["        " + one_line(p) for p in model["profiles"]]}
        models.append(block(rendered, "    ", "profiles"))
    text = block({**catalogue, "models": models}, "", "models")
    assert json.loads(text) == catalogue
    return text + "\n"


def load_reference(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise SystemExit("PyYAML is needed: pip install pyyaml") from None
    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=f"default {REFERENCE}")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out differs from what would be written"
    )
    args = parser.parse_args(argv)
    catalogue, skipped = build(load_reference(args.reference))
    text = render(catalogue)
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({len(catalogue['models'])} models)")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    names = ", ".join(m["model"] for m in catalogue["models"])
    print(f"wrote {args.out} ({len(catalogue['models'])} models: {names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
