"""Fixtures for tests against a real kube-apiserver (see cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration import cluster
from scheduler.kube import KubeClient


@pytest.fixture(scope="session")
def control_plane(worker_id: str) -> Iterator[cluster.ControlPlane]:
    cp = cluster.start(worker_id)
    yield cp
    cluster.stop(cp)


@pytest.fixture(scope="session")
def admin(control_plane: cluster.ControlPlane) -> KubeClient:
    """A client with the admin (system:masters) kubeconfig."""
    return control_plane.client()


@pytest.fixture
def namespace(admin: KubeClient) -> str:
    return cluster.make_namespace(admin)
