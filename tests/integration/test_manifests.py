"""manifests/ against a real API server: it validates, its config loads, and its RBAC
lets the scheduler's ServiceAccount do exactly what the scheduler does, and no more."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tessellate.scheduler.config import load_config
from tessellate.scheduler.gang import pod_group
from tessellate.scheduler.plugins import DEFAULT_FILTERS

from integration import cluster, rbac
from tessellate.kube import ApiError, KubeClient

MANIFESTS = rbac.MANIFESTS
EXAMPLES = MANIFESTS / "examples"
SYSTEM_NS = rbac.NAMESPACE
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases"
# Pods made here must not be picked up by a Tessellate scheduler that another
# test in this worker runs against the same control plane.
NOBODYS_SCHEDULER = "tessellate-manifest-test"


def micro_now() -> str:
    """MicroTime: RFC 3339 with exactly six fractional digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render(cp: cluster.ControlPlane, path: Path) -> list[dict[str, Any]]:
    out = cp.kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def force_delete(api: KubeClient, path: str) -> None:
    try:
        api.delete(path, {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    except ApiError as exc:
        if not exc.is_not_found:
            raise


# ---------------------------------------------------------------------------------------------
# Rendered manifests


@pytest.fixture(scope="module")
def base(control_plane: cluster.ControlPlane) -> list[dict[str, Any]]:
    return render(control_plane, MANIFESTS)


@pytest.fixture(scope="module")
def deployment(base: list[dict[str, Any]]) -> dict[str, Any]:
    return one(base, "Deployment", "tessellate-scheduler")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def config_path(base: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ConfigMap's config.yaml, written where load_config can read it."""
    data = one(base, "ConfigMap", "tessellate-scheduler-config")["data"]
    assert set(data) == {"config.yaml"}
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(data["config.yaml"])
    return path


def test_base_contains_every_component_in_the_tessellate_namespace(base: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    assert kinds == sorted(
        [
            ("Namespace", SYSTEM_NS),
            ("ServiceAccount", "tessellate-scheduler"),
            ("ClusterRole", "tessellate-scheduler"),
            ("ClusterRoleBinding", "tessellate-scheduler"),
            ("Role", "tessellate-scheduler-leader-election"),
            ("RoleBinding", "tessellate-scheduler-leader-election"),
            ("ConfigMap", "tessellate-scheduler-config"),
            ("Deployment", "tessellate-scheduler"),
            ("Service", "tessellate-scheduler-metrics"),
            ("ValidatingAdmissionPolicy", "tessellate-pod-gpu-annotations"),
            ("ValidatingAdmissionPolicyBinding", "tessellate-pod-gpu-annotations"),
            ("CustomResourceDefinition", "queues.tessellate.dev"),
        ]
    )
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    # Cluster-scoped too, but kustomize v5.7 stamps the namespace on them (kustomize#6051);
    # the API server ignores it.
    stamped = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for doc in base:
        expected = None if doc["kind"] in cluster_scoped else SYSTEM_NS
        if doc["kind"] in stamped:
            assert doc["metadata"].get("namespace") in (None, SYSTEM_NS), doc["metadata"]
            continue
        assert doc["metadata"].get("namespace") == expected, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tessellate"


def test_configmap_config_loads_with_leader_election_on(config_path: Path) -> None:
    config = load_config(config_path)
    assert config.filters == list(DEFAULT_FILTERS)  # a plugin left out of the file is off in the cluster
    assert config.schedulerName == "tessellate"
    assert config.leaderElection.leaderElect is True
    assert config.leaderElection.resourceNamespace == SYSTEM_NS


def test_configmap_config_is_the_config_yaml_in_the_repo(config_path: Path) -> None:
    assert config_path.read_text() == (MANIFESTS / "config.yaml").read_text()


def test_lease_role_covers_the_lease_the_config_names(base: list[dict[str, Any]], config_path: Path) -> None:
    le = load_config(config_path).leaderElection
    role = one(base, "Role")
    assert role["metadata"]["namespace"] == le.resourceNamespace
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [le.resourceName] for r in named)
    assert {v for r in named for v in r["verbs"]} == {"get", "update"}


def test_probes_service_and_container_use_the_configured_port(
    base: list[dict[str, Any]], container: dict[str, Any], config_path: Path
) -> None:
    port = int(load_config(config_path).bindAddress.rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", port)
        assert container[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"
    service = one(base, "Service", "tessellate-scheduler-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_metrics_service_selects_the_scheduler_pods(
    base: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    selector = one(base, "Service", "tessellate-scheduler-metrics")["spec"]["selector"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_roles_have_no_wildcards(base: list[dict[str, Any]]) -> None:
    for role in (one(base, "ClusterRole"), one(base, "Role")):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), (role["kind"], rule)


def test_cluster_role_grants_exactly_what_the_scheduler_uses(base: list[dict[str, Any]]) -> None:
    role = one(base, "ClusterRole", "tessellate-scheduler")
    assert not any(rule.get("resourceNames") for rule in role["rules"])
    assert rule_triples(role["rules"]) == {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "pods", "delete"),  # preemption
        ("", "pods/binding", "create"),
        ("", "pods/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("tessellate.dev", "queues", "get"),  # tenant queues: their specs
        ("tessellate.dev", "queues", "list"),
        ("tessellate.dev", "queues", "watch"),
        ("tessellate.dev", "queues/status", "patch"),  # ...and the leader's status
    }


def test_bindings_grant_the_roles_to_the_deployments_service_account(
    base: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    one(base, "ServiceAccount", account)
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(base, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": one(base, role_kind)["metadata"]["name"],
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": SYSTEM_NS}]


def test_deployment_runs_two_replicas_as_non_root_with_a_read_only_root(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("runAsNonRoot", True) is True
    assert sc.get("runAsUser", 65532) == 65532
    assert sc.get("privileged", False) is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_deployment_probes_health_and_readiness(container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_deployment_sets_resources_image_and_downward_api_env(container: dict[str, Any]) -> None:
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert container["image"] == "tessellate:0.1.0"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env["POD_NAME"] == "metadata.name"
    assert env["POD_NAMESPACE"] == "metadata.namespace"


def test_deployment_reads_the_configmap_config(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    args = container["args"]
    config_file = Path(args[args.index("--config") + 1])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_file.parent)]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True
    assert volumes[mounts[0]["name"]]["configMap"]["name"] == "tessellate-scheduler-config"
    assert config_file == Path("/etc/tessellate/config.yaml")


def test_overlay_overrides_image_and_policy_as_the_readme_says(
    control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    config = (MANIFESTS / "config.yaml").read_text().replace("\npolicy: fgd\n", "\npolicy: bestfit\n")
    assert "policy: bestfit" in config
    (overlay / "config.yaml").write_text(config)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, overlay)],
                "images": [{"name": "tessellate", "newName": "registry.example.com/t", "newTag": "9.9"}],
                "configMapGenerator": [
                    {
                        "name": "tessellate-scheduler-config",
                        "namespace": SYSTEM_NS,
                        "behavior": "replace",
                        "files": ["config.yaml"],
                    }
                ],
            }
        )
    )
    docs = render(control_plane, overlay)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/t:9.9"
    path = tmp_path / "rendered-config.yaml"
    path.write_text(one(docs, "ConfigMap", "tessellate-scheduler-config")["data"]["config.yaml"])
    assert load_config(path).policy == "bestfit"


# ---------------------------------------------------------------------------------------------
# Examples


def gpu_shape(pod: dict[str, Any]) -> str:
    limits: dict[str, Any] = {}
    for c in pod["spec"]["containers"]:
        limits.update(c.get("resources", {}).get("limits", {}))
    if "nvidia.com/gpu" in limits:
        return f"gpu={limits['nvidia.com/gpu']}"
    if "tessellate.dev/gpu-milli" in limits:
        return f"milli={limits['tessellate.dev/gpu-milli']},mib={limits.get('tessellate.dev/gpu-memory-mib')}"
    mig = [k for k in limits if k.startswith("nvidia.com/mig-")]
    return f"{mig[0]}={limits[mig[0]]}" if mig else "none"


def test_examples_ask_tessellate_for_each_kind_of_gpu(control_plane: cluster.ControlPlane) -> None:
    docs = render(control_plane, EXAMPLES)
    assert sorted(d["kind"] for d in docs) == ["Job"] + ["Pod"] * 5
    assert all("namespace" not in d["metadata"] for d in docs)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    pods = [d for d in docs if d["kind"] == "Pod"] + [job["spec"]["template"]]
    assert all(p["spec"]["schedulerName"] == "tessellate" for p in pods)
    shapes = sorted(gpu_shape(p) for p in pods)
    expected = ["gpu=1", "gpu=4", "milli=250,mib=10240", "nvidia.com/mig-3g.40gb=1", "gpu=1", "gpu=8"]
    assert shapes == sorted(expected)
    group = pod_group({"metadata": {**job["spec"]["template"]["metadata"], "namespace": "team"}})
    assert group is not None and group.min_available == job["spec"]["parallelism"] == 2
    (by_model,) = [p for p in pods if "affinity" in p["spec"]]
    terms = by_model["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]}
    assert keys == {"nvidia.com/gpu.product"}


# ---------------------------------------------------------------------------------------------
# Server-side validation


def test_base_passes_server_side_dry_run_without_pod_security_warnings(
    control_plane: cluster.ControlPlane,
) -> None:
    # A dry run creates nothing, so the namespaced objects would fail on a missing
    # namespace; create the Namespace for real first, as `apply -k` would.
    control_plane.kubectl("apply", "-f", str(MANIFESTS / "namespace.yaml"))
    result = control_plane.kubectl("apply", "-k", str(MANIFESTS), "--dry-run=server")
    assert "(server dry run)" in result.stdout
    assert "deployment.apps/tessellate-scheduler" in result.stdout
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/tessellate-pod-gpu-annotations" in (
        result.stdout
    )
    # The namespace warns on pod templates that break the "restricted" standard.
    assert "Warning" not in result.stderr, result.stderr


def test_examples_pass_server_side_dry_run(control_plane: cluster.ControlPlane, namespace: str) -> None:
    result = control_plane.kubectl("apply", "-k", str(EXAMPLES), "-n", namespace, "--dry-run=server")
    assert result.stdout.count("(server dry run)") == 6, result.stdout


# ---------------------------------------------------------------------------------------------
# RBAC, as the scheduler's ServiceAccount


@pytest.fixture(scope="module")
def sa_kubeconfig(control_plane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> str:
    return rbac.scheduler_kubeconfig(control_plane, tmp_path_factory.mktemp("sa"))


@pytest.fixture(scope="module")
def sa(sa_kubeconfig: str) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(sa_kubeconfig)
    yield client
    client.close()


@dataclass
class Targets:
    """Objects (made as admin) that the ServiceAccount acts on."""

    ns: str
    node: str
    secret: str
    other_lease: str
    pods: list[str]

    def pod(self, admin: KubeClient) -> str:
        """A fresh unbound pod that no running scheduler will pick up."""
        name = cluster.unique("rbac-pod")
        admin.post(
            f"/api/v1/namespaces/{self.ns}/pods",
            cluster.pod(name, self.ns, limits={"nvidia.com/gpu": "1"}, scheduler=NOBODYS_SCHEDULER),
        )
        self.pods.append(name)
        return name


@pytest.fixture(scope="module")
def targets(admin: KubeClient, sa_kubeconfig: str) -> Iterator[Targets]:
    ns = cluster.make_namespace(admin, "rbac")
    node, status = cluster.gpu_node(cluster.unique("rbac-node"), gpus=2)
    cluster.create_node(admin, node, status)
    secret = cluster.unique("secret")
    admin.post(
        f"/api/v1/namespaces/{SYSTEM_NS}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": {"k": "v"}},
    )
    other = cluster.unique("other-lease")
    admin.post(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": other}})
    t = Targets(ns=ns, node=node["metadata"]["name"], secret=secret, other_lease=other, pods=[])
    yield t
    # Leave nothing that another test's scheduler could count: pods, the node, the Lease.
    for name in t.pods:
        force_delete(admin, f"/api/v1/namespaces/{ns}/pods/{name}")
    force_delete(admin, f"/api/v1/nodes/{t.node}")
    force_delete(admin, f"/api/v1/namespaces/{SYSTEM_NS}/secrets/{secret}")
    force_delete(admin, f"{LEASES}/{other}")


def can_i(cp: cluster.ControlPlane, kubeconfig: str, *args: str) -> str:
    result = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {result.stdout}{result.stderr}"
    assert (result.returncode == 0) == (answer == "yes")
    return answer


def test_token_kubeconfig_authenticates_as_the_service_account(
    control_plane: cluster.ControlPlane, sa_kubeconfig: str
) -> None:
    config = yaml.safe_load(Path(sa_kubeconfig).read_text())
    (user,) = config["users"]
    assert set(user["user"]) == {"token"}, "no client certificate: it would authenticate as admin"
    whoami = control_plane.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=sa_kubeconfig
    )
    assert whoami.stdout == rbac.USERNAME


def test_token_kubeconfig_can_be_made_again_in_the_same_control_plane(
    control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    again = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    assert can_i(control_plane, again, "list", "pods", "--all-namespaces") == "yes"


ALLOWED = [
    ("get", "pods", "-n", "default"),
    ("list", "pods", "--all-namespaces"),
    ("watch", "pods", "--all-namespaces"),
    ("get", "nodes"),
    ("list", "nodes"),
    ("watch", "nodes"),
    ("create", "pods", "--subresource=binding", "-n", "default"),
    ("patch", "pods", "--subresource=status", "-n", "default"),
    ("delete", "pods", "-n", "default"),  # preemption
    ("create", "events.events.k8s.io", "-n", "default"),
    ("patch", "events.events.k8s.io", "-n", "default"),
    ("create", "events", "-n", "default"),
    ("patch", "events", "-n", "default"),
    ("create", "leases.coordination.k8s.io", "-n", SYSTEM_NS),
    ("get", "leases.coordination.k8s.io/tessellate-scheduler", "-n", SYSTEM_NS),
    ("update", "leases.coordination.k8s.io/tessellate-scheduler", "-n", SYSTEM_NS),
]

DENIED = [
    ("create", "pods", "-n", "default"),
    ("update", "pods", "-n", "default"),
    ("patch", "pods", "-n", "default"),
    ("update", "pods", "--subresource=status", "-n", "default"),
    ("create", "pods", "--subresource=eviction", "-n", "default"),
    ("patch", "nodes"),
    ("update", "nodes"),
    ("delete", "nodes"),
    ("patch", "nodes", "--subresource=status"),
    ("get", "secrets", "-n", SYSTEM_NS),
    ("list", "secrets", "--all-namespaces"),
    ("get", "configmaps", "-n", SYSTEM_NS),
    ("delete", "events.events.k8s.io", "-n", "default"),
    ("list", "leases.coordination.k8s.io", "-n", SYSTEM_NS),
    ("get", "leases.coordination.k8s.io/kube-scheduler", "-n", SYSTEM_NS),
    ("update", "leases.coordination.k8s.io/kube-scheduler", "-n", SYSTEM_NS),
    ("delete", "leases.coordination.k8s.io/tessellate-scheduler", "-n", SYSTEM_NS),
    ("create", "leases.coordination.k8s.io", "-n", "kube-system"),
    ("update", "leases.coordination.k8s.io/tessellate-scheduler", "-n", "kube-system"),
    ("*", "*", "--all-namespaces"),
]


@pytest.mark.parametrize("args", ALLOWED, ids=[" ".join(a) for a in ALLOWED])
def test_service_account_is_allowed(
    control_plane: cluster.ControlPlane, sa_kubeconfig: str, args: tuple[str, ...]
) -> None:
    assert can_i(control_plane, sa_kubeconfig, *args) == "yes"


@pytest.mark.parametrize("args", DENIED, ids=[" ".join(a) for a in DENIED])
def test_service_account_is_denied(
    control_plane: cluster.ControlPlane, sa_kubeconfig: str, args: tuple[str, ...]
) -> None:
    assert can_i(control_plane, sa_kubeconfig, *args) == "no"


def test_service_account_reads_pods_and_nodes_cluster_wide(
    sa: KubeClient, admin: KubeClient, targets: Targets
) -> None:
    name = targets.pod(admin)
    pods, rv = sa.list_all("/api/v1/pods")
    assert (targets.ns, name) in {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
    assert sa.get(f"/api/v1/namespaces/{targets.ns}/pods/{name}")["metadata"]["name"] == name
    nodes, _ = sa.list_all("/api/v1/nodes")
    assert targets.node in {n["metadata"]["name"] for n in nodes}
    assert sa.get(f"/api/v1/nodes/{targets.node}")["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    # A watch opens (and ends when its server-side timeout runs out).
    for _event in sa.watch("/api/v1/pods", rv, timeout_seconds=1):
        pass
    for _event in sa.watch("/api/v1/nodes", rv, timeout_seconds=1):
        pass


def test_service_account_binds_a_pod_with_its_assignment(
    sa: KubeClient, admin: KubeClient, targets: Targets
) -> None:
    name = targets.pod(admin)
    assignment = '{"gpus": [{"index": 1, "milli": 1000}]}'
    sa.post(
        f"/api/v1/namespaces/{targets.ns}/pods/{name}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "annotations": {"tessellate.dev/assignment": assignment}},
            "target": {"apiVersion": "v1", "kind": "Node", "name": targets.node},
        },
    )
    pod = admin.get(f"/api/v1/namespaces/{targets.ns}/pods/{name}")
    assert pod["spec"]["nodeName"] == targets.node
    assert pod["metadata"]["annotations"]["tessellate.dev/assignment"] == assignment


def test_service_account_preempts_a_pod_only_by_its_uid(
    sa: KubeClient, admin: KubeClient, targets: Targets
) -> None:
    name = targets.pod(admin)
    path = f"/api/v1/namespaces/{targets.ns}/pods/{name}"
    uid = admin.get(path)["metadata"]["uid"]
    options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
    with pytest.raises(ApiError) as stale:
        sa.delete(path, {**options, "preconditions": {"uid": "not-" + uid}})
    assert stale.value.is_conflict  # a pod recreated under the same name is not the victim
    sa.delete(path, {**options, "preconditions": {"uid": uid}})
    with pytest.raises(ApiError) as gone:
        admin.get(path)
    assert gone.value.is_not_found


def test_service_account_marks_a_pod_unschedulable(
    sa: KubeClient, admin: KubeClient, targets: Targets
) -> None:
    name = targets.pod(admin)
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    sa.patch(
        f"/api/v1/namespaces/{targets.ns}/pods/{name}/status",
        {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                ]
            }
        },
        kind="strategic",
    )
    pod = admin.get(f"/api/v1/namespaces/{targets.ns}/pods/{name}")
    (condition,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert condition["status"] == "False"
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == message


def test_service_account_creates_and_patches_events(
    sa: KubeClient, admin: KubeClient, targets: Targets
) -> None:
    name = targets.pod(admin)
    uid = admin.get(f"/api/v1/namespaces/{targets.ns}/pods/{name}")["metadata"]["uid"]
    regarding = {"apiVersion": "v1", "kind": "Pod", "namespace": targets.ns, "name": name, "uid": uid}
    path = f"/apis/events.k8s.io/v1/namespaces/{targets.ns}/events"
    event = sa.post(
        path,
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": cluster.unique(name)},
            "eventTime": micro_now(),
            "reportingController": "tessellate",
            "reportingInstance": "tessellate-scheduler-0",
            "action": "Scheduling",
            "reason": "FailedScheduling",
            "type": "Warning",
            "note": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            "regarding": regarding,
        },
    )
    patched = sa.patch(
        f"{path}/{event['metadata']['name']}", {"series": {"count": 2, "lastObservedTime": micro_now()}}
    )
    assert patched["series"]["count"] == 2

    core = f"/api/v1/namespaces/{targets.ns}/events"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    legacy = sa.post(
        core,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": cluster.unique(name)},
            "involvedObject": regarding,
            "reason": "FailedScheduling",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            "type": "Warning",
            "source": {"component": "tessellate"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )
    assert sa.patch(f"{core}/{legacy['metadata']['name']}", {"count": 2})["count"] == 2
    reasons = [e["reason"] for e in cluster.events_for(admin, targets.ns, name)]
    assert reasons == ["FailedScheduling", "FailedScheduling"]


def lease(name: str, holder: str) -> dict[str, Any]:
    now = micro_now()
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }


def test_service_account_creates_reads_and_renews_its_lease(sa: KubeClient, admin: KubeClient) -> None:
    path = f"{LEASES}/tessellate-scheduler"
    try:
        sa.get(path)
    except ApiError as exc:
        assert exc.is_not_found, exc
    else:
        # A scheduler started by another test in this worker may hold it: do not take it
        # over. A PUT of the object as read changes nothing but is authorized like a renewal.
        for _ in range(5):
            current = sa.get(path)
            try:
                assert sa.put(path, current)["spec"] == current["spec"]
                return
            except ApiError as exc:
                if not exc.is_conflict:
                    raise
        pytest.fail("the Lease kept changing under a no-op update")
    holder = cluster.unique("candidate")
    try:
        sa.post(LEASES, lease("tessellate-scheduler", holder))
        current = sa.get(path)
        assert current["spec"]["holderIdentity"] == holder
        renewed = micro_now()
        current["spec"]["renewTime"] = renewed
        assert sa.put(path, current)["spec"]["renewTime"] == renewed
    finally:
        # Leave no held Lease behind: a scheduler started by a later test would wait for it.
        force_delete(admin, path)


def forbidden_requests(t: Targets, pod: str) -> dict[str, Callable[[KubeClient], Any]]:
    lease_body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"}}
    return {
        "create a pod": lambda api: api.post(
            f"/api/v1/namespaces/{t.ns}/pods",
            cluster.pod(cluster.unique("p"), t.ns, scheduler=NOBODYS_SCHEDULER),
        ),
        "patch a pod": lambda api: api.patch(
            f"/api/v1/namespaces/{t.ns}/pods/{pod}", {"metadata": {"labels": {"x": "y"}}}
        ),
        "patch a node": lambda api: api.patch(
            f"/api/v1/nodes/{t.node}", {"metadata": {"labels": {"x": "y"}}}
        ),
        "patch node status": lambda api: api.patch(
            f"/api/v1/nodes/{t.node}/status", {"status": {"allocatable": {"nvidia.com/gpu": "9"}}}
        ),
        "get a secret": lambda api: api.get(f"/api/v1/namespaces/{SYSTEM_NS}/secrets/{t.secret}"),
        "list secrets": lambda api: api.get("/api/v1/secrets"),
        "get another lease": lambda api: api.get(f"{LEASES}/{t.other_lease}"),
        "update another lease": lambda api: api.put(
            f"{LEASES}/{t.other_lease}", dict(lease_body, metadata={"name": t.other_lease})
        ),
        "create a lease in another namespace": lambda api: api.post(
            f"/apis/coordination.k8s.io/v1/namespaces/{t.ns}/leases", lease_body
        ),
        "delete its own lease": lambda api: api.delete(f"{LEASES}/tessellate-scheduler"),
    }


FORBIDDEN = list(forbidden_requests(Targets("", "", "", "", []), ""))


@pytest.mark.parametrize("what", FORBIDDEN)
def test_service_account_is_forbidden_to(
    sa: KubeClient, admin: KubeClient, targets: Targets, what: str
) -> None:
    request = forbidden_requests(targets, targets.pod(admin))[what]
    with pytest.raises(ApiError) as err:
        request(sa)
    assert err.value.status == 403, err.value
