"""manifests/mig-dynamic against a real API server: with it the scheduler's ServiceAccount may
write a Node's `tessellate.dev/mig-plan` annotation and nothing else on the Node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import cluster, rbac
from tessellate.kube import ApiError, KubeClient
from tessellate.wire.migplan import PLAN, PLAN_STATUS

pytestmark = pytest.mark.integration

MIG_DYNAMIC = rbac.MANIFESTS / "mig-dynamic"


@pytest.fixture
def scheduler_with_mig_plans(
    control_plane: cluster.ControlPlane, admin: KubeClient, tmp_path: Path
) -> Iterator[tuple[KubeClient, str]]:
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    control_plane.kubectl("apply", "-k", str(MIG_DYNAMIC))
    node, status = cluster.gpu_node(cluster.unique("mig-plan-rbac"), gpus=2)
    cluster.create_node(admin, node, status)
    name = node["metadata"]["name"]
    sa = KubeClient.from_kubeconfig(kubeconfig)
    try:
        yield sa, name
    finally:
        sa.close()
        # The base manifests' tests expect the scheduler NOT to patch nodes: take the grant back.
        control_plane.kubectl("delete", "-k", str(MIG_DYNAMIC), "--ignore-not-found", "--wait")
        admin.delete(f"/api/v1/nodes/{name}")


def refused(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_the_scheduler_may_write_only_the_mig_plan_annotation(
    scheduler_with_mig_plans: tuple[KubeClient, str], admin: KubeClient
) -> None:
    sa, node = scheduler_with_mig_plans
    path = f"/api/v1/nodes/{node}"
    # Admission policies take effect a moment after they are created: wait until a forbidden
    # change is refused, then check every rule.
    deadline = time.monotonic() + 30
    while True:
        try:
            sa.patch(path, {"metadata": {"labels": {"probe": str(time.monotonic_ns())}}})
        except ApiError as exc:
            assert "may not change a node's spec or labels" in exc.message, exc.message
            break
        assert time.monotonic() < deadline, "the admission policy never took effect"
        time.sleep(0.5)
    sa.patch(path, {"metadata": {"annotations": {PLAN: '{"version":1,"generation":1,"gpus":[]}'}}})
    assert admin.get(path)["metadata"]["annotations"][PLAN].startswith('{"version":1')
    error = refused(lambda: sa.patch(path, {"metadata": {"annotations": {PLAN_STATUS: "{}"}}}))
    assert "only the tessellate.dev/mig-plan annotation" in error.message
    error = refused(lambda: sa.patch(path, {"spec": {"unschedulable": True}}))
    assert "spec or labels" in error.message
    assert refused(lambda: sa.patch(f"{path}/status", {"status": {"capacity": {"x": "1"}}})).status == 403
