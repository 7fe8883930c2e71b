"""Reading pod requests and the assignment annotation: what users write, what we refuse."""

from __future__ import annotations

import pytest
from tessellate.placement import MILLI_PER_GPU

from tessellate.wire.assignment import AssignmentError, GpuAssignment, GpuShare, decode
from tessellate.wire.podspec import PodRequestError, cpu_milli, memory_mib, parse_quantity, pod_request


def pod(*containers: dict, init: tuple[dict, ...] = (), overhead: dict | None = None) -> dict:
    spec: dict = {"containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(containers)]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "resources": r} for i, r in enumerate(init)]
    if overhead:
        spec["overhead"] = overhead
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        ("1Gi", str(1 << 30)),
        ("1.5", "1.5"),
        ("1e3", "1000"),
        ("100Mi", str(100 << 20)),
    ],
)
def test_quantities_parse_like_kubernetes(text: str, value: str) -> None:
    assert str(parse_quantity(text).normalize()) == str(parse_quantity(value).normalize())


def test_cpu_and_memory_round_up() -> None:
    assert cpu_milli("0.0001") == 1
    assert memory_mib("1") == 1
    assert memory_mib("1Gi") == 1024


def test_whole_gpus_from_limits() -> None:
    r = pod_request(pod({"limits": {"nvidia.com/gpu": "2", "cpu": "4", "memory": "8Gi"}}))
    assert (r.request.gpu_count, r.request.gpu_milli) == (2, MILLI_PER_GPU)
    assert (r.request.cpu_milli, r.request.memory_mib) == (4000, 8192)


def test_fraction_with_memory() -> None:
    r = pod_request(
        pod({"limits": {"tessellate.dev/gpu-milli": "250", "tessellate.dev/gpu-memory-mib": "4096"}})
    )
    assert r.request.is_fraction and r.request.gpu_milli == 250
    assert r.gpu_memory_mib == 4096


def test_containers_add_up_and_init_containers_take_the_max() -> None:
    r = pod_request(
        pod(
            {"requests": {"cpu": "1"}},
            {"requests": {"cpu": "500m"}},
            init=({"requests": {"cpu": "3"}},),
            overhead={"cpu": "100m"},
        )
    )
    assert r.request.cpu_milli == 3100


def test_a_mig_limit_becomes_a_mig_request() -> None:
    r = pod_request(pod({"limits": {"nvidia.com/mig-3g.40gb": "2"}}))
    assert (r.request.mig_profile, r.request.mig_count) == ("3g.40gb", 2)
    assert r.extended == {}
    assert r.request.gpu_count == 0


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        ({"tessellate.dev/gpu-milli": "1500"}, "must be 1..999"),
        ({"tessellate.dev/gpu-milli": "1000"}, "for whole GPUs use nvidia.com/gpu"),
        ({"nvidia.com/gpu": "1", "tessellate.dev/gpu-milli": "300"}, "both whole GPUs"),
        ({"nvidia.com/mig-5g.99gb": "1"}, "unknown MIG profile '5g.99gb'"),
        ({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-3g.40gb": "1"}, "several MIG profiles"),
        ({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"}, "use one kind of GPU"),
        ({"nvidia.com/gpu": "1.5"}, "whole number"),
        ({"cpu": "lots"}, "not a Kubernetes quantity"),
        ({"tessellate.dev/gpu-memory-mib": "100"}, "only meaningful with"),
    ],
)
def test_bad_requests_say_what_is_wrong(limits: dict, needle: str) -> None:
    with pytest.raises(PodRequestError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        pod_request(pod({"limits": limits}))


def test_assignment_round_trip() -> None:
    a = GpuAssignment((GpuShare(3, 1000, "GPU-abc"), GpuShare(5, 1000)))
    assert decode(a.encode()) == a
    assert decode('{"gpus": [{"index": 0, "milli": 250, "memoryMiB": 1024}]}').gpus[0].memory_mib == 1024


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not JSON"),
        ('{"gpu": []}', "expected an object"),
        ('{"gpus": [{"index": "1"}]}', "must be an integer"),
        ('{"gpus": [{"index": 0, "milli": 1500}]}', "milli must be"),
        ('{"gpus": [{"index": 1}, {"index": 1}]}', "listed twice"),
        ('{"gpus": [{"index": -1}]}', "negative"),
    ],
)
def test_malformed_assignments_are_rejected(text: str, needle: str) -> None:
    with pytest.raises(AssignmentError, match=needle):
        decode(text)


MILLI, WHOLE, GPU_MEM = "tessellate.dev/gpu-milli", "nvidia.com/gpu", "tessellate.dev/gpu-memory-mib"


def test_a_fraction_summed_over_app_containers_names_them_and_says_what_to_do() -> None:
    with pytest.raises(PodRequestError) as refused:
        pod_request(pod({"limits": {MILLI: "600"}}, {"limits": {MILLI: "600"}}))
    message = str(refused.value)
    assert "adds up over the app containers" in message
    assert "c0: 600 + c1: 600 = 1200 milli" in message
    assert "ask for nvidia.com/gpu: 2" in message and "split the containers into separate pods" in message


def test_an_init_fraction_next_to_app_whole_gpus_asks_for_the_whole_gpus() -> None:
    r = pod_request(pod({"limits": {WHOLE: "2"}}, init=({"limits": {MILLI: "300", GPU_MEM: "4096"}},)))
    assert (r.request.gpu_count, r.request.gpu_milli, r.gpu_memory_mib) == (2, MILLI_PER_GPU, 0)


def test_an_init_whole_gpu_next_to_an_app_fraction_asks_for_the_whole_gpu() -> None:
    r = pod_request(pod({"limits": {MILLI: "300"}}, init=({"limits": {WHOLE: "1"}},)))
    assert (r.request.gpu_count, r.request.gpu_milli) == (1, MILLI_PER_GPU)
    assert not r.request.is_fraction


def test_init_and_app_fractions_take_the_largest_milli_and_memory() -> None:
    r = pod_request(
        pod(
            {"limits": {MILLI: "200"}},
            {"limits": {MILLI: "100", GPU_MEM: "2048"}},
            init=({"limits": {MILLI: "600", GPU_MEM: "1024"}}, {"limits": {MILLI: "100", GPU_MEM: "8192"}}),
        )
    )
    assert (r.request.gpu_milli, r.gpu_memory_mib) == (600, 8192)


def test_whole_gpus_and_a_fraction_in_the_app_containers_together_are_refused() -> None:
    with pytest.raises(
        PodRequestError, match=r"the app containers \(which run together\) ask\(s\) for both whole"
    ):
        pod_request(pod({"limits": {WHOLE: "1"}}, {"limits": {MILLI: "300"}}))


def _with_sidecar(sidecar: dict, app: dict, after: dict | None = None) -> dict:
    p = pod({"requests": app})
    p["spec"]["initContainers"] = [
        {"name": "side", "restartPolicy": "Always", "resources": {"requests": sidecar}}
    ]
    if after is not None:
        p["spec"]["initContainers"].append({"name": "later", "resources": {"requests": after}})
    return p


def test_sidecars_add_to_the_app_containers_and_to_later_init_containers_as_kube_scheduler_does() -> None:
    assert pod_request(_with_sidecar({"cpu": "1"}, {"cpu": "2"})).request.cpu_milli == 3000
    later = pod_request(_with_sidecar({"cpu": "1", "memory": "1Gi"}, {"cpu": "1"}, after={"cpu": "3"}))
    assert (later.request.cpu_milli, later.request.memory_mib) == (4000, 1024)


def test_a_sidecar_asking_for_a_gpu_is_refused_with_what_to_do() -> None:
    with pytest.raises(PodRequestError, match=r"init container side is a sidecar .* move the GPU request"):
        pod_request(_with_sidecar({MILLI: "100"}, {"cpu": "1"}))
