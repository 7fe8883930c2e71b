"""Run as the scheduler's ServiceAccount, under the RBAC rules in manifests/.

`scheduler_kubeconfig(cp, tmp_path)` applies the kustomize base to the test
control plane (idempotent: `kubectl apply`) and returns a kubeconfig that
authenticates only with a TokenRequest token of
`tessellate-system/tessellate-scheduler`. No client certificate is in it, so
every request is authorized as that ServiceAccount, never as admin.

    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)
    api = KubeClient.from_kubeconfig(kubeconfig)

`service_account_token` and `token_kubeconfig` do the same for any other
ServiceAccount (an ordinary user in a test's namespace, say).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from integration import cluster

MANIFESTS = cluster.REPO / "manifests"
NAMESPACE = "tessellate-system"
SERVICE_ACCOUNT = "tessellate-scheduler"
USERNAME = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def apply_manifests(cp: cluster.ControlPlane) -> None:
    """`kubectl apply -k manifests/` with the admin kubeconfig (safe to repeat)."""
    cp.kubectl("apply", "-k", str(MANIFESTS))


def service_account_token(
    cp: cluster.ControlPlane,
    duration: str = "1h",
    name: str = SERVICE_ACCOUNT,
    namespace: str = NAMESPACE,
) -> str:
    """A token for a ServiceAccount (TokenRequest API), by default the scheduler's."""
    result = cp.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")
    token = result.stdout.strip()
    if not token:
        raise AssertionError(f"kubectl create token printed no token:\n{result.stderr}")
    return token


def _admin_cluster_entry(cp: cluster.ControlPlane) -> dict:
    """The `cluster:` block (server, CA) of the admin kubeconfig's current context."""
    config = yaml.safe_load(Path(cp.kubeconfig).read_text())
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    current = config.get("current-context")
    name = contexts[current]["cluster"] if current in contexts else next(iter(clusters))
    entry = dict(clusters[name])
    if not entry.get("certificate-authority-data"):
        ca = entry.get("certificate-authority")
        if ca and not os.path.isabs(ca):
            ca = str(Path(cp.kubeconfig).parent / ca)
        entry["certificate-authority"] = ca or str(cp.state_dir / "pki" / "ca.crt")
    return entry


def token_kubeconfig(
    cp: cluster.ControlPlane, path: Path | str, user: str, token: str, namespace: str | None = None
) -> str:
    """Write a kubeconfig for the test control plane that authenticates only with `token`
    (no client certificate, which would make every request admin's); return its path."""
    context: dict[str, str] = {"cluster": "tessellate-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tessellate-test", "cluster": _admin_cluster_entry(cp)}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return str(path)


def scheduler_kubeconfig(cp: cluster.ControlPlane, tmp_path: Path | str) -> str:
    """Apply manifests/ and write a token-only kubeconfig for the scheduler's SA; return its path."""
    apply_manifests(cp)
    path = Path(tmp_path) / f"{SERVICE_ACCOUNT}.kubeconfig"
    return token_kubeconfig(cp, path, SERVICE_ACCOUNT, service_account_token(cp), NAMESPACE)
