"""Fixtures for tests against a real kube-apiserver (see cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration import cluster, rbac
from tessellate.kube import KubeClient


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


@pytest.fixture(scope="module")
def scheduler_api(
    control_plane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeClient]:
    """A client as the scheduler's ServiceAccount (manifests/ applied): the only identity that
    may bind a pod with a tessellate.dev/assignment (manifests/admission-policy.yaml), so the
    one a test binds with when it plays the scheduler."""
    client = KubeClient.from_kubeconfig(
        rbac.scheduler_kubeconfig(control_plane, tmp_path_factory.mktemp("sa"))
    )
    yield client
    client.close()
