"""The Helm chart (charts/tessellate/) with a real helm (scripts/helm builds it once).

`helm lint`; `helm template` with the default values against the kustomize base (the same
objects, RBAC rules, config.yaml, security contexts, admission policies), and for the agent's
modes against manifests/agent/, agent-full/ and mig-dynamic/; the schema's and the
templates' refusals of bad values; and `helm install`, `upgrade` and `uninstall` on the test
API server, with the RBAC the installed objects grant checked by SubjectAccessReviews.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from tessellate.placement.policies import POLICIES
from tessellate.scheduler.config import SchedulerConfig, load_config
from tessellate.scheduler.plugins import FILTER_PLUGINS

from integration import cluster, rbac
from tessellate.kube import ApiError, KubeClient

pytestmark = pytest.mark.integration

REPO = cluster.REPO
MANIFESTS = REPO / "manifests"
CHART = REPO / "charts" / "tessellate"
HELM_SCRIPT = REPO / "scripts" / "helm"

Doc = dict[str, Any]

# Labels and annotations that say who rendered an object, not what it is.
RENDERER_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
}
RENDERER_ANNOTATIONS = {"checksum/config"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
FULL_AGENT = ["agent.mode=full", "migDynamic.enabled=true", "agent.mps.enabled=true"]
OWN_AGENT_NAMESPACE = ["agent.namespace=tessellate-agent", "agent.createNamespace=true"]


# ---------------------------------------------------------------------------------------------
# helm


@dataclass(frozen=True)
class Helm:
    """The helm binary scripts/helm built, with its config, cache and data in a temp dir."""

    path: str
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.path, *args], env=self.env, text=True, capture_output=True, timeout=300, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """scripts/helm path: builds helm on first use (~3 min) and caches it in ~/.cache/tessellate."""
    try:
        built = subprocess.run(
            [str(HELM_SCRIPT), "path"], text=True, capture_output=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/helm path did not finish in 30 min (building helm with Go)")
    if built.returncode != 0:
        pytest.fail(
            "scripts/helm could not build helm; it needs Go (>= 1.24, or GO=/path/to/go) and the Go "
            f"module proxy once. Run `scripts/helm build` to see why:\n{built.stderr[-3000:]}"
        )
    path = built.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), f"scripts/helm path printed {path!r}, which is not executable"
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    env.pop("KUBECONFIG", None)  # every command against a cluster names the test's kubeconfig
    return Helm(path, env)


def set_args(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def template(
    helm: Helm,
    values: list[str] | None = None,
    *,
    release: str = "tessellate",
    namespace: str = "tessellate-system",
    extra: tuple[str, ...] = (),
) -> list[Doc]:
    """`helm template` with --set values, parsed."""
    out = helm("template", release, str(CHART), "-n", namespace, *set_args(values or []), *extra)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def kustomize(cp: cluster.ControlPlane, *paths: str) -> list[Doc]:
    docs: list[Doc] = []
    for path in paths:
        out = cp.kubectl("kustomize", str(MANIFESTS / path)).stdout
        docs += [doc for doc in yaml.safe_load_all(out) if doc]
    return docs


def key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def by_key(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    out = {key(d): d for d in docs}
    assert len(out) == len(docs), f"duplicate objects in {sorted(key(d) for d in docs)}"
    return out


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config_of(docs: list[Doc]) -> Doc:
    data = one(docs, "ConfigMap")["data"]
    assert set(data) == {"config.yaml"}
    return yaml.safe_load(data["config.yaml"])


def _normalize(value: Any, field: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if field in ("labels", "matchLabels", "selector") and k in RENDERER_LABELS:
                continue
            if field == "annotations" and k in RENDERER_ANNOTATIONS:
                continue
            if k in ("expression", "messageExpression") and isinstance(v, str):
                # CEL ignores the line breaks that folded YAML scalars re-emit differently.
                v = " ".join(v.split())
            out[k] = _normalize(v, k)
        if field == "annotations" and not out:
            return None
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, list):
        items = [_normalize(v, field) for v in value]
        # Order means nothing in these (kustomize's patches put added entries first).
        if field in ("env", "volumes", "volumeMounts", "containers"):
            items.sort(key=lambda i: str(i["name"]))
        return items
    return value


def normalize(doc: Doc) -> Doc:
    """What an object is, without who rendered it: no renderer labels or checksum
    annotations, no namespace on cluster-scoped kinds (kustomize stamps one on admission
    policies, kustomize#6051), config.yaml parsed, name-keyed lists sorted."""
    doc = copy.deepcopy(doc)
    if doc["kind"] in CLUSTER_SCOPED:
        doc["metadata"].pop("namespace", None)
    if doc["kind"] == "ConfigMap" and "config.yaml" in doc.get("data", {}):
        doc["data"]["config.yaml"] = yaml.safe_load(doc["data"]["config.yaml"])
    return _normalize(doc)


def assert_same_objects(rendered: list[Doc], expected: list[Doc]) -> None:
    got, want = by_key(rendered), by_key(expected)
    assert sorted(got) == sorted(want)
    for k in want:
        assert normalize(got[k]) == normalize(want[k]), f"{k[0]} {k[1]} differs from the kustomize one"


def component(docs: list[Doc], name: str) -> list[Doc]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]


# ---------------------------------------------------------------------------------------------
# helm lint and helm template


@pytest.mark.parametrize(
    "values",
    [[], [*FULL_AGENT, *OWN_AGENT_NAMESPACE], ["agent.enabled=false", "admissionPolicy.enabled=false"]],
    ids=["defaults", "full-agent", "scheduler-only"],
)
def test_helm_lint_passes_strict(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *set_args(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_defaults_render_the_kustomize_base_for_the_scheduler(
    helm: Helm, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    """Release `tessellate` in tessellate-system: the scheduler's objects are the base's, the
    same in everything but who rendered them (labels, the config checksum)."""
    base = kustomize(control_plane, ".")
    rendered = template(helm)
    scheduler = [d for d in rendered if d["kind"] != "Namespace" and d not in component(rendered, "agent")]
    # The base's Namespace is Helm's release namespace; its CRD is in the chart's crds/.
    base_scheduler = [d for d in base if d["kind"] not in ("Namespace", "CustomResourceDefinition")]
    expected = copy.deepcopy(base_scheduler)
    # By default the agent is in the release namespace (manifests/agent/: tessellate-agent),
    # and the pod-annotation policy names its ServiceAccount there: the one difference.
    policy = one(expected, "ValidatingAdmissionPolicy")
    agent_user = "system:serviceaccount:tessellate-agent:tessellate-agent"
    assert agent_user in json.dumps(policy)
    expected.remove(policy)
    expected.append(
        json.loads(
            json.dumps(policy).replace(agent_user, "system:serviceaccount:tessellate-system:tessellate-agent")
        )
    )
    assert_same_objects(scheduler, expected)
    # With the agent in its own namespace, as manifests/agent/ puts it, there is none; nor
    # with the agent left to manifests/agent/ (the pod policy names its ServiceAccount).
    own = template(helm, OWN_AGENT_NAMESPACE)
    assert_same_objects(component(own, "scheduler"), base_scheduler)
    kustomize_agent = ["agent.enabled=false", "agent.namespace=tessellate-agent"]
    alone = template(helm, [*kustomize_agent, "agent.serviceAccountName=tessellate-agent"])
    assert_same_objects(alone, base_scheduler)

    # Spelled out, what the equivalence above covers and an admin cares most about.
    assert one(rendered, "ClusterRole", "tessellate-scheduler")["rules"] == one(base, "ClusterRole")["rules"]
    assert one(rendered, "Role")["rules"] == one(base, "Role")["rules"]
    assert config_of(rendered) == yaml.safe_load((MANIFESTS / "config.yaml").read_text())
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    base_pod = one(base, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert pod["containers"][0]["securityContext"] == base_pod["containers"][0]["securityContext"]
    assert pod["containers"][0]["image"] == "tessellate:0.1.0"
    path = tmp_path / "config.yaml"  # and the scheduler loads it
    path.write_text(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert load_config(path).leaderElection.resourceNamespace == "tessellate-system"
    assert one(rendered, "Deployment")["spec"]["replicas"] == 2


def test_crd_is_the_kustomize_one(helm: Helm) -> None:
    chart_crd = yaml.safe_load((CHART / "crds" / "queues.yaml").read_text())
    assert chart_crd == yaml.safe_load((MANIFESTS / "crds" / "queues.yaml").read_text())
    rendered = template(helm, extra=("--include-crds",))
    assert one(rendered, "CustomResourceDefinition", "queues.tessellate.dev") == chart_crd


def test_agent_modes_render_the_kustomize_agent_bases(
    helm: Helm, control_plane: cluster.ControlPlane
) -> None:
    fractions = template(helm, OWN_AGENT_NAMESPACE)
    assert_same_objects(component(fractions, "agent"), kustomize(control_plane, "agent"))

    full = template(helm, [*FULL_AGENT, *OWN_AGENT_NAMESPACE])
    assert_same_objects(component(full, "agent"), kustomize(control_plane, "agent-full"))
    # migDynamic also gives the scheduler manifests/mig-dynamic/: the base plus those two.
    expected = [
        d
        for d in kustomize(control_plane, ".", "mig-dynamic")
        if d["kind"] not in ("Namespace", "CustomResourceDefinition")
    ]
    assert_same_objects(component(full, "scheduler"), expected)


def test_agent_defaults_to_the_release_namespace(helm: Helm) -> None:
    docs = template(helm)
    agent = component(docs, "agent")
    assert {d["kind"] for d in agent} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert one(agent, "DaemonSet")["metadata"]["namespace"] == "tessellate-system"
    assert one(agent, "ClusterRoleBinding")["subjects"][0]["namespace"] == "tessellate-system"
    assert not [d for d in docs if d["kind"] == "Namespace"]
    assert "system:serviceaccount:tessellate-system:tessellate-agent" in json.dumps(
        one(docs, "ValidatingAdmissionPolicy", "tessellate-pod-gpu-annotations")
    )


def test_names_and_namespace_follow_the_release(helm: Helm, tmp_path: Path) -> None:
    """Another release name and namespace: every name carries the prefix, every namespaced
    object and every reference (Lease, RBAC subjects, admission policies' users) the namespace,
    and nothing still says tessellate-system."""
    docs = template(helm, ["scheduler.policy=bestfit"], release="blue", namespace="gpu-sched")
    text = json.dumps(docs)
    assert "tessellate-system" not in text
    assert "tessellate-agent:" not in text
    for doc in docs:
        assert doc["metadata"]["name"].startswith("blue-tessellate-"), key(doc)
        assert doc["metadata"].get("namespace") == (None if doc["kind"] in CLUSTER_SCOPED else "gpu-sched")
    path = tmp_path / "config.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    config = load_config(path)
    assert config.policy == "bestfit"
    assert config.leaderElection.resourceNamespace == "gpu-sched"
    assert config.leaderElection.resourceName == "blue-tessellate-scheduler"
    assert one(docs, "Role")["rules"][1]["resourceNames"] == ["blue-tessellate-scheduler"]
    policies = json.dumps([d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"])
    assert "system:serviceaccount:gpu-sched:blue-tessellate-scheduler" in policies
    assert "system:serviceaccount:gpu-sched:blue-tessellate-agent" in policies
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "blue"
    # The agent's ServiceAccount may be named: the DaemonSet, its binding and the policies follow.
    named = template(helm, ["agent.serviceAccountName=gpu-agent"], release="blue", namespace="gpu-sched")
    assert one(named, "ServiceAccount", "gpu-agent")["metadata"]["namespace"] == "gpu-sched"
    assert one(named, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "gpu-agent"
    assert one(named, "ClusterRoleBinding", "blue-tessellate-agent")["subjects"][0]["name"] == "gpu-agent"
    named_policies = json.dumps([d for d in named if d["kind"] == "ValidatingAdmissionPolicy"])
    assert named_policies.count("system:serviceaccount:gpu-sched:gpu-agent'") == 2
    # A config change changes the pod template, so helm upgrade rolls the pods.
    default = one(template(helm, release="blue", namespace="gpu-sched"), "Deployment")
    checksum = "checksum/config"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[checksum] != default["spec"]["template"]["metadata"]["annotations"][checksum]


def test_values_reach_the_objects(helm: Helm) -> None:
    docs = template(
        helm,
        [
            "image.repository=registry.example.com/gpu/tessellate",
            "image.tag=0.2.0",
            "image.pullPolicy=Always",
            "scheduler.replicas=3",
            "scheduler.schedulerName=gpu",
            "scheduler.port=9443",
            "scheduler.config.preemption=false",
            "scheduler.config.clientConnection.qps=50",
            "scheduler.leaderElection.leaseDuration=30s",
            "scheduler.resources.limits.memory=4Gi",
            "scheduler.tolerations[0].key=dedicated",
            "scheduler.tolerations[0].operator=Exists",
            "metrics.service.enabled=false",
            "agent.enabled=false",
            "admissionPolicy.enabled=false",
        ],
    )
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    }
    config = config_of(docs)
    assert config["schedulerName"] == "gpu"
    assert config["bindAddress"] == "0.0.0.0:9443"
    assert config["preemption"] is False
    assert config["clientConnection"] == {"qps": 50, "burst": 1000}
    assert config["leaderElection"]["leaseDuration"] == "30s"
    assert config["bindWorkers"] == 16  # the rest of the defaults stay
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/gpu/tessellate:0.2.0"
    assert container["imagePullPolicy"] == "Always"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9443, "protocol": "TCP"}]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert deployment["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Exists"}
    ]

    # null drops a default: the scheduler's built-in one applies.
    assert "maxGpuSharers" not in config_of(template(helm, ["scheduler.config.maxGpuSharers=null"]))

    # With an agent, a scheduler name other than tessellate reaches it too.
    agent = one(template(helm, ["scheduler.schedulerName=gpu"]), "DaemonSet")
    args = agent["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--scheduler-name") + 1] == "gpu"


def test_schema_and_scheduler_agree(helm: Helm) -> None:
    """values.schema.json lists the scheduler's policies, filter plugins and config keys: a
    new one in the scheduler must be added there (or it is refused at install)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    scheduler = schema["properties"]["scheduler"]["properties"]
    assert scheduler["policy"]["enum"] == list(POLICIES)
    config = scheduler["config"]["properties"]
    assert set(config) == {f.name for f in fields(SchedulerConfig)}
    assert config["filters"]["items"]["enum"] == list(FILTER_PLUGINS)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


# ---------------------------------------------------------------------------------------------
# Bad values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["scheduler.replicas=-1"], "at '/scheduler/replicas': minimum: got -1, want 0"),
        (["agent.mode=bogus"], "at '/agent/mode': value must be one of 'fractions', 'full'"),
        (["scheduler.policy=fgdd"], "at '/scheduler/policy': value must be one of"),
        (["scheduler.port=70000"], "at '/scheduler/port': maximum: got 70,000, want 65,535"),
        (["scheduler.config.polcy=fgd"], "at '/scheduler/config': additional properties 'polcy' not allowed"),
        (
            ["scheduler.config.filters={NodeHealth,Nope}"],
            "at '/scheduler/config/filters/1': value must be one of",
        ),
        (
            ["scheduler.config.retryBatchSeconds=soon"],
            "at '/scheduler/config/retryBatchSeconds': got string, want number",
        ),
        (["replicas=3"], "additional properties 'replicas' not allowed"),
        (
            ["scheduler.config.policy=bestfit"],
            "scheduler.config.policy: set scheduler.policy instead",
        ),
        (
            ["scheduler.config.leaderElection.resourceNamespace=elsewhere"],
            "scheduler.config.leaderElection: set scheduler.leaderElection instead",
        ),
        (
            ["scheduler.leaderElection.enabled=false"],
            "scheduler.replicas is 2 but scheduler.leaderElection.enabled is false",
        ),
        (
            ["migDynamic.enabled=true"],
            "migDynamic.enabled needs agent.mode=full (the agent creates MIG instances only in full mode);"
            ' agent.mode is "fractions"',
        ),
        (["agent.createNamespace=true"], "agent.createNamespace needs agent.namespace set"),
    ],
)
def test_bad_values_fail_with_a_clear_message(helm: Helm, values: list[str], message: str) -> None:
    result = helm("template", "tessellate", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0, f"{values} rendered:\n{result.stdout[:500]}"
    assert message in result.stderr, result.stderr
    assert not result.stdout.strip()


def test_one_replica_without_leader_election_is_fine(helm: Helm) -> None:
    docs = template(helm, ["scheduler.replicas=1", "scheduler.leaderElection.enabled=false"])
    assert config_of(docs)["leaderElection"]["leaderElect"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


# ---------------------------------------------------------------------------------------------
# helm install / upgrade / uninstall on the test API server


def can(
    api: KubeClient,
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str = "",
    name: str = "",
) -> bool:
    """What the API server's authorizer (RBAC) answers for `user` (a SubjectAccessReview)."""
    attrs = {"group": group, "resource": resource, "subresource": subresource, "verb": verb}
    attrs |= {"namespace": namespace, "name": name}
    review = api.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": attrs},
        },
    )
    return bool(review["status"].get("allowed"))


def exists(api: KubeClient, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as exc:
        if exc.is_not_found:
            return False
        raise
    return True


def wait_gone(api: KubeClient, paths: list[str], timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    left = list(paths)
    while left and time.monotonic() < deadline:
        left = [p for p in left if exists(api, p)]
        if left:
            time.sleep(0.2)
    return left


def assignment_refusal(cp: cluster.ControlPlane, namespace: str) -> str:
    """Why a pod created with a tessellate.dev/assignment (server dry run) is refused, or "" if
    it is not. Sent as the kustomize base's scheduler (impersonated, in system:masters for
    RBAC): manifests/admission-policy.yaml, if another test applied it, lets that through,
    and a chart's policy refuses it, naming itself."""
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "policy-probe", "annotations": {"tessellate.dev/assignment": "{}"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    as_kustomize_scheduler = ["--as", rbac.USERNAME, "--as-group", "system:masters"]
    args = ["create", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "name", *as_kustomize_scheduler]
    result = cp.kubectl(*args, input=json.dumps(probe), check=False)
    if result.returncode == 0:
        return ""
    assert "denied request" in result.stderr, result.stderr
    return result.stderr


def wait_policy(
    cp: cluster.ControlPlane, namespace: str, policy: str, enforced: bool, timeout: float = 30
) -> str:
    """Wait until the API server enforces a policy just created (or no longer enforces one
    just deleted): its admission plugin works from a cache that lags the writes. A deleted one
    still enforced would refuse the bindings of the next test on this API server."""
    deadline = time.monotonic() + timeout
    while (policy in (refusal := assignment_refusal(cp, namespace))) != enforced:
        state = "not yet enforced" if enforced else "still enforced"
        assert time.monotonic() < deadline, f"{policy} {state} after {timeout}s"
        time.sleep(0.2)
    return refusal


def uninstall_after_failure(
    helm: Helm, cp: cluster.ControlPlane, release: str, namespace: str, kc: list[str]
) -> None:
    """Never leave a release's admission policies on the shared API server."""
    helm("uninstall", release, *kc, check=False)
    with contextlib.suppress(AssertionError, ApiError):
        wait_policy(cp, namespace, f"{release}-tessellate-pod-gpu-annotations", enforced=False)


def test_install_upgrade_uninstall(
    helm: Helm, control_plane: cluster.ControlPlane, admin: KubeClient, tmp_path: Path
) -> None:
    release, ns = cluster.unique("tsl"), cluster.unique("helm")
    full = f"{release}-tessellate"
    kc = ["--kubeconfig", control_plane.kubeconfig, "-n", ns]
    sa_user = f"system:serviceaccount:{ns}:{full}-scheduler"
    rbac_api = "/apis/rbac.authorization.k8s.io/v1"
    vap_api = "/apis/admissionregistration.k8s.io/v1"
    paths = {
        "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{full}-scheduler",
        "configmap": f"/api/v1/namespaces/{ns}/configmaps/{full}-scheduler-config",
        "serviceaccount": f"/api/v1/namespaces/{ns}/serviceaccounts/{full}-scheduler",
        "service": f"/api/v1/namespaces/{ns}/services/{full}-scheduler-metrics",
        "role": f"{rbac_api}/namespaces/{ns}/roles/{full}-scheduler-leader-election",
        "rolebinding": f"{rbac_api}/namespaces/{ns}/rolebindings/{full}-scheduler-leader-election",
        "clusterrole": f"{rbac_api}/clusterroles/{full}-scheduler",
        "clusterrolebinding": f"{rbac_api}/clusterrolebindings/{full}-scheduler",
        "policy": f"{vap_api}/validatingadmissionpolicies/{full}-pod-gpu-annotations",
        "policybinding": f"{vap_api}/validatingadmissionpolicybindings/{full}-pod-gpu-annotations",
        "daemonset": f"/apis/apps/v1/namespaces/{ns}/daemonsets/{full}-agent",
        "agentserviceaccount": f"/api/v1/namespaces/{ns}/serviceaccounts/{full}-agent",
        "agentrole": f"{rbac_api}/clusterroles/{full}-agent",
        "agentpolicy": f"{vap_api}/validatingadmissionpolicies/{full}-agent-own-node",
    }
    mig_paths = [
        f"{rbac_api}/clusterroles/{full}-scheduler-mig-plans",
        f"{rbac_api}/clusterrolebindings/{full}-scheduler-mig-plans",
        f"{vap_api}/validatingadmissionpolicies/{full}-scheduler-mig-plans-only",
    ]
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/queues.tessellate.dev"
    installed = False
    try:
        out = helm("install", release, str(CHART), *kc, "--create-namespace").stdout
        installed = True
        assert "STATUS: deployed" in out
        assert f"kubectl -n {ns} get lease {full}-scheduler" in out  # NOTES.txt

        missing = [name for name, path in paths.items() if not exists(admin, path)]
        assert not missing, f"helm install did not create {missing}"
        assert exists(admin, crd)
        assert not [p for p in mig_paths if exists(admin, p)]
        # The API server enforces its pod-annotation policy (it names the chart's scheduler).
        refusal = wait_policy(control_plane, ns, f"{full}-pod-gpu-annotations", enforced=True)
        assert "tessellate.dev/assignment is written only by the tessellate scheduler" in refusal
        deployment = admin.get(paths["deployment"])
        assert deployment["spec"]["replicas"] == 2
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{full}-scheduler"
        config_file = tmp_path / "config.yaml"
        config_file.write_text(admin.get(paths["configmap"])["data"]["config.yaml"])
        config = load_config(config_file)
        assert (config.policy, config.leaderElection.resourceNamespace) == ("fgd", ns)
        checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

        # The RBAC it installed, asked of the API server for the scheduler's ServiceAccount.
        lease = config.leaderElection.resourceName
        leases = {"group": "coordination.k8s.io"}
        assert can(admin, sa_user, "create", "pods", subresource="binding", namespace="default")
        assert can(admin, sa_user, "watch", "pods")
        assert can(admin, sa_user, "patch", "queues", group="tessellate.dev", subresource="status")
        assert can(admin, sa_user, "update", "leases", **leases, namespace=ns, name=lease)
        assert not can(admin, sa_user, "update", "leases", **leases, namespace=ns, name="other")
        assert not can(admin, sa_user, "update", "leases", **leases, namespace="default", name=lease)
        assert not can(admin, sa_user, "create", "pods", namespace="default")
        assert not can(admin, sa_user, "patch", "nodes")

        # upgrade: a new policy and the full agent with dynamic MIG.
        out = helm(
            "upgrade",
            release,
            str(CHART),
            *kc,
            "--reuse-values",
            *set_args(["scheduler.policy=bestfit", *FULL_AGENT]),
        ).stdout
        assert "REVISION: 2" in out
        config_file.write_text(admin.get(paths["configmap"])["data"]["config.yaml"])
        assert load_config(config_file).policy == "bestfit"
        deployment = admin.get(paths["deployment"])
        assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum
        args = admin.get(paths["daemonset"])["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:4] == ["agent", "run", "--mode", "full"] and "--mig-dynamic" in args
        assert all(exists(admin, p) for p in mig_paths)
        assert can(admin, sa_user, "patch", "nodes")

        # A bad value is refused before anything changes.
        bad = helm("upgrade", release, str(CHART), *kc, "--set", "agent.mode=bogus", check=False)
        assert bad.returncode != 0 and "at '/agent/mode'" in bad.stderr
        status = json.loads(helm("status", release, *kc, "-o", "json").stdout)
        assert status["version"] == 2 and status["info"]["status"] == "deployed"

        helm("uninstall", release, *kc)
        installed = False
        left = wait_gone(admin, [*paths.values(), *mig_paths])
        assert not left, f"helm uninstall left {left}"
        assert not can(admin, sa_user, "create", "pods", subresource="binding", namespace="default")
        wait_policy(control_plane, ns, f"{full}-pod-gpu-annotations", enforced=False)
        # Helm never deletes what crds/ installed: queues (and their Queue objects) stay.
        assert exists(admin, crd)
    finally:
        if installed:
            uninstall_after_failure(helm, control_plane, release, ns, kc)


def test_install_full_agent_in_its_own_namespace(
    helm: Helm, control_plane: cluster.ControlPlane, admin: KubeClient
) -> None:
    """manifests/agent-full/ + mig-dynamic/ the Helm way: the chart makes the agent's
    privileged namespace, and the API server takes the privileged DaemonSet in it."""
    release, ns = cluster.unique("tsl"), cluster.unique("helm")
    agent_ns = f"{ns}-agent"
    kc = ["--kubeconfig", control_plane.kubeconfig, "-n", ns]
    values = [*FULL_AGENT, f"agent.namespace={agent_ns}", "agent.createNamespace=true"]
    installed = False
    try:
        helm("install", release, str(CHART), *kc, "--create-namespace", *set_args(values))
        installed = True
        # Seen enforced before it is deleted, so that its delete is the last word (below).
        wait_policy(control_plane, ns, f"{release}-tessellate-pod-gpu-annotations", enforced=True)
        labels = admin.get(f"/api/v1/namespaces/{agent_ns}")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
        ds = admin.get(f"/apis/apps/v1/namespaces/{agent_ns}/daemonsets/{release}-tessellate-agent")
        pod = ds["spec"]["template"]["spec"]
        assert pod["hostIPC"] is True
        assert pod["containers"][0]["securityContext"]["privileged"] is True
        assert pod["serviceAccountName"] == f"{release}-tessellate-agent"
        assert exists(admin, f"/api/v1/namespaces/{agent_ns}/serviceaccounts/{release}-tessellate-agent")
        policy = admin.get(
            f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{release}-tessellate-agent-own-node"
        )
        assert f"system:serviceaccount:{agent_ns}:{release}-tessellate-agent" in json.dumps(policy["spec"])
        helm("uninstall", release, *kc)
        installed = False
        # The chart's namespace goes with the release (it stays Terminating here: the test
        # cluster has no namespace controller to empty it).
        left = wait_gone(
            admin, [f"/apis/apps/v1/namespaces/{agent_ns}/daemonsets/{release}-tessellate-agent"]
        )
        assert not left
        namespace = admin.get(f"/api/v1/namespaces/{agent_ns}")
        assert namespace["metadata"].get("deletionTimestamp")
        wait_policy(control_plane, ns, f"{release}-tessellate-pod-gpu-annotations", enforced=False)
    finally:
        if installed:
            uninstall_after_failure(helm, control_plane, release, ns, kc)


def test_every_option_renders_objects_the_api_server_takes(
    helm: Helm, control_plane: cluster.ControlPlane, namespace: str
) -> None:
    """Most values set at once, sent to the API server as a server-side dry run (it validates
    every object, admission included, and stores nothing)."""
    values = [
        *FULL_AGENT,
        "image.digest=sha256:" + "0" * 64,
        "imagePullSecrets[0].name=registry",
        "commonLabels.team=gpu",
        "scheduler.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=node-role.kubernetes.io/control-plane",
        "scheduler.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "scheduler.priorityClassName=system-cluster-critical",
        "scheduler.podAnnotations.example\\.com/owner=gpu-team",
        "scheduler.podLabels.tier=control",
        "scheduler.serviceAccountAnnotations.example\\.com/role=scheduler",
        "metrics.service.type=NodePort",
        "metrics.service.annotations.prometheus\\.io/path=/custom-metrics",
        "agent.extraArgs={--device-list-strategy,cdi}",
        "agent.runtimeClassName=nvidia",
        "agent.podAnnotations.example\\.com/owner=gpu-team",
        "agent.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=gpu",
        "agent.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    ]
    release = cluster.unique("tsl")
    kc = ["--kubeconfig", control_plane.kubeconfig, "-n", namespace]
    out = helm("install", release, str(CHART), *kc, "--dry-run=server", *set_args(values)).stdout
    docs = [doc for doc in yaml.safe_load_all(out.split("\nNOTES:\n")[0].split("\n---\n", 1)[1]) if doc]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "tessellate@sha256:" + "0" * 64
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert "podAntiAffinity" not in pod["affinity"] and "nodeAffinity" in pod["affinity"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert all(d["metadata"]["labels"]["team"] == "gpu" for d in docs)
    service = one(docs, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["metadata"]["annotations"]["prometheus.io/path"] == "/custom-metrics"
    agent = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert agent["runtimeClassName"] == "nvidia"
    assert agent["containers"][0]["args"][-2:] == ["--device-list-strategy", "cdi"]
    # Nothing was stored.
    status = helm("status", release, *kc, check=False)
    assert status.returncode != 0 and "not found" in status.stderr
