"""manifests/admission-policy.yaml against a real API server: only the scheduler's ServiceAccount
writes a pod's `tessellate.dev/assignment` (with the Binding), only the node agent's writes
`tessellate.dev/allocated`, and an ordinary user who may create, patch and bind pods can do
everything else with them.

The user is a ServiceAccount in a fresh namespace with a Role on pods and pods/binding there,
authenticated by a token alone (never admin's certificate)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from integration import cluster, rbac
from tessellate.kube import ApiError, KubeClient

pytestmark = pytest.mark.integration

ASSIGNMENT = "tessellate.dev/assignment"
ALLOCATED = "tessellate.dev/allocated"
USER = "pod-author"
# No scheduler in any test runs under this name: the pods made here stay unbound until a test binds them.
NOBODYS_SCHEDULER = "tessellate-admission-test"
TAINT = {"key": "tessellate.dev/admission-test", "value": "true", "effect": "NoSchedule"}
"""Keeps other tests' pods off the node made here."""
FORGED = json.dumps({"gpus": [{"index": 0, "milli": 1000}]})


@dataclass
class World:
    """An ordinary user (`api`) in namespace `ns`, a node to bind to, and the pods made so far."""

    api: KubeClient
    ns: str
    node: str
    kubeconfig: str
    pods: list[str] = field(default_factory=list)

    def path(self, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self.ns}/pods"
        return f"{base}/{name}" if name else base

    def pod(self, name: str | None = None, **metadata: Any) -> dict[str, Any]:
        name = name or cluster.unique("p")
        body = cluster.pod(name, self.ns, limits={"nvidia.com/gpu": "1"}, scheduler=NOBODYS_SCHEDULER)
        body["metadata"].update(metadata)
        return body

    def create(self, api: KubeClient, body: dict[str, Any]) -> str:
        """Create a pod (remembered for clean-up even when the call is expected to fail)."""
        name = body["metadata"]["name"]
        self.pods.append(name)
        api.post(self.path(), body)
        return name

    def ordinary_pod(self) -> str:
        """A fresh unbound pod without our annotations, made by the user."""
        return self.create(self.api, self.pod())


def binding(name: str, node: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


def refused(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def user_role(ns: str) -> list[dict[str, Any]]:
    """A Role that lets its holder create, change and bind pods in `ns`, and a binding to USER."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": USER, "namespace": ns},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "update", "patch", "get"]},
                {"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": USER, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER},
            "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": ns}],
        },
    ]


def wait_until_in_force(world: World) -> None:
    """Policies take effect a moment after they are created: retry a forbidden create until refused."""
    deadline = time.monotonic() + 30
    while True:
        try:
            world.create(world.api, world.pod(annotations={ASSIGNMENT: FORGED}))
        except ApiError as exc:
            assert exc.status == 403, exc
            assert "written only by the tessellate scheduler" in exc.message, exc.message
            return
        assert time.monotonic() < deadline, "the admission policy never took effect"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(
    control_plane: cluster.ControlPlane, admin: KubeClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    rbac.apply_manifests(control_plane)
    ns = cluster.make_namespace(admin, "adm")
    admin.post(
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": USER}},
    )
    for obj in user_role(ns):
        kind = "roles" if obj["kind"] == "Role" else "rolebindings"
        admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{kind}", obj)
    token = rbac.service_account_token(control_plane, name=USER, namespace=ns)
    kubeconfig = rbac.token_kubeconfig(
        control_plane, tmp_path_factory.mktemp("user") / f"{USER}.kubeconfig", USER, token, ns
    )
    node, status = cluster.gpu_node(cluster.unique("adm-node"), gpus=2, taints=[TAINT])
    cluster.create_node(admin, node, status)
    api = KubeClient.from_kubeconfig(kubeconfig)
    w = World(api=api, ns=ns, node=node["metadata"]["name"], kubeconfig=kubeconfig)
    try:
        wait_until_in_force(w)
        yield w
    finally:
        api.close()
        # Leave no bound pod or node that another test's scheduler could count.
        for name in w.pods:
            force_delete(admin, w.path(name))
        force_delete(admin, f"/api/v1/nodes/{w.node}")


def force_delete(api: KubeClient, path: str) -> None:
    try:
        api.delete(path, {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    except ApiError as exc:
        if not exc.is_not_found:
            raise


def test_the_user_is_an_ordinary_service_account_with_rights_on_pods(
    control_plane: cluster.ControlPlane, world: World
) -> None:
    whoami = control_plane.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=world.kubeconfig
    )
    assert whoami.stdout == f"system:serviceaccount:{world.ns}:{USER}"
    for args in (("create", "pods"), ("patch", "pods"), ("create", "pods", "--subresource=binding")):
        result = control_plane.kubectl("auth", "can-i", *args, "-n", world.ns, kubeconfig=world.kubeconfig)
        assert result.stdout.strip() == "yes", args  # so each refusal below is the policy's, not RBAC's


# ---------------------------------------------------------------------------------------------
# Creating pods


def test_creating_a_pod_with_an_assignment_is_denied(world: World) -> None:
    error = refused(lambda: world.create(world.api, world.pod(annotations={ASSIGNMENT: FORGED})))
    assert error.status == 403
    assert error.message.endswith(
        "tessellate.dev/assignment is written only by the tessellate scheduler (with the binding); "
        "remove it from the pod"
    ), error.message


def test_creating_a_bound_pod_of_another_scheduler_with_an_assignment_is_denied(world: World) -> None:
    body = world.pod(annotations={ASSIGNMENT: FORGED})
    body["spec"].update(nodeName=world.node, schedulerName="default-scheduler")
    error = refused(lambda: world.create(world.api, body))
    assert "written only by the tessellate scheduler" in error.message
    assert "remove it from the pod" in error.message


def test_creating_a_pod_with_an_empty_assignment_is_denied(world: World) -> None:
    error = refused(lambda: world.create(world.api, world.pod(annotations={ASSIGNMENT: ""})))
    assert "written only by the tessellate scheduler" in error.message


def test_creating_a_pod_with_allocated_is_denied(world: World) -> None:
    error = refused(
        lambda: world.create(world.api, world.pod(annotations={ALLOCATED: json.dumps({"main": ["GPU-x"]})}))
    )
    assert "tessellate.dev/allocated is written only by the tessellate node agent" in error.message
    assert "remove it from the pod" in error.message


def test_creating_ordinary_pods_is_allowed(world: World) -> None:
    name = world.create(world.api, world.pod(labels={"team": "a"}, annotations={"example.com/owner": "me"}))
    assert world.api.get(world.path(name))["metadata"]["annotations"] == {"example.com/owner": "me"}
    bound = world.pod()
    bound["spec"]["nodeName"] = world.node  # placing one's own pod by hand is not ours to forbid
    assert world.api.post(world.path(), bound)["spec"]["nodeName"] == world.node
    world.pods.append(bound["metadata"]["name"])


# ---------------------------------------------------------------------------------------------
# Changing pods


def test_annotating_a_pod_with_an_assignment_is_denied(world: World) -> None:
    path = world.path(world.ordinary_pod())
    error = refused(lambda: world.api.patch(path, {"metadata": {"annotations": {ASSIGNMENT: FORGED}}}))
    assert "written only by the tessellate scheduler" in error.message
    assert "leave it as it is" in error.message
    # Through a full update (PUT) too.
    pod = world.api.get(path)
    pod["metadata"].setdefault("annotations", {})[ASSIGNMENT] = FORGED
    refused(lambda: world.api.put(path, pod))
    assert ASSIGNMENT not in (world.api.get(path)["metadata"].get("annotations") or {})


def test_kubectl_annotate_of_an_assignment_is_denied(
    control_plane: cluster.ControlPlane, world: World
) -> None:
    name = world.ordinary_pod()
    for extra in ((), ("--overwrite",)):
        result = control_plane.kubectl(
            "annotate", "pod", name, "-n", world.ns, *extra, f"{ASSIGNMENT}={FORGED}",
            kubeconfig=world.kubeconfig, check=False,
        )  # fmt: skip
        assert result.returncode != 0, result.stdout
        assert "written only by the tessellate scheduler" in result.stderr, result.stderr


def test_other_annotations_and_labels_are_allowed(world: World) -> None:
    path = world.path(world.ordinary_pod())
    world.api.patch(path, {"metadata": {"annotations": {"example.com/note": "hi"}, "labels": {"x": "y"}}})
    pod = world.api.get(path)
    assert pod["metadata"]["annotations"]["example.com/note"] == "hi"
    assert pod["metadata"]["labels"]["x"] == "y"
    world.api.put(path, pod)  # a full update that leaves our annotations alone


def test_writing_allocated_is_denied(world: World) -> None:
    path = world.path(world.ordinary_pod())
    error = refused(lambda: world.api.patch(path, {"metadata": {"annotations": {ALLOCATED: "{}"}}}))
    assert "tessellate.dev/allocated is written only by the tessellate node agent" in error.message
    assert "leave it as it is" in error.message


# ---------------------------------------------------------------------------------------------
# Binding


def test_a_binding_with_an_assignment_is_denied_and_one_without_is_allowed(world: World) -> None:
    name = world.ordinary_pod()
    error = refused(
        lambda: world.api.post(f"{world.path(name)}/binding", binding(name, world.node, {ASSIGNMENT: FORGED}))
    )
    assert "written only by the tessellate scheduler (with the binding); bind without it" in error.message
    assert not world.api.get(world.path(name))["spec"].get("nodeName")
    world.api.post(f"{world.path(name)}/binding", binding(name, world.node, {"example.com/why": "test"}))
    pod = world.api.get(world.path(name))
    assert pod["spec"]["nodeName"] == world.node
    assert ASSIGNMENT not in pod["metadata"]["annotations"]


def test_a_binding_with_allocated_is_denied(world: World) -> None:
    name = world.ordinary_pod()
    error = refused(
        lambda: world.api.post(f"{world.path(name)}/binding", binding(name, world.node, {ALLOCATED: "{}"}))
    )
    assert "tessellate.dev/allocated is written only by the tessellate node agent" in error.message


# ---------------------------------------------------------------------------------------------
# The scheduler, and what it wrote


@pytest.fixture(scope="module")
def assigned(world: World, scheduler_api: KubeClient) -> str:
    """A pod of the user's, bound by the scheduler's ServiceAccount with its assignment."""
    name = world.ordinary_pod()
    scheduler_api.post(f"{world.path(name)}/binding", binding(name, world.node, {ASSIGNMENT: FORGED}))
    return name


def test_the_scheduler_binds_with_an_assignment(world: World, assigned: str) -> None:
    pod = world.api.get(world.path(assigned))
    assert pod["spec"]["nodeName"] == world.node
    assert pod["metadata"]["annotations"][ASSIGNMENT] == FORGED


def test_the_scheduler_may_not_write_allocated(world: World, scheduler_api: KubeClient) -> None:
    name = world.ordinary_pod()
    error = refused(
        lambda: scheduler_api.post(
            f"{world.path(name)}/binding", binding(name, world.node, {ASSIGNMENT: FORGED, ALLOCATED: "{}"})
        )
    )
    assert "tessellate.dev/allocated is written only by the tessellate node agent" in error.message


def test_the_user_may_not_change_or_remove_the_schedulers_assignment(world: World, assigned: str) -> None:
    path = world.path(assigned)
    other = json.dumps({"gpus": [{"index": 1, "milli": 1000}]})
    for change in ({ASSIGNMENT: other}, {ASSIGNMENT: None}):
        error = refused(lambda a=change: world.api.patch(path, {"metadata": {"annotations": a}}))
        assert "written only by the tessellate scheduler" in error.message
    assert world.api.get(path)["metadata"]["annotations"][ASSIGNMENT] == FORGED


def test_the_user_may_still_change_a_bound_pod_that_has_an_assignment(world: World, assigned: str) -> None:
    path = world.path(assigned)
    world.api.patch(path, {"metadata": {"labels": {"stage": "two"}, "annotations": {"example.com/n": "1"}}})
    pod = world.api.get(path)
    assert pod["metadata"]["labels"]["stage"] == "two"
    assert pod["metadata"]["annotations"][ASSIGNMENT] == FORGED


def test_status_updates_that_keep_the_annotations_are_allowed_and_others_denied(
    world: World, admin: KubeClient, assigned: str
) -> None:
    """The kubelet's writes go through pods/status; so could a forged annotation."""
    status = f"{world.path(assigned)}/status"
    admin.patch(status, {"status": {"phase": "Running"}})  # what a kubelet does (as admin: no kubelet runs)
    assert admin.get(world.path(assigned))["status"]["phase"] == "Running"
    error = refused(lambda: admin.patch(status, {"metadata": {"annotations": {ASSIGNMENT: "{}"}}}))
    assert "written only by the tessellate scheduler" in error.message


def test_cluster_admins_are_not_exempt(world: World, admin: KubeClient, assigned: str) -> None:
    error = refused(
        lambda: admin.patch(world.path(assigned), {"metadata": {"annotations": {ASSIGNMENT: None}}})
    )
    assert "written only by the tessellate scheduler" in error.message
    error = refused(lambda: world.create(admin, world.pod(annotations={ASSIGNMENT: FORGED})))
    assert "remove it from the pod" in error.message
