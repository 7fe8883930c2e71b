"""`tessellate trace from-kubectl` and `--gpu-catalogue`: a kubectl dump replays as the scheduler saw it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tessellate.placement import catalogue
from tessellate.placement.catalogue import CatalogueFileError, extend_catalogue, model_for_product
from tessellate.simulator.traces.generic import load_trace

from tessellate.cli import main


def node(name: str, product: str, gpus: int) -> dict:
    alloc = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {"kind": "Node", "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
            "status": {"allocatable": alloc}}  # fmt: skip


def pod(name: str, gpus: int, created: str, node_name: str = "", phase: str = "Pending", **extra) -> dict:
    meta = {"name": name, "namespace": "team", "uid": f"uid-{name}", "creationTimestamp": created}
    meta.update(extra.pop("meta", {}))
    limits = {"nvidia.com/gpu": str(gpus), "cpu": "1"}
    spec = {"schedulerName": extra.pop("scheduler", "tessellate"), "nodeName": node_name}
    spec["containers"] = [{"name": "c", "resources": {"limits": limits}}]
    spec.update(extra)
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    items = [
        node("h1", "NVIDIA-H100-80GB-HBM3", 8),
        node("a1", "NVIDIA-A100-SXM4-80GB", 8),
        pod(
            "late", 4, "2026-12-01T10:05:00Z", "h1", "Running", meta={"labels": {"tessellate.dev/queue": "x"}}
        ),
        pod("early", 2, "2026-12-01T10:00:00Z", "a1", "Running", priority=7),
        pod("next", 8, "2026-12-01T11:00:00Z"),
        pod("first", 1, "2026-12-01T10:30:00Z"),
        pod("gone", 1, "2026-12-01T09:00:00Z", "h1", "Succeeded"),
        pod("theirs", 1, "2026-12-01T09:00:00Z", scheduler="default-scheduler"),
        pod(
            "bad",
            0,
            "2026-12-01T09:00:00Z",
            containers=[{"name": "c", "resources": {"limits": {"cpu": "lots"}}}],
        ),
    ]
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def test_a_snapshot_becomes_a_trace_with_bound_pods_first_and_pending_ones_arriving(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "trace"
    assert main(["trace", "from-kubectl", str(snapshot), "--out", str(out)]) == 0
    trace = load_trace(out / "nodes.csv", out / "pods.csv")
    assert {n.name: n.gpu_model for n in trace.nodes} == {"a1": "A100-80GB", "h1": "H100-80GB"}
    order = [(p.name, p.creation_time) for p in trace.pods]
    assert order == [("team/early", 0.0), ("team/late", 0.0), ("team/first", 1.0), ("team/next", 2.0)]
    by_name = {p.name: p for p in trace.pods}
    assert by_name["team/late"].queue == "x" and by_name["team/early"].priority == 7
    assert by_name["team/next"].request.gpu_count == 8
    shown = capsys.readouterr().out
    assert "finished (Succeeded or Failed)" in shown and "pending for another scheduler" in shown
    assert "invalid resource request" in shown
    assert main(["trace", "from-kubectl", str(snapshot), "--out", str(out)]) == 2  # never mixes two traces


def test_product_labels_map_to_catalogue_models_as_the_scheduler_maps_them() -> None:
    from tessellate.scheduler.nodes import gpu_model_name

    for label, model in [
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-H100-NVL", "H100-NVL-94GB"),
        ("Tesla-T4", "T4"),
        ("NVIDIA-A10G", "A10"),
        ("NVIDIA-L40S", "L40S-48GB"),
        ("NVIDIA-L4", "L4-24GB"),
        ("NVIDIA-B200", "B200-180GB"),
        ("Tesla-V100-SXM2-32GB", "V100M32"),
        ("A100-80GB", "A100-80GB"),
    ]:
        assert model_for_product(label) == model == gpu_model_name(label), label
    assert model_for_product("NVIDIA-Z9") == "NVIDIA-Z9"  # unknown: unchanged, the caller refuses it


def test_an_extra_catalogue_adds_models_and_their_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "GPU_MODELS", dict(catalogue.GPU_MODELS))
    monkeypatch.setattr(catalogue, "_ALIASES", {})
    extra = tmp_path / "extra.yaml"
    extra.write_text("- name: L20-48GB\n  memoryGiB: 48\n  products: [NVIDIA-L20]\n")
    assert extend_catalogue(extra) == ["L20-48GB"] and model_for_product("NVIDIA-L20") == "L20-48GB"
    assert extend_catalogue(extra) == ["L20-48GB"]  # loading twice is fine
    for bad, message in [
        ("- {name: A100-80GB, memoryGiB: 40}\n", "already in the catalogue"),
        ("- {name: X1, memoryGiB: -1}\n", "memoryGiB must be"),
        ("- {name: X1, memory: 4}\n", "unknown field"),
        ("name: X1\n", "expected a list"),
    ]:
        extra.write_text(bad)
        with pytest.raises(CatalogueFileError, match=message):
            extend_catalogue(extra)


def test_a_node_of_an_unknown_model_says_to_add_it_with_the_catalogue_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalogue, "GPU_MODELS", dict(catalogue.GPU_MODELS))
    monkeypatch.setattr(catalogue, "_ALIASES", {})
    snap = tmp_path / "snap.json"
    snap.write_text(
        json.dumps(
            {"kind": "List", "items": [node("z1", "NVIDIA-L20", 4), pod("p", 1, "2026-12-01T10:00:00Z")]}
        )
    )
    assert main(["trace", "from-kubectl", str(snap), "--out", str(tmp_path / "t")]) == 0
    args = [
        "sim",
        "timed",
        "--nodes",
        str(tmp_path / "t" / "nodes.csv"),
        "--pods",
        str(tmp_path / "t" / "pods.csv"),
    ]
    assert main([*args, "--policy", "fgd", "--out", str(tmp_path / "r1")]) == 2
    shown = capsys.readouterr()
    assert "--gpu-catalogue" in (shown.out + shown.err).replace("\n", "")  # rich wraps long lines
    extra = tmp_path / "extra.yaml"
    extra.write_text("- {name: L20-48GB, memoryGiB: 48, products: [NVIDIA-L20]}\n")
    assert main(["--gpu-catalogue", str(extra), *args, "--policy", "fgd", "--out", str(tmp_path / "r2")]) == 0


def test_sim_run_with_nodes_alone_sizes_the_synthetic_workload_to_them(tmp_path: Path) -> None:
    from tessellate.simulator.experiment import TraceSource

    nodes = tmp_path / "nodes.csv"
    rows = [f"a{i},96000,786432,8,NVIDIA-A100-SXM4-80GB" for i in range(6)] + ["c0,64000,262144,0,"]
    nodes.write_text("name,cpu_milli,memory_mib,gpu_count,gpu_model\n" + "\n".join(rows) + "\n")
    assert main(["sim", "run", "--nodes", str(nodes), "--policy", "fgd", "--out", str(tmp_path / "out")]) == 0
    trace = TraceSource(nodes=str(nodes), synthetic_seed=3).load()
    assert [n.name for n in trace.nodes] == [f"a{i}" for i in range(6)] + ["c0"]
    gpu_pods = [p for p in trace.pods if p.request.gpu_count]
    demand = sum(p.request.gpu_count * p.request.gpu_milli for p in gpu_pods) / 1000
    assert 0.5 * 48 <= demand <= 2 * 48  # sized to the 48 GPUs given, as the openb mix is to its own
    assert all(
        set(p.request.gpu_models) <= {"A100-80GB"} for p in gpu_pods
    )  # constraints only where they fit
