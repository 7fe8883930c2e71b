"""`tessellate trace record`: watch a cluster and write what it ran as a replayable trace.

Nodes and pods are listed, then watched (the scheduler's informer, with its relist on
410 Gone). Every pod is journalled once, when first seen: its request as the scheduler
reads it (`tessellate.kubetrace`), creation time from `metadata.creationTimestamp`, and
later the time it was first seen bound and the time it left (deleted, or finished).
Times are seconds from the recording's start. The journal (`journal.jsonl`, one JSON
object per line, appended and flushed) is the recording; `nodes.csv` and `pods.csv`
(the generic schema, plus a `start_time` column the replay ignores) are rewritten from
it every few seconds and at the end, atomically.

Restarting with the same `--out` resumes: the journal is read back, pods already in it
are not written again, and pods it has as running but that are gone by the first list
are recorded as having left at that moment (the best that is known). Nothing is lost
or doubled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from tessellate.kube import KubeClient, timestamp
from tessellate.kubetrace import FINISHED, node_spec, trace_pod
from tessellate.scheduler.informer import Reflector
from tessellate.simulator.trace import PodRecord, Trace
from tessellate.simulator.traces.generic import write_trace

log = logging.getLogger("tessellate.trace")

META = "recording.json"
JOURNAL = "journal.jsonl"
WRITE_EVERY_SECONDS = 5.0


class RecordingError(RuntimeError):
    """The output folder holds something else, or cannot be written."""


class Recording:
    """The journal and the tables of one recording folder; thread-safe (two informers)."""

    def __init__(self, out: Path, scheduler_name: str | None = None) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        """uid -> {name, created, bound, left, obj (the first pod object seen)}."""
        self.nodes: dict[str, dict[str, Any]] = {}
        out.mkdir(parents=True, exist_ok=True)
        meta_path = out / META
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                self.t0 = float(meta["t0"])
            except (ValueError, KeyError, TypeError) as exc:
                raise RecordingError(f"{meta_path} is not a recording's ({exc}); use another --out") from None
            self._replay_journal()
            self.resumed = True
        else:
            if any(out.iterdir()):
                raise RecordingError(f"{out} is not empty and holds no recording; use an empty or new --out")
            self.t0 = time.time()
            meta_path.write_text(json.dumps({"t0": self.t0, "scheduler": scheduler_name}) + "\n")
            self.resumed = False
        self._journal = (out / JOURNAL).open("a", encoding="utf-8")
        self.seen_since_start: set[str] = set()

    def _replay_journal(self) -> None:
        path = self.out / JOURNAL
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut off by a crash: the event it held is seen again on relist
            uid = entry.get("uid")
            if entry.get("event") == "pod" and uid not in self.pods:
                self.pods[uid] = {"name": entry["name"], "created": entry["created"], "obj": entry["obj"]}
            elif uid in self.pods and entry.get("event") in ("bound", "left"):
                self.pods[uid][entry["event"]] = entry["at"]

    def now(self) -> float:
        return time.time() - self.t0

    def _append(self, entry: dict[str, Any]) -> None:
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._journal.flush()

    # -- informer handlers ----------------------------------------------------------------

    def replace_nodes(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.nodes = {o["metadata"]["name"]: o for o in items if (o.get("metadata") or {}).get("name")}

    def node_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        with self.lock:
            if kind == "DELETED":
                self.nodes.pop(name, None)  # a node that left: the trace keeps the last set
            elif name:
                self.nodes[name] = obj

    def replace_pods(self, items: list[dict[str, Any]]) -> None:
        """A full list: new pods are journalled; journalled pods missing from it have left."""
        present = {(o.get("metadata") or {}).get("uid") for o in items}
        with self.lock:
            now = self.now()
            for uid, pod in self.pods.items():
                if uid not in present and "left" not in pod:
                    pod["left"] = now
                    self._append({"event": "left", "uid": uid, "at": now})
        for obj in items:
            self.pod_event("ADDED", obj, listed=True)

    def pod_event(self, kind: str, obj: dict[str, Any], listed: bool = False) -> None:
        """A pod seen by the watch (or in a list: `listed`). A pod first seen by the watch was
        created just now (its creationTimestamp has only whole seconds); a listed one at its
        creationTimestamp, or at the recording's start if it is older."""
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self.lock:
            now = self.now()
            pod = self.pods.get(uid)
            if pod is None:
                if kind == "DELETED" or (obj.get("status") or {}).get("phase") in FINISHED:
                    return  # gone before we saw it running or waiting: nothing to replay
                stamp = timestamp(meta.get("creationTimestamp"))
                created = max(0.0, (stamp or time.time()) - self.t0) if listed or stamp is None else now
                name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                kept = _lean(obj)
                pod = self.pods[uid] = {"name": name, "created": created, "obj": kept}
                self._append({"event": "pod", "uid": uid, "name": name, "created": created, "obj": kept})
            if (obj.get("spec") or {}).get("nodeName") and "bound" not in pod:
                pod["bound"] = now
                self._append({"event": "bound", "uid": uid, "at": now})
            gone = kind == "DELETED" or (obj.get("status") or {}).get("phase") in FINISHED
            if gone and "left" not in pod:
                pod["left"] = now
                self._append({"event": "left", "uid": uid, "at": now})

    # -- the tables -----------------------------------------------------------------------

    def trace(self) -> tuple[Trace, dict[str, float]]:
        """The trace so far and each pod's recorded start (seen bound) time."""
        with self.lock:
            nodes = sorted((node_spec(o)[0] for o in self.nodes.values()), key=lambda n: n.name)
            pods: list[PodRecord] = []
            starts: dict[str, float] = {}
            for pod in sorted(self.pods.values(), key=lambda p: (p["created"], p["name"])):
                record, _ = trace_pod(pod["obj"], pod["created"], pod.get("left"))
                if record is None:
                    continue
                pods.append(record)
                if "bound" in pod:
                    starts[record.name] = pod["bound"]
        return Trace(self.out.name, tuple(nodes), tuple(pods)), starts

    def write(self) -> Trace:
        """Rewrite nodes.csv and pods.csv (atomically) from the journal."""
        trace, starts = self.trace()
        tmp_nodes, tmp_pods = self.out / ".nodes.tmp.csv", self.out / ".pods.tmp.csv"
        write_trace(trace, tmp_nodes, tmp_pods)
        _add_start_column(tmp_pods, [starts.get(p.name) for p in trace.pods])
        os.replace(tmp_nodes, self.out / "nodes.csv")
        os.replace(tmp_pods, self.out / "pods.csv")
        return trace

    def close(self) -> None:
        self._journal.close()


def _lean(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod without what the trace never reads (managedFields, status), to keep the journal small."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": obj.get("spec") or {}}


def _add_start_column(path: Path, starts: list[float | None]) -> None:
    """`start_time`: when each pod was first seen bound (empty: never); the replay ignores it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [lines[0] + ",start_time"]
    for line, start in zip(lines[1:], starts, strict=True):
        out.append(f"{line},{'' if start is None else repr(round(start, 3))}")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def record(
    api: KubeClient,
    out: Path,
    duration: float | None,
    stop: threading.Event | None = None,
    namespace: str | None = None,
    node_selector: str | None = None,
) -> Trace:
    """Record until `duration` seconds have passed (None: until `stop` is set); only the pods
    of `namespace` and the nodes matching the label selector `node_selector`, when given."""
    stop = stop or threading.Event()
    recording = Recording(out)
    node_params = {"labelSelector": node_selector} if node_selector else {}
    pods_path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    nodes = Reflector(api, "/api/v1/nodes", recording.replace_nodes, recording.node_event, stop, node_params)
    pods = Reflector(api, pods_path, recording.replace_pods, recording.pod_event, stop)
    nodes.start()
    pods.start()
    ends = None if duration is None else time.monotonic() + duration
    try:
        while not stop.is_set() and (ends is None or time.monotonic() < ends):
            stop.wait(
                WRITE_EVERY_SECONDS
                if ends is None
                else min(WRITE_EVERY_SECONDS, max(ends - time.monotonic(), 0))
            )
            if pods.synced.is_set() and nodes.synced.is_set():
                recording.write()
    finally:
        stop.set()
        trace = recording.write() if pods.synced.is_set() else recording.trace()[0]
        recording.close()
    return trace
