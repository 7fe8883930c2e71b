"""MIG geometry: the catalogue agrees with the reference, layouts are valid by construction,
placement keeps the valuable slots open, and `tessellate mig` prints what a person or a script needs."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import statistics
from collections import Counter
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import REPO, SHARED
from tessellate.placement.catalogue import UnknownGpuModelError
from tessellate.placement.mig import (
    InvalidMigLayoutError,
    MigError,
    MigGeometry,
    MigInstance,
    MigLayout,
    UnknownMigModelError,
    UnknownMigProfileError,
    geometry,
    known_models,
    load_catalogue,
    maximal_layouts,
    valid_placements,
)
from tessellate.placement.migfrag import (
    choose_placement,
    choose_start,
    first_fit,
    first_fit_placement,
    mig_fragmentation,
    mig_fragmentation_ratio,
)
from tessellate.placement.migplanner import MigPlanFailure, plan_layout

from tessellate import mig_cli

ROOT = REPO
REFERENCE_DIR = SHARED / "reference"
REFERENCE_FILE = REFERENCE_DIR / "mig-profiles.yaml"
needs_reference = pytest.mark.skipif(not REFERENCE_FILE.is_file(), reason="shared MIG reference not present")
REQUIRED = ("A30-24GB", "A100-40GB", "A100-80GB", "H100-80GB", "H100-NVL-94GB", "H200-141GB")


@cache
def reference() -> dict:
    import yaml  # only the reference checks need PyYAML

    return yaml.safe_load(REFERENCE_FILE.read_text())


# -- a slow, obviously-correct reference implementation -------------------------------------------


def problems_by_slots(g: MigGeometry, instances) -> list[str]:
    """Check the rules slot by slot, without MigLayout."""
    occupied: list[MigInstance | None] = [None] * g.memory_slices
    found: list[str] = []
    compute = 0
    counts: Counter[str] = Counter()
    for instance in instances:
        try:
            profile = g.profile(instance.profile)
        except UnknownMigProfileError:
            found.append(f"unknown {instance.profile}")
            continue
        if instance.start not in profile.starts:
            found.append(f"{instance} bad start")
        for slot in range(instance.start, instance.start + profile.size):
            if not 0 <= slot < g.memory_slices:
                found.append(f"{instance} past the end")
            elif occupied[slot] is not None:
                found.append(f"{instance} overlaps {occupied[slot]}")
            else:
                occupied[slot] = instance
        compute += profile.compute_slices
        counts[profile.name] += 1
    if compute > g.compute_slices:
        found.append("compute")
    found += [f"too many {name}" for name, n in counts.items() if n > g.profile(name).max_count]
    if sum(counts.values()) > g.max_instances:
        found.append("too many instances")
    return found


def assert_valid(layout: MigLayout) -> None:
    assert problems_by_slots(layout.geometry, layout.instances) == []
    assert MigLayout.problems(layout.geometry, layout.instances) == []


@cache
def all_valid_sets(model: str) -> tuple[frozenset[MigInstance], ...]:
    """Every valid set of instances (the empty one included), by include/exclude over all placements."""
    g = geometry(model)
    placements = [MigInstance(p.name, s) for p in g.profiles for s in p.starts]
    out: list[frozenset[MigInstance]] = []

    def walk(i: int, chosen: list[MigInstance]) -> None:
        if problems_by_slots(g, chosen):
            return  # adding more never repairs a broken set
        if i == len(placements):
            out.append(frozenset(chosen))
            return
        walk(i + 1, chosen)
        walk(i + 1, [*chosen, placements[i]])

    walk(0, [])
    return tuple(out)


@cache
def maximal_sets(model: str) -> frozenset[frozenset[MigInstance]]:
    g = geometry(model)
    placements = [MigInstance(p.name, s) for p in g.profiles for s in p.starts]
    return frozenset(
        s for s in all_valid_sets(model) if all(x in s or problems_by_slots(g, [*s, x]) for x in placements)
    )


def layout_strategy(model_strategy=None):
    """A valid layout grown by random valid additions."""

    @st.composite
    def build(draw):
        model = draw(st.sampled_from(known_models()) if model_strategy is None else model_strategy)
        layout = MigLayout(geometry(model))
        for _ in range(draw(st.integers(0, 8))):
            profile = draw(st.sampled_from(layout.geometry.profiles))
            starts = valid_placements(layout, profile)
            if starts:
                layout = layout.add(profile, draw(st.sampled_from(starts)))
        return layout

    return build()


def demand_strategy(g: MigGeometry):
    return st.dictionaries(
        st.sampled_from(g.profile_names), st.floats(0.01, 1.0), min_size=1, max_size=len(g.profiles)
    )


# -- the catalogue agrees with the reference ---------------------------------------------------


@needs_reference
def test_every_profile_and_placement_agrees_with_the_reference():
    by_id = {gpu["id"]: gpu for gpu in reference()["gpus"]}
    catalogue = load_catalogue()
    for model, g in catalogue.items():
        ref = by_id[model]
        assert (g.memory_slices, g.compute_slices, g.max_instances) == (
            ref["memory_slices"],
            ref["compute_slices"],
            ref["max_gpu_instances"],
        )
        assert [p.name for p in g.profiles] == [p["name"] for p in ref["profiles"]]
        for profile, ref_profile in zip(g.profiles, ref["profiles"], strict=True):
            where = f"{model} {profile.name}"
            assert profile.compute_slices == ref_profile["compute_slices"], where
            assert profile.memory_slices == ref_profile["memory_slices"], where
            assert list(profile.starts) == ref_profile["placements"]["starts"], where
            assert profile.size == ref_profile["placements"]["size"], where
            assert profile.max_count == ref_profile["max_count"], where
            assert profile.profile_id == ref_profile.get("nvidia_smi_profile_id"), where
            assert profile.sm_count == ref_profile.get("sm_count"), where
            reported = ref_profile.get("memory_gib_reported")
            if isinstance(reported, int | float):
                assert profile.memory_gib == pytest.approx(reported), where
                assert profile.memory_mib == round(reported * 1024), where
            assert profile.memory_mib > 0, where


@needs_reference
def test_every_reference_gpu_with_placements_is_in_the_catalogue():
    complete = [g["id"] for g in reference()["gpus"] if all("placements" in p for p in g["profiles"])]
    assert list(load_catalogue()) == complete


@needs_reference
def test_the_committed_json_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "build_mig_catalogue", ROOT / "scripts" / "build_mig_catalogue.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    catalogue, skipped = module.build(reference())
    committed = (ROOT / "placement" / "data" / "mig_catalogue.json").read_text()
    assert module.render(catalogue) == committed
    assert json.loads(committed) == catalogue
    assert any(note.startswith("GB200") for note in skipped)


def test_the_six_models_of_the_issue_are_known_under_their_common_names():
    for name in REQUIRED:
        assert geometry(name).profiles
    assert geometry("A100-40GB").model == "A100-SXM4-40GB"
    assert geometry("H100-NVL-94GB").model == "H100-94GB"
    assert geometry("nvidia a100-sxm4-80gb").model == "A100-80GB"
    assert geometry("NVIDIA-H100-80GB-HBM3").model == "H100-80GB"


def test_an_unknown_model_is_an_error_listing_the_known_ones():
    with pytest.raises(UnknownMigModelError, match="known models: A30-24GB, A100-SXM4-40GB") as info:
        geometry("V100M16")
    assert isinstance(info.value, UnknownGpuModelError)


def test_an_unknown_profile_is_an_error_listing_the_models_profiles():
    with pytest.raises(UnknownMigProfileError, match=re.escape("1g.10gb, 1g.10gb+me, 1g.20gb")):
        geometry("A100-80GB").profile("3g.20gb")
    assert geometry("A100-80GB").profile("nvidia.com/mig-3g.40gb").name == "3g.40gb"


# -- known facts ----------------------------------------------------------------------------------


def test_a30_has_four_memory_and_four_compute_slices_and_a100_eight_and_seven():
    assert (geometry("A30-24GB").memory_slices, geometry("A30-24GB").compute_slices) == (4, 4)
    assert (geometry("A100-80GB").memory_slices, geometry("A100-80GB").compute_slices) == (8, 7)


@pytest.mark.parametrize("model", ["A100-40GB", "A100-80GB"])
def test_a100_layouts_include_seven_1g_instances(model):
    g = geometry(model)
    one_g = g.profiles[0].name
    seven = MigLayout(g, tuple(MigInstance(one_g, s) for s in range(7)))
    assert seven in maximal_layouts(g)
    assert seven.slice_map() == "1|1|1|1|1|1|1|."


def test_3g_plus_3g_is_a_valid_full_layout_on_a100_80gb():
    layout = MigLayout.of("A100-80GB", ("3g.40gb", 0), ("3g.40gb", 4))
    assert layout.free_memory_slices == 0 and layout.free_compute_slices == 1
    assert layout in maximal_layouts("A100-80GB")


def test_4g_at_start_0_blocks_3g_at_start_0():
    layout = MigLayout.of("A100-80GB", ("4g.40gb", 0))
    assert valid_placements(layout, "3g.40gb") == (4,)
    assert layout.why_not("3g.40gb", 0) == "memory slices [0, 4) hold 4g.40gb at start 0"


def test_slots_and_rules_that_nvidia_smi_enforces():
    with pytest.raises(
        InvalidMigLayoutError, match=re.escape("3g.40gb cannot start at memory slice 2 (allowed: 0, 4)")
    ):
        MigLayout.of("A100-80GB", ("3g.40gb", 2))
    with pytest.raises(InvalidMigLayoutError, match="cannot start at memory slice 7"):
        MigLayout.of("A100-80GB", ("1g.10gb", 7))
    with pytest.raises(InvalidMigLayoutError, match="at most 1 fit"):
        MigLayout.of("A100-80GB", ("1g.10gb+me", 0), ("1g.10gb+me", 1))
    with pytest.raises(
        InvalidMigLayoutError, match=r"7g.80gb@0 and 1g.10gb@6 overlap on memory slices \[6, 7\)"
    ):
        MigLayout.of("A100-80GB", ("7g.80gb", 0), ("1g.10gb", 6))
    # The MIG guide's examples: 3-2-1-1 and 2-1-1-1-1-1 on A100-40GB, and the driver's own choice
    # for `-cgi 19,14,5` (1g at 6, 2g at 4, 4g at 0).
    MigLayout.of("A100-40GB", ("1g.5gb", 0), ("1g.5gb", 1), ("2g.10gb", 2), ("3g.20gb", 4))
    MigLayout.of("A100-40GB", *[("1g.5gb", s) for s in (0, 1, 2, 3, 6)], ("2g.10gb", 4))
    MigLayout.of("A100-40GB", ("1g.5gb", 6), ("2g.10gb", 4), ("4g.20gb", 0))


def test_fragmentation_aware_start_follows_the_drivers_habit_of_filling_from_the_top():
    layout = MigLayout(geometry("A100-40GB"))
    for profile in ("1g.5gb", "2g.10gb", "4g.20gb"):
        layout = layout.add(profile, choose_start(layout, profile))
    assert str(layout) == "4g.20gb@0 + 2g.10gb@4 + 1g.5gb@6"
    assert first_fit(MigLayout(geometry("A100-40GB")), "1g.5gb") == 0


def test_fragmentation_counts_free_slices_the_demand_cannot_use():
    g = geometry("A100-80GB")
    assert mig_fragmentation(MigLayout.of(g, ("3g.40gb", 0), ("3g.40gb", 4))) == 0
    # Only 1g demand: slice 7 is the one free slice a 1g can never use.
    assert mig_fragmentation(MigLayout(g), {"1g.10gb": 1}) == 1
    # A 4g fits only at 0, so with 1g@0 in place all 7 free slices are lost to it.
    assert mig_fragmentation(MigLayout.of(g, ("1g.10gb", 0)), {"4g.40gb": 1}) == 7
    assert mig_fragmentation_ratio(MigLayout.of(g, ("1g.10gb", 0)), {"4g.40gb": 1}) == 1


def test_plan_says_why_a_7g_cannot_join_an_in_use_3g():
    g = geometry("A100-80GB")
    plan = plan_layout(g, {"7g.80gb": 1}, MigLayout.of(g, ("3g.40gb", 4)))
    assert plan == MigPlanFailure("7g.80gb needs all 8 memory slices; 3g.40gb at start 4 is in use")


def test_plan_refusals_name_the_rule():
    g = geometry("A100-80GB")
    assert str(plan_layout(g, {"3g.40gb": 3})) == "3 x 3g.40gb requested but at most 2 fit on one A100-80GB"
    assert "need 9 memory slices but A100-80GB has 8" in str(plan_layout(g, {"3g.40gb": 2, "1g.10gb": 1}))
    full_of_1g = MigLayout.of(g, *[("1g.10gb", s) for s in range(7)])
    assert str(plan_layout(g, {"1g.10gb": 1}, full_of_1g)) == (
        "1 x 1g.10gb requested with 7 in use but at most 7 fit on one A100-80GB"
    )
    with pytest.raises(MigError, match="in-use layout is for A30-24GB"):
        plan_layout(g, {"1g.10gb": 1}, MigLayout(geometry("A30-24GB")))
    blocked = plan_layout(g, {"3g.40gb": 1}, MigLayout.of(g, ("1g.10gb", 3), ("2g.20gb", 4)))
    assert str(blocked) == (
        "3g.40gb can only start at memory slices 0, 4 (size 4): [0, 4) holds 1g.10gb at start 3; "
        "[4, 8) holds 2g.20gb at start 4"
    )


def test_plan_keeps_the_free_slice_where_a_1g_can_still_use_it():
    plan = plan_layout(geometry("A100-80GB"), {"3g.40gb": 1, "1g.10gb": 3})
    assert str(plan) == "1g.10gb@0 + 1g.10gb@1 + 1g.10gb@2 + 3g.40gb@4"  # slice 3 free, not slice 7


# -- properties -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", known_models())
def test_maximal_layouts_are_exactly_the_brute_force_maximal_sets(model):
    layouts = maximal_layouts(model)
    for layout in layouts:
        assert_valid(layout)
    as_sets = [frozenset(layout.instances) for layout in layouts]
    assert len(set(as_sets)) == len(as_sets)
    assert set(as_sets) == maximal_sets(model)
    assert maximal_layouts(model) == layouts  # deterministic


@given(
    st.lists(st.tuples(st.sampled_from(geometry("H100-80GB").profile_names), st.integers(-1, 8)), max_size=8)
)
def test_a_layout_can_be_built_exactly_when_the_slot_rules_hold(pairs):
    g = geometry("H100-80GB")
    instances = [MigInstance(p, s) for p, s in pairs]
    expected_ok = not problems_by_slots(g, instances)
    try:
        layout = MigLayout(g, tuple(instances))
    except InvalidMigLayoutError as exc:
        assert not expected_ok and exc.problems
    else:
        assert expected_ok
        assert sorted(layout.instances, key=lambda i: i.start) == list(layout.instances)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout_strategy())
def test_every_valid_layout_lies_inside_some_maximal_layout(layout):
    assert_valid(layout)
    assert any(set(layout.instances) <= set(m.instances) for m in maximal_layouts(layout.geometry))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_repeated_choose_start_only_builds_valid_layouts_and_picks_the_least_fragmenting_start(data):
    g = geometry(data.draw(st.sampled_from(known_models())))
    demand = data.draw(demand_strategy(g))
    layout = MigLayout(g)
    for _ in range(10):
        profile = data.draw(st.sampled_from(g.profile_names))
        start = choose_start(layout, profile, demand)
        starts = valid_placements(layout, profile)
        if start is None:
            assert starts == ()
            continue
        frag = {s: round(mig_fragmentation(layout.add(profile, s), demand), 9) for s in starts}
        assert frag[start] == min(frag.values())
        assert start == min(s for s in starts if frag[s] == frag[start])
        layout = layout.add(profile, start)
        assert_valid(layout)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_plan_serves_the_demand_keeps_in_use_instances_and_is_the_least_fragmented(data):
    in_use = data.draw(layout_strategy(st.sampled_from(["A30-24GB", "A100-80GB", "H200-141GB"])))
    g = in_use.geometry
    counts = data.draw(st.dictionaries(st.sampled_from(g.profile_names), st.integers(0, 3), max_size=3))
    plan = plan_layout(g, counts, in_use)
    needed = Counter({p: in_use.count(p) + counts.get(p, 0) for p in g.profile_names})
    candidates = [
        s
        for s in all_valid_sets(g.model)
        if set(in_use.instances) <= s and Counter(i.profile for i in s) == +needed
    ]
    if not candidates:
        assert isinstance(plan, MigPlanFailure) and plan.reason
        return
    assert isinstance(plan, MigLayout), plan
    assert_valid(plan)
    assert set(in_use.instances) <= set(plan.instances)
    assert Counter(i.profile for i in plan) == +needed
    best = min(round(mig_fragmentation(MigLayout(g, tuple(s))), 9) for s in candidates)
    assert round(mig_fragmentation(plan), 9) == best


# -- fragmentation-aware placement against first fit ---------------------------------------------

MIXES = {
    "A100-80GB uniform (no 7g)": (
        "A100-80GB",
        {"1g.10gb": 1, "1g.20gb": 1, "2g.20gb": 1, "3g.40gb": 1, "4g.40gb": 1},
    ),
    "A100-80GB small-heavy": (
        "A100-80GB",
        {"1g.10gb": 0.4, "1g.20gb": 0.15, "2g.20gb": 0.2, "3g.40gb": 0.15, "4g.40gb": 0.1},
    ),
    "H100-80GB uniform": (
        "H100-80GB",
        {"1g.10gb": 1, "1g.20gb": 1, "2g.20gb": 1, "3g.40gb": 1, "4g.40gb": 1, "7g.80gb": 1},
    ),
    "A30-24GB": ("A30-24GB", {"1g.6gb": 0.5, "2g.12gb": 0.35, "4g.24gb": 0.15}),
}


def accepted_until_first_refusal(
    model: str, mix: dict[str, float], seed: int, aware: bool, gpus: int = 8
) -> int:
    rng = random.Random(seed)
    layouts = [MigLayout(geometry(model))] * gpus
    names, weights = list(mix), list(mix.values())
    accepted = 0
    while True:
        profile = rng.choices(names, weights)[0]
        spot = choose_placement(layouts, profile, mix) if aware else first_fit_placement(layouts, profile)
        if spot is None:
            return accepted
        gpu, start = spot
        layouts[gpu] = layouts[gpu].add(profile, start)
        accepted += 1


@pytest.mark.parametrize("mix", list(MIXES))
def test_fragmentation_aware_placement_accepts_at_least_as_many_requests_as_first_fit(mix):
    model, weights = MIXES[mix]
    seeds = range(20)
    aware = [accepted_until_first_refusal(model, weights, s, aware=True) for s in seeds]
    first = [accepted_until_first_refusal(model, weights, s, aware=False) for s in seeds]
    wins = sum(a > f for a, f in zip(aware, first, strict=True))
    losses = sum(a < f for a, f in zip(aware, first, strict=True))
    print(
        f"\n{mix}, 8 GPUs, 20 seeds: accepted until first refusal: MIG-aware "
        f"{statistics.mean(aware):.2f}, first-fit {statistics.mean(first):.2f} "
        f"(aware better on {wins} seeds, worse on {losses})"
    )
    assert statistics.mean(aware) >= statistics.mean(first)


def test_choose_placement_packs_a_gpu_already_in_use():
    g = geometry("A100-80GB")
    layouts = [MigLayout(g), MigLayout.of(g, ("1g.10gb", 6))]
    assert choose_placement(layouts, "1g.10gb") == (1, 4)
    assert first_fit_placement(layouts, "1g.10gb") == (0, 0)
    assert choose_placement([MigLayout.of(g, ("7g.80gb", 0))], "1g.10gb") is None


# -- the command ----------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = mig_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mig_layouts_json_is_a_list_of_layouts_of_profile_and_start(capsys):
    code, out, _ = run_cli(capsys, "mig", "layouts", "--gpu", "A100-80GB", "--json")
    assert code == 0
    layouts = json.loads(out)
    assert len(layouts) == len(maximal_layouts("A100-80GB"))
    assert all(set(item) == {"profile", "start"} for layout in layouts for item in layout)
    assert [{"profile": "3g.40gb", "start": 0}, {"profile": "3g.40gb", "start": 4}] in layouts
    assert layouts[0] == [{"profile": "7g.80gb", "start": 0}]


def test_mig_layouts_table_draws_the_slices(capsys):
    code, out, _ = run_cli(capsys, "mig", "layouts", "--gpu", "A30-24GB", "--no-me")
    assert code == 0
    assert "A30-24GB: 5 maximal MIG layouts" in out
    assert "4444" in out and "1|1|1|1" in out and "+me" not in out


def test_mig_plan_json_is_one_layout(capsys):
    code, out, _ = run_cli(
        capsys, "mig", "plan", "--gpu", "A100-80GB", "--demand", "3g.40gb=1,1g.10gb=3", "--json"
    )
    assert code == 0
    assert json.loads(out) == [
        {"profile": "1g.10gb", "start": 0},
        {"profile": "1g.10gb", "start": 1},
        {"profile": "1g.10gb", "start": 2},
        {"profile": "3g.40gb", "start": 4},
    ]


def test_mig_plan_table_keeps_in_use_instances(capsys):
    code, out, _ = run_cli(
        capsys, "mig", "plan", "--gpu", "H100-80GB", "--demand", "2g.20gb=2", "--in-use", "3g.40gb@4"
    )
    assert code == 0
    assert "in use" in out and "22|22|3333" in out


def test_mig_plan_that_cannot_fit_says_why_with_status_1(capsys):
    code, out, err = run_cli(
        capsys,
        "mig",
        "plan",
        "--gpu",
        "A100-80GB",
        "--demand",
        "7g.80gb=1",
        "--in-use",
        "3g.40gb@4",
        "--json",
    )
    assert (code, out) == (1, "")
    assert (
        err.strip()
        == "cannot plan A100-80GB: 7g.80gb needs all 8 memory slices; 3g.40gb at start 4 is in use"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layouts", "--gpu", "V100"], "unknown MIG GPU model 'V100'; known models:"),
        (["plan", "--gpu", "A100-80GB", "--demand", "3g.20gb=1"], "A100-80GB has no MIG profile '3g.20gb'"),
        (["plan", "--gpu", "A100-80GB", "--demand", "3g.40gb=x"], "--demand wants PROFILE=COUNT"),
        (["plan", "--gpu", "A100-80GB", "--demand", "3g.40gb:1"], "--demand wants PROFILE=COUNT"),
        (["plan", "--gpu", "A100-80GB", "--demand", "3g.40gb=-1"], "--demand wants PROFILE=COUNT"),
        (["plan", "--gpu", "A100-80GB", "--demand", ","], "--demand is empty"),
        (["plan", "--gpu", "A100-80GB", "--demand", "1g.10gb", "--in-use", "3g.40gb@2"], "cannot start at"),
    ],
)
def test_mistakes_in_the_command_are_one_line_with_status_2(capsys, argv, message):
    code, out, err = run_cli(capsys, "mig", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
