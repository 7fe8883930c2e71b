"""Finding the pod (and container) behind an Allocate, and the GPUs its assignment names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tessellate.agent.claims import ALLOCATED, Claim, ClaimError, Claims
from tessellate.agent.devices import GPU, GPU_MEMORY, GPU_MILLI, gpu_of

from tessellate.wire.assignment import ASSIGNMENT

UUIDS = [f"GPU-{i}" for i in range(4)]


def _container(name: str, limits: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "resources": {"limits": limits}}


def pod(
    name: str,
    assignment: dict | None,
    containers: list[dict[str, str]],
    init: list[dict[str, str]] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    scheduler: str = "tessellate",
    **status: Any,
) -> dict[str, Any]:
    annotations = {ASSIGNMENT: json.dumps(assignment)} if assignment is not None else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created,
                     "annotations": annotations},
        "spec": {
            "schedulerName": scheduler,
            "containers": [_container(f"c{i}", x) for i, x in enumerate(containers)],
            "initContainers": [_container(f"i{i}", x) for i, x in enumerate(init or [])],
        },
        "status": {"phase": "Pending", **status},
    }  # fmt: skip


class Pods:
    def __init__(self, *items: dict[str, Any]):
        self.items = list(items)
        self.recorded: list[Claim] = []

    def pods(self) -> list[dict[str, Any]]:
        return self.items

    def record(self, claim: Claim) -> None:
        self.recorded.append(claim)


def claims(*items: dict[str, Any]) -> Claims:
    return Claims(Pods(*items), lambda i: UUIDS[i] if i < len(UUIDS) else None)


def serve(c: Claims, resource: str, ids: list[str]) -> Claim:
    claim = c.find(resource, ids, gpu_of)
    c.served(claim)
    return claim


def test_containers_split_the_assignment_in_order_and_init_containers_reuse_the_first() -> None:
    c = claims(
        pod(
            "p",
            {"gpus": [{"index": 3}, {"index": 1}, {"index": 2}]},
            [{GPU: "2"}, {GPU: "1"}],
            init=[{GPU: "1"}],
        )
    )
    assert serve(c, GPU, ["x"]).uuids == ("GPU-3",)  # init container
    assert serve(c, GPU, ["x", "y"]).uuids == ("GPU-3", "GPU-1")
    last = serve(c, GPU, ["x"])
    assert (last.container, last.uuids) == ("c1", ("GPU-2",))


def test_a_container_is_matched_by_its_device_count() -> None:
    c = claims(
        pod("one", {"gpus": [{"index": 0}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z"),
        pod("two", {"gpus": [{"index": 1}, {"index": 2}]}, [{GPU: "2"}], created="2026-01-01T00:00:09Z"),
    )
    assert serve(c, GPU, ["a", "b"]).pod == "two"  # the older pod asks for 1, not 2


def test_containers_already_served_or_started_are_not_served_again() -> None:
    served = pod("served", {"gpus": [{"index": 0}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z")
    running = pod("running", {"gpus": [{"index": 1}]}, [{GPU: "1"}], created="2026-01-01T00:00:01Z",
                  containerStatuses=[{"name": "c0", "containerID": "containerd://abc"}])  # fmt: skip
    waiting = pod("waiting", {"gpus": [{"index": 2}]}, [{GPU: "1"}], created="2026-01-01T00:00:02Z")
    finished = pod("done", {"gpus": [{"index": 3}]}, [{GPU: "1"}], created="2025-01-01T00:00:00Z")
    finished["status"]["phase"] = "Succeeded"
    c = claims(served, running, waiting, finished)
    assert serve(c, GPU, ["x"]).pod == "served"
    assert serve(c, GPU, ["x"]).pod == "waiting"


def test_an_older_pod_served_only_by_its_annotation_makes_the_next_pod_ambiguous() -> None:
    # Changed: the annotation alone used to mark the container served. A pod's author can
    # write it, and then the newer pod would be served for the older pod's container.
    recorded = pod("recorded", {"gpus": [{"index": 0}]}, [{GPU: "1"}], created="2026-01-01T00:00:00Z")
    recorded["metadata"]["annotations"][ALLOCATED] = json.dumps({"c0": ["GPU-0"]})
    waiting = pod("waiting", {"gpus": [{"index": 2}]}, [{GPU: "1"}], created="2026-01-01T00:00:02Z")
    with pytest.raises(ClaimError, match=r"cannot tell whether the kubelet is admitting pod ns/recorded"):
        claims(recorded, waiting).find(GPU, ["x"], gpu_of)
    recorded["status"]["containerStatuses"] = [{"name": "c0", "containerID": "containerd://abc"}]
    assert serve(claims(recorded, waiting), GPU, ["x"]).pod == "waiting"
    forged = pod("forged", None, [{GPU: "1"}], scheduler="other")
    forged["metadata"]["annotations"][ALLOCATED] = json.dumps({"c0": ["GPU-3"]})
    with pytest.raises(ClaimError, match="no pod bound to this node is waiting"):
        claims(forged).find(GPU, ["x"], gpu_of)  # the pod that wrote it is refused, as before


def test_fraction_memory_comes_from_the_container_or_the_single_sharer() -> None:
    both = pod(
        "both",
        {"gpus": [{"index": 2, "milli": 500, "memoryMiB": 8192}]},
        [{GPU_MILLI: "300", GPU_MEMORY: "6144"}, {GPU_MILLI: "200"}],
    )
    c = claims(both)
    first = serve(c, GPU_MILLI, ["GPU-0::000"] * 300)
    second = serve(c, GPU_MILLI, ["GPU-0::000"] * 200)
    assert (first.uuids, first.milli, first.memory_mib) == (("GPU-2",), 300, 6144)
    assert (second.milli, second.memory_mib) == (200, None)  # pod-level memory cannot be split for it
    alone = claims(
        pod("alone", {"gpus": [{"index": 1, "milli": 250, "memoryMiB": 4096}]}, [{GPU_MILLI: "250"}])
    )
    assert serve(alone, GPU_MILLI, ["GPU-0::000"] * 250).memory_mib == 4096


def test_an_assignment_whose_uuid_contradicts_the_node_is_refused() -> None:
    c = claims(pod("p", {"gpus": [{"index": 1, "uuid": "GPU-3"}]}, [{GPU: "1"}]))
    with pytest.raises(ClaimError, match="refusing to guess"):
        c.find(GPU, ["x"], gpu_of)


def test_an_assignment_naming_a_gpu_the_node_lacks_is_refused() -> None:
    c = claims(pod("p", {"gpus": [{"index": 7}]}, [{GPU: "1"}]))
    with pytest.raises(ClaimError, match="names GPU 7, which this node does not have"):
        c.find(GPU, ["x"], gpu_of)


def test_a_short_assignment_is_refused_not_padded() -> None:
    c = claims(pod("p", {"gpus": [{"index": 0}]}, [{GPU: "2"}]))
    with pytest.raises(ClaimError, match="needs 2 GPUs"):
        c.find(GPU, ["x", "y"], gpu_of)


def test_a_malformed_assignment_is_refused_with_the_parse_error() -> None:
    p = pod("p", None, [{GPU: "1"}])
    p["metadata"]["annotations"][ASSIGNMENT] = "{not json"
    with pytest.raises(ClaimError, match=r"bad tessellate\.dev/assignment annotation: not JSON"):
        claims(p).find(GPU, ["x"], gpu_of)


def test_served_claims_are_recorded_on_the_pod_source() -> None:
    source = Pods(pod("p", {"gpus": [{"index": 0}]}, [{GPU: "1"}]))
    c = Claims(source, lambda i: UUIDS[i])
    serve(c, GPU, ["x"])
    assert [(r.pod, r.container, r.uuids) for r in source.recorded] == [("p", "c0", ("GPU-0",))]
