"""Run a sweep's cells on Ray instead of the local process pool.

Ray is an optional extra (`pip install tessellate[ray]`): it is imported only
here, only when asked for. Each cell becomes one Ray task calling the same
`simulator.sweep.run_cell` the process pool calls, so a row depends only on its
cell and the table is the local one (tests/simulator/test_sweep_ray.py). Tasks
are collected as they finish (for the progress bar) and put back in cell order.
Workers on a remote cluster must have tessellate installed (the same version).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tessellate.simulator.sweep import SweepCell, run_cell


class RayUnavailableError(RuntimeError):
    """Ray is not installed or the cluster cannot be reached; the message says what to do."""


def run_on_ray(
    cells: Sequence[SweepCell],
    address: str,
    workers: int | None = None,
    on_done: Callable[[dict[str, object]], None] | None = None,
) -> list[dict[str, object]]:
    """Every cell as a Ray task. `address` is `local` (start Ray on this machine, `workers` CPUs)
    or a cluster address (`ray://host:10001`, `auto`); rows come back in cell order."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--ray needs Ray: pip install 'tessellate[ray]' (or drop --ray to use local processes)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailableError(
                f"cannot reach the Ray cluster at {address!r} ({exc}); check the address "
                "(e.g. ray://head:10001 or auto) or use --ray local"
            ) from None
    try:
        task = ray.remote(run_cell)
        pending = {task.remote(cell): i for i, cell in enumerate(cells)}
        by_index: dict[int, dict[str, object]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                by_index[pending.pop(ref)] = row = ray.get(ref)
                if on_done:
                    on_done(row)
        return [by_index[i] for i in range(len(cells))]
    finally:
        if started_here:
            ray.shutdown()
