"""The one thing policies need from a random generator: a uniform int in [0, n)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class IntSource(Protocol):
    def intn(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        ...


class NumpyInts:
    """IntSource over numpy's default generator (the live scheduler's choice)."""

    def __init__(self, seed: int | None = None):
        self._gen = np.random.default_rng(seed)

    def intn(self, n: int) -> int:
        return int(self._gen.integers(n))
