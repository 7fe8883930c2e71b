"""What users see of a decision: events and the PodScheduled condition.

Events use the events.k8s.io/v1 API like kube-scheduler (reason + action +
note; `kubectl describe pod` and `kubectl get events` show them). Writes go
through a small thread pool so a slow API server never stalls the scheduling
loop; a failed write is logged, never retried forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tessellate.kube import ApiError, KubeClient

log = logging.getLogger("tessellate.recorder")

NOTE_LIMIT = 1024  # the API server's limit on an event note


def micro_time(ts: float | None = None) -> str:
    """RFC 3339 with exactly six fractional digits (Kubernetes MicroTime)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def truncate(note: str, limit: int = NOTE_LIMIT) -> str:
    return note if len(note) <= limit else note[: limit - 4] + " ..."


class Recorder:
    def __init__(self, api: KubeClient, controller: str, instance: str, workers: int = 4):
        self.api = api
        self.controller = controller
        self.instance = instance[:128]
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="recorder")

    def event(
        self, obj: dict[str, Any], type_: str, reason: str, action: str, note: str, kind: str = "Pod"
    ) -> None:
        """Record an event about a pod (or, with `kind="Node"`, a node: its events live in
        the `default` namespace, as kubelet's and kube-scheduler's do)."""
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", meta.get("name", "")
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "eventTime": micro_time(),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "type": type_,
            "note": truncate(note),
            "regarding": {
                "apiVersion": "v1",
                "kind": kind,
                **({"namespace": ns} if kind == "Pod" else {}),
                "name": name,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
        }
        self._pool.submit(self._post, f"/apis/events.k8s.io/v1/namespaces/{ns}/events", body)

    def unschedulable(self, pod: dict[str, Any], message: str, reason: str = "Unschedulable") -> None:
        """Set PodScheduled=False (skipped when the same condition is already there)."""
        meta = pod.get("metadata") or {}
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == reason
                and cond.get("message") == message
            ):
                return
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": reason,
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": micro_time().split(".")[0] + "Z",
                    }
                ]
            }
        }
        path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}/status"
        self._pool.submit(self._patch, path, patch)

    def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.api.post(path, body)
        except (ApiError, OSError) as exc:
            log.warning("could not record event %s: %s", body.get("reason"), exc)
        except Exception:
            log.exception("recording an event failed")

    def _patch(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.api.patch(path, body, kind="strategic")
        except ApiError as exc:
            if not exc.is_not_found:
                log.warning("could not update pod status at %s: %s", path, exc)
        except Exception:
            log.exception("updating pod status failed")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
