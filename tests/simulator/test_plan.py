"""`plan capacity`: the answer meets the target when replayed on its own, and one node fewer
of any shape does not (a small synthetic case, seconds)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from tessellate.simulator.capacity import Planner, Target, cluster, grow, wait_p95
from tessellate.simulator.nodetypes import DEFAULT_SPEEDS, NodeShape, NodeTypesError, load_node_types
from tessellate.simulator.timed import run_timed
from tessellate.simulator.trace import Trace
from tessellate.simulator.traces.synthetic import SyntheticConfig, generate

from tessellate.cli import main

SHAPES = (
    NodeShape("t4x4", "T4", 4, 96000, 512 * 1024, 2.0),
    NodeShape("a100x8", "A100-80GB", 8, 128000, 1024 * 1024, 25.0),
)
TARGET = Target(placed=0.98, wait_p95_s=900)


@pytest.fixture(scope="module")
def workloads() -> list[Trace]:
    trace = generate(SyntheticConfig(seed=1, scale=0.015, gpu_spec_share=0.0))
    return [grow(trace, 1.5, seed) for seed in (7, 8)]


@pytest.fixture(scope="module")
def answer(workloads):
    planner = Planner(workloads, SHAPES, DEFAULT_SPEEDS, TARGET, "fgd", max_wait=3600)
    return planner, planner.solve()


def _replay(workloads, mix) -> tuple[float, float]:
    """(worst placed share, worst p95 wait) replayed here, outside the planner and its cache."""
    placed, waits = [], []
    for seed, workload in enumerate(workloads):
        trace = dataclasses.replace(workload, nodes=cluster(SHAPES, mix))
        result = run_timed(trace, "fgd", seed, max_wait=3600, speeds=DEFAULT_SPEEDS)
        placed.append(result.placed / len(result.outcome))
        waits.append(wait_p95(result.delays, len(result.outcome) - result.placed))
    return min(placed), max(waits)


def _meets(figures: tuple[float, float]) -> bool:
    return figures[0] >= TARGET.placed and figures[1] <= TARGET.wait_p95_s


def test_the_answer_meets_the_target_when_replayed(workloads, answer):
    _, best = answer
    assert best.meets and sum(best.mix) > 0
    assert _meets(_replay(workloads, best.mix))


def test_one_node_fewer_of_any_shape_misses(workloads, answer):
    _, best = answer
    for i, count in enumerate(best.mix):
        if count == 0:
            continue
        fewer = (*best.mix[:i], count - 1, *best.mix[i + 1 :])
        assert not _meets(_replay(workloads, fewer)), f"{fewer} also meets the target"


def test_the_answer_is_the_cheapest_meeting_mix_seen(answer):
    planner, best = answer
    meeting = [e for e in planner.seen.values() if e.meets]
    assert best.cost_per_hour == min(e.cost_per_hour for e in meeting)
    assert best in planner.frontier()


def test_parallel_seeds_give_the_same_search(workloads, answer):
    """Two processes replaying the seeds: the same mixes evaluated, frontier and answer."""
    serial, best = answer
    pooled: list[bool] = []  # per evaluation: was it replayed by the pool?
    parallel = Planner(
        workloads, SHAPES, DEFAULT_SPEEDS, TARGET, "fgd", max_wait=3600, workers=2,
        on_eval=lambda e: pooled.append(parallel._pool is not None),
    )  # fmt: skip
    assert parallel.solve() == best
    assert pooled and all(pooled) and parallel._pool is None  # closed with the search
    assert parallel.frontier() == serial.frontier()
    assert list(parallel.seen.items()) == list(serial.seen.items())  # same mixes, in the same order


def test_skipping_the_fragmentation_series_changes_no_placement(workloads, answer):
    _, best = answer
    trace = dataclasses.replace(workloads[1], nodes=cluster(SHAPES, best.mix))
    full = run_timed(trace, "fgd", 1, max_wait=3600, speeds=DEFAULT_SPEEDS)
    lean = run_timed(trace, "fgd", 1, max_wait=3600, speeds=DEFAULT_SPEEDS, fragmentation=False)
    assert lean.outcome == full.outcome and lean.start_time == full.start_time
    assert np.array_equal(lean.delays, full.delays)
    assert np.array_equal(lean.steps.allocated_milli, full.steps.allocated_milli)
    assert lean.steps.frag_milli.size and np.isnan(lean.steps.frag_milli).all()
    assert not np.isnan(full.steps.frag_milli).any()


def test_faster_gpus_shorten_runtimes(workloads):
    trace = dataclasses.replace(workloads[0], nodes=cluster(SHAPES, (0, 40)))
    slow = run_timed(trace, "fgd", max_wait=None, speeds={"A100-80GB": 1.0})
    fast = run_timed(trace, "fgd", max_wait=None, speeds={"A100-80GB": 2.4})
    assert fast.gpu_hours == pytest.approx(slow.gpu_hours / 2.4, rel=1e-6)  # nobody waits here


def test_growth_scales_the_arrivals(workloads):
    base = generate(SyntheticConfig(seed=1, scale=0.015, gpu_spec_share=0.0))
    assert len(workloads[0].pods) == pytest.approx(1.5 * len(base.pods), rel=0.15)
    assert len({p.name for p in workloads[0].pods}) == len(workloads[0].pods)
    assert grow(base, 1.0, 3) is base


def test_existing_nodes_are_kept(workloads):
    shapes = (SHAPES[0], dataclasses.replace(SHAPES[1], existing=6))
    planner = Planner(workloads[:1], shapes, DEFAULT_SPEEDS, TARGET, "fgd", max_wait=3600)
    assert planner.solve().mix[1] >= 6


def test_types_yaml_errors_say_what_to_fix(tmp_path):
    path = tmp_path / "types.yaml"
    path.write_text("node_types:\n  - {name: x, gpu_model: T4, gpus: 4, cpu: 8, price_per_hour: 1}\n")
    with pytest.raises(NodeTypesError, match="missing memory_gib"):
        load_node_types(path)
    path.write_text(
        "node_types:\n  - {name: x, gpu_model: G2, gpus: 8, cpu: 8, memory_gib: 64, price_per_hour: 1}\n"
    )
    with pytest.raises(NodeTypesError, match="no speed known for G2"):
        load_node_types(path)


def test_the_example_types_yaml_loads():
    types = load_node_types("docs/examples/types.yaml")
    assert [s.name for s in types.shapes] == ["t4x4", "a10x4", "a100x8"]
    assert types.shapes[2].existing == 1 and types.speeds["A100-80GB"] == 2.4


def test_plan_capacity_command_writes_table_csv_png_html(tmp_path, capsys):
    types = tmp_path / "types.yaml"
    types.write_text(
        "node_types:\n"
        "  - {name: t4x4, gpu_model: T4, gpus: 4, cpu: 96, memory_gib: 512, price_per_hour: 2}\n"
        "  - {name: a100x8, gpu_model: A100-80GB, gpus: 8, cpu: 128, memory_gib: 1024, price_per_hour: 25}\n"
    )
    code = main([
        "plan", "capacity", "--node-types", str(types), "--synthetic-scale", "0.015", "--growth", "1.5",
        "--seeds", "7", "--target", "placed=0.98,wait-p95=15m", "--out", str(tmp_path / "o"),
    ])  # fmt: skip
    assert code == 0
    out = tmp_path / "o"
    plan = pd.read_csv(out / "plan.csv")
    chosen = plan[plan.meets_target].sort_values("cost_per_hour").iloc[0]
    assert chosen.placed_worst >= 0.98 and chosen.wait_p95_worst_s <= 900
    assert (out / "cost_vs_target.png").read_bytes()[:4] == b"\x89PNG"
    assert "Cheapest mix" in (out / "plan.html").read_text()
    assert (out / "frontier.csv").is_file()
    assert "Cheapest mix meeting placed ≥ 0.98" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "message"),
    [("placed=2", "--target takes placed=SHARE"), ("speed=3", "unknown target 'speed'")],
)
def test_a_bad_target_is_refused(target, message, capsys):
    with pytest.raises(SystemExit):
        main(["plan", "capacity", "--node-types", "t.yaml", "--target", target, "--out", "x"])
    assert message in capsys.readouterr().err


def test_pods_no_shape_can_hold_are_an_error_not_a_search(tmp_path, capsys):
    types = tmp_path / "types.yaml"
    types.write_text(
        "node_types:\n  - {name: t4x1, gpu_model: T4, gpus: 1, cpu: 8, memory_gib: 32, price_per_hour: 1}\n"
    )
    code = main(["plan", "capacity", "--node-types", str(types), "--synthetic-scale", "0.015",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "fit no shape even on an empty node" in capsys.readouterr().err
