"""The Ray path gives the local table (Ray started on this machine in local mode; the test
extra installs Ray, so a missing Ray fails here rather than skipping)."""

from __future__ import annotations

import pandas as pd
import ray  # noqa: F401  (installed by the test extra; the import fails loudly if not)
from tessellate.simulator.experiment import TraceSource
from tessellate.simulator.sweep import grid, run_local


def test_ray_local_gives_the_same_rows_as_the_process_pool():
    from tessellate.simulator.rayrun import run_on_ray

    sources = [TraceSource(synthetic_scale=0.02), TraceSource(synthetic_scale=0.03)]
    cells = grid(sources, ["fgd", "random"], [1, 2], [1.3])
    cells += grid(sources[:1], ["bestfit"], [1], mode="timed", max_wait=600)
    seen: list[dict] = []
    on_ray = pd.DataFrame(run_on_ray(cells, "local", workers=2, on_done=seen.append))
    local = pd.DataFrame(run_local(cells, workers=2))
    assert len(seen) == len(cells)
    pd.testing.assert_frame_equal(on_ray.drop(columns="seconds"), local.drop(columns="seconds"))
