"""Run `tessellate scheduler` as a real process (so kill -9 is real) and watch its effects."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from integration import cluster
from tessellate.kube import KubeClient
from tessellate.wire.assignment import ASSIGNMENT, decode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SchedulerProcess:
    def __init__(self, kubeconfig: str, workdir: Path, name: str = "sched", **settings: Any):
        self.port = free_port()
        config = {"bindAddress": f"127.0.0.1:{self.port}", **settings}
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.identity = f"{name}-{os.getpid()}-{self.port}"
        self.kubeconfig = kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SchedulerProcess:
        exe = Path(sys.executable).with_name("tessellate")
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "scheduler",
                "--kubeconfig",
                self.kubeconfig,
                "--config",
                str(self.config_path),
                "--identity",
                self.identity,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def bound_count(api: KubeClient, namespace: str) -> int:
    return sum(1 for p in cluster.list_pods(api, namespace) if p["spec"].get("nodeName"))


def check_no_overcommit(pods: list[dict[str, Any]], gpus_per_node: dict[str, int]) -> int:
    """Independent of the scheduler's cache: annotations must never over-commit a GPU.

    Returns how many GPU-using pods were checked.
    """
    used: dict[tuple[str, int], int] = defaultdict(int)
    checked = 0
    for p in pods:
        node = p["spec"].get("nodeName")
        limits = p["spec"]["containers"][0].get("resources", {}).get("limits", {})
        if not node or not ("nvidia.com/gpu" in limits or "tessellate.dev/gpu-milli" in limits):
            continue
        raw = (p["metadata"].get("annotations") or {}).get(ASSIGNMENT)
        assert raw, f"bound GPU pod {p['metadata']['name']} has no {ASSIGNMENT} annotation"
        assignment = decode(raw)
        if "nvidia.com/gpu" in limits:
            assert len(assignment.gpus) == int(limits["nvidia.com/gpu"]), (p["metadata"]["name"], raw)
            assert all(g.milli == 1000 for g in assignment.gpus)
        else:
            assert len(assignment.gpus) == 1 and assignment.gpus[0].milli == int(
                limits["tessellate.dev/gpu-milli"]
            )
        for g in assignment.gpus:
            assert 0 <= g.index < gpus_per_node[node], f"{node} has no GPU {g.index}"
            used[(node, g.index)] += g.milli
        checked += 1
    over = {k: v for k, v in used.items() if v > 1000}
    assert not over, (
        f"over-committed GPUs (node, index) -> milli: {json.dumps({str(k): v for k, v in over.items()})}"
    )
    return checked
