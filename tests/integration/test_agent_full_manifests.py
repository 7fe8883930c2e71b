"""manifests/agent-full: the agent overlay for --mode full, dynamic MIG and the MPS daemon renders,
passes the API server's validation, and mounts what those flags need."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from integration import cluster
from integration.test_agent import apply_agent_manifests

pytestmark = pytest.mark.integration

OVERLAY = cluster.REPO / "manifests" / "agent-full"


def daemonset(cp: cluster.ControlPlane) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(cp.kubectl("kustomize", str(OVERLAY)).stdout) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def test_the_overlay_runs_full_mode_with_dynamic_mig_and_mps(control_plane: cluster.ControlPlane) -> None:
    spec = daemonset(control_plane)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:2] == ["agent", "run"]
    assert args[args.index("--mode") + 1] == "full" and "--mig-dynamic" in args
    pipe = args[args.index("--mps-pipe-dir") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    assert mounts["mps-pipe"] == volumes["mps-pipe"] == pipe
    assert mounts["device-plugins"] == "/var/lib/kubelet/device-plugins"  # the base's mounts stay
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_MIG_CONFIG_DEVICES"] == "all" and "NODE_NAME" in env
    assert container["securityContext"]["privileged"] is True and spec["hostIPC"] is True


def test_the_overlay_passes_server_side_validation(control_plane: cluster.ControlPlane) -> None:
    apply_agent_manifests(control_plane)  # the namespace must exist for a dry run
    result = control_plane.kubectl("apply", "-k", str(OVERLAY), "--dry-run=server")
    assert "daemonset.apps/tessellate-agent" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
