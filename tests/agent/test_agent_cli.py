"""`tessellate agent`: help that teaches, discovery output, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tessellate.agent_cli import main

HGX = {"model": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "gpus": 8, "numa": [0] * 4 + [1] * 4,
       "nvswitch": 12, "nvlink_generation": 3, "pcie_generation": 4, "uuid_seed": "cli"}  # fmt: skip


def test_run_help_explains_resources_annotations_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("tessellate.dev/gpu-milli", "nvidia.com/gpu", "--mode full", "tessellate.dev/assignment",
                   "tessellate.dev/gpu-topology", "Unhealthy", "examples:", "--fake"):  # fmt: skip
        assert phrase in text


def test_discover_json_prints_inventory_nvlink_and_the_annotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(HGX))
    assert main(["discover", "--fake", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["gpus"]) == 8 and doc["gpus"][0]["model"] == "NVIDIA A100-SXM4-80GB"
    assert doc["gpus"][0]["mig"] == {"enabled": False, "instances": []}
    assert doc["nvswitch_links"] == [12] * 8 and doc["nvlink_generation"] == 3
    assert doc["annotation"]["gpus"][4]["numa"] == 1 and len(doc["annotation"]["links"]) == 28


def test_discover_table_lists_every_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(HGX))
    assert main(["discover", "--fake", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("NVIDIA A100-SXM4-80GB") == 8 and "NVSwitch fabric" in out


class _NoDriver:
    class NVMLError(Exception):
        value = 12

    NVML_ERROR_LIBRARY_NOT_FOUND = 12

    def nvmlInit(self) -> None:
        raise self.NVMLError()


def test_discover_without_a_driver_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _NoDriver())
    assert main(["discover"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: NVML init failed: libnvidia-ml.so.1 was not found")
    assert "\n" not in err and "Traceback" not in err


def test_a_bad_fake_file_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump({**HGX, "gpu": 3}))
    assert main(["discover", "--fake", str(path)]) == 1
    assert "unknown key(s) gpu" in capsys.readouterr().err


def test_run_without_a_node_name_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["run", "--fake", "x.yaml"]) == 2
    assert "--node-name" in capsys.readouterr().err


def test_mig_dynamic_without_full_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--node-name", "n", "--mig-dynamic"]) == 2
    assert "--mig-dynamic needs --mode full" in capsys.readouterr().err


def test_run_help_names_the_mig_and_mps_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for phrase in ("nvidia.com/mig-<profile>", "--mig-dynamic", "tessellate.dev/mig-plan-status",
                   "--mps-daemon", "--mps-control-binary"):  # fmt: skip
        assert phrase in text


def test_an_empty_scheduler_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--node-name", "n", "--scheduler-name", ""]) == 2
    assert "--scheduler-name must not be empty" in capsys.readouterr().err


def test_run_help_says_whose_assignments_are_trusted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scheduler-name NAME" in text and "default tessellate" in text
