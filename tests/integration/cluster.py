"""A real kube-apiserver + etcd for integration tests, and helpers to fill it.

One control plane per pytest-xdist worker (its own state dir and ports), started
by `scripts/control-plane up` and purged at the end of the session. There is no
kubelet: tests create Node objects and write their status themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessellate.kube import KubeClient

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE = REPO / "scripts" / "control-plane"


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane: its admin kubeconfig, state dir and matching kubectl."""

    kubeconfig: str
    state_dir: Path
    kubectl_path: str

    def env(self) -> dict[str, str]:
        return dict(os.environ, TESSELLATE_CP_DIR=str(self.state_dir))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (same version as the API server) and capture its output."""
        cmd = [self.kubectl_path, "--kubeconfig", kubeconfig or self.kubeconfig, *args]
        result = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def client(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self.kubeconfig)


def start(worker: str, apiserver_args: str = "") -> ControlPlane:
    """Start a control plane of our own (state dir unique to this process and flags)."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    flavour = f"-{abs(hash(apiserver_args)) % 10**6}" if apiserver_args else ""
    state_dir = base / f"tessellate-test-cp-{worker}-{os.getpid()}{flavour}"
    env = dict(os.environ, TESSELLATE_CP_DIR=str(state_dir), TESSELLATE_CP_APISERVER_ARGS=apiserver_args)
    subprocess.run([str(CONTROL_PLANE), "down", "--purge"], env=env, capture_output=True, timeout=120)
    up = subprocess.run([str(CONTROL_PLANE), "up"], env=env, text=True, capture_output=True, timeout=3600)
    if up.returncode != 0:
        raise RuntimeError(f"scripts/control-plane up failed:\n{up.stderr[-4000:]}")
    kubeconfig = up.stdout.strip().splitlines()[-1]
    envout = subprocess.run([str(CONTROL_PLANE), "env"], env=env, text=True, capture_output=True, check=True)
    kubectl = next(
        line.split("=", 1)[1].strip("'\"")
        for line in envout.stdout.splitlines()
        if line.startswith("export TESSELLATE_KUBECTL=")
    )
    return ControlPlane(kubeconfig=kubeconfig, state_dir=state_dir, kubectl_path=kubectl)


def stop(cp: ControlPlane) -> None:
    subprocess.run([str(CONTROL_PLANE), "down", "--purge"], env=cp.env(), capture_output=True, timeout=120)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_namespace(api: KubeClient, prefix: str = "t") -> str:
    name = unique(prefix)
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def gpu_node(
    name: str,
    gpus: int = 8,
    cpu: str = "64",
    memory: str = "512Gi",
    product: str = "NVIDIA-A100-SXM4-80GB",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    extra_allocatable: dict[str, str] | None = None,
    fractions: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Node object, status) for a fake GPU node with gpu-feature-discovery labels; with
    `fractions`, it also advertises tessellate.dev/gpu-milli as a node running our agent does."""
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if gpus:
        all_labels.update({"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus)})
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": annotations or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
    }
    alloc = {"cpu": cpu, "memory": memory, "pods": "110", **(extra_allocatable or {})}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
        if fractions:
            alloc.setdefault("tessellate.dev/gpu-milli", str(1000 * gpus))
    status = {
        "capacity": alloc,
        "allocatable": alloc,
        "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubelet"}],
    }
    return node, status


def create_node(api: KubeClient, node: dict[str, Any], status: dict[str, Any]) -> None:
    name = node["metadata"]["name"]
    api.post("/api/v1/nodes", node)
    api.patch(f"/api/v1/nodes/{name}/status", {"status": status})


def pod(
    name: str,
    namespace: str,
    limits: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    scheduler: str = "tessellate",
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{"name": "main", "image": "busybox", "resources": resources}],
            **spec,
        },
    }


def create_pods(api: KubeClient, pods: Iterable[dict[str, Any]], workers: int = 8) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(p: dict[str, Any]) -> None:
        api.post(f"/api/v1/namespaces/{p['metadata']['namespace']}/pods", p)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, pods))


def list_pods(api: KubeClient, namespace: str) -> list[dict[str, Any]]:
    items, _ = api.list_all(f"/api/v1/namespaces/{namespace}/pods")
    return items


def events_for(api: KubeClient, namespace: str, pod_name: str) -> list[dict[str, Any]]:
    """core/v1 view of the events about one pod (events.k8s.io events show up here too)."""
    items, _ = api.list_all(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={pod_name}",
    )
    return items


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
