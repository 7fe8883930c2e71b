"""`--queues FILE`: Queue specs from YAML, checked as the live scheduler checks them.

The file holds a YAML list of Queue objects (`kubectl get queues -o yaml` output, a
`kind: List`, or hand-written `{name, spec}` items, also as several `---` documents).
Every mistake becomes one `QueueFileError` line naming the file, the queue and the
field (`placement.quota.spec`), never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from tessellate.placement.quota import QueueSpec, QueueSpecError, QueueTree, parse_queues
from tessellate.simulator.trace import Trace


class QueueFileError(ValueError):
    """A queues file that cannot be used; the message says which file, queue and field."""


def load_queue_specs(path: str | Path) -> list[QueueSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueueFileError(f"{path}: no such file (expected a YAML list of queues)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QueueFileError(f"{path}: cannot read it: {exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise QueueFileError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not documents:
        raise QueueFileError(f"{path}: no queues in the file (expected a YAML list of queues)")
    items: list = []
    for doc in documents:
        items += (
            doc["items"]
            if isinstance(doc, dict) and "items" in doc
            else doc
            if isinstance(doc, list)
            else [doc]
        )
    try:
        return parse_queues(items)
    except QueueSpecError as exc:
        raise QueueFileError(f"{path}: {exc}") from None


def tree_of(specs: list[QueueSpec], source: str) -> QueueTree:
    try:
        return QueueTree(specs)
    except QueueSpecError as exc:
        raise QueueFileError(f"{source}: {exc}") from None


def load_queue_file(path: str | Path) -> QueueTree:
    """The validated queue tree of a `--queues` file."""
    return tree_of(load_queue_specs(path), str(path))


def queues_from_trace(trace: Trace) -> QueueTree:
    """A tree with one quota-less queue per queue name in the trace (weights 1: they share
    idle GPUs evenly), for replaying a trace's priorities and pod groups without a file."""
    names = sorted({p.queue for p in trace.pods if p.queue and p.queue != "default"})
    return tree_of([QueueSpec(name) for name in names], f"trace {trace.name}")


def missing_queues(tree: QueueTree, trace: Trace) -> dict[str, int]:
    """Queue names the trace uses that the tree lacks (or are parents), with their pod counts."""
    out: dict[str, int] = {}
    for pod in trace.pods:
        if pod.queue and (pod.queue not in tree or not tree.is_leaf(pod.queue)):
            out[pod.queue] = out.get(pod.queue, 0) + 1
    return out
