"""Fixtures shared by every test module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short per-test directory, removed afterwards (replaces pytest's own).

    Tests put unix sockets in it (the fake kubelet's and the device plugins'), and a
    socket path must fit in 107 bytes. pytest's directories grow with its run counter
    and the test's name, and crossed that limit after about a hundred runs here.
    """
    path = Path(tempfile.mkdtemp(prefix="ts-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
