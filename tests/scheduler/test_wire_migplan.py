"""The MIG plan annotation the scheduler writes and the agent reads: one schema, validated."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tessellate.placement.mig import MigLayout, geometry, valid_placements

from tessellate.wire.migplan import (
    APPLIED,
    FAILED,
    GpuPlan,
    NodePlan,
    PlanFormatError,
    PlanStatus,
    decode_plan,
    decode_status,
    encode_plan,
    encode_status,
)

A100 = geometry("A100-80GB")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(A100.profile_names), max_size=8), st.integers(1, 10**6))
def test_any_valid_layout_survives_the_round_trip(profiles: list[str], generation: int) -> None:
    layout = MigLayout(A100)
    for profile in profiles:
        starts = valid_placements(layout, profile)
        if starts:
            layout = layout.add(profile, starts[-1])
    plan = NodePlan(generation, (GpuPlan(3, layout, "GPU-x"),))
    assert decode_plan(encode_plan(plan), A100) == plan


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 2, "generation": 1, "gpus": []}, "unsupported version 2"),
        ({"version": 1, "generation": 0, "gpus": []}, "'generation' must be a positive integer"),
        ({"version": 1, "generation": True, "gpus": []}, "'generation' must be a positive integer"),
        ({"version": 1, "generation": 1, "gpus": [{"index": -1, "instances": []}]}, "'index' must be"),
        (
            {
                "version": 1,
                "generation": 1,
                "gpus": [{"index": 0, "instances": [{"profile": "3g.40gb", "start": 3}]}],
            },
            "not a valid A100-80GB layout",
        ),
        (
            {
                "version": 1,
                "generation": 1,
                "gpus": [
                    {
                        "index": 0,
                        "instances": [{"profile": "4g.40gb", "start": 0}, {"profile": "3g.40gb", "start": 0}],
                    }
                ],
            },
            "not a valid A100-80GB layout",
        ),
        (
            {
                "version": 1,
                "generation": 1,
                "gpus": [{"index": 0, "instances": []}, {"index": 0, "instances": []}],
            },
            "listed twice",
        ),
    ],
)
def test_a_bad_plan_is_refused_with_the_field_that_is_wrong(doc: dict, message: str) -> None:
    with pytest.raises(PlanFormatError, match=message):
        decode_plan(json.dumps(doc), A100)
    with pytest.raises(PlanFormatError, match="not JSON"):
        decode_plan("{", A100)


def test_status_round_trip_and_refusals() -> None:
    status = PlanStatus(4, FAILED, "GPU 2 runs pod ns/p", "2026-12-01T14:00:00Z")
    assert decode_status(encode_status(status)) == status
    assert decode_status(encode_status(PlanStatus(1, APPLIED))).applied
    for raw in (
        '{"generation": true, "state": "Applied"}',
        '{"generation": 0, "state": "Applied"}',
        '{"generation": 1, "state": "Done"}',
        "nope",
    ):
        with pytest.raises(PlanFormatError):
            decode_status(raw)
