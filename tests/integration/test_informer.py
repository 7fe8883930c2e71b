"""List+watch against a real API server whose watch is served by etcd, so 410 is real."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from tessellate.scheduler.informer import Reflector

from integration import cluster
from tessellate.kube import ApiError, KubeClient


@pytest.fixture(scope="module")
def etcd_watch_plane(worker_id: str) -> Iterator[cluster.ControlPlane]:
    """A second control plane without the watch cache: old versions hit etcd's compaction."""
    cp = cluster.start(worker_id, apiserver_args="--watch-cache=false")
    yield cp
    cluster.stop(cp)


def compact(cp: cluster.ControlPlane, revision: str) -> None:
    """Compact etcd (its v3 JSON gateway, with the API server's client cert)."""
    ports = dict(line.split("=", 1) for line in (cp.state_dir / "ports").read_text().split())
    pki = cp.state_dir / "pki"
    http = urllib3.PoolManager(
        cert_file=str(pki / "apiserver-etcd-client.crt"),
        key_file=str(pki / "apiserver-etcd-client.key"),
        ca_certs=str(pki / "ca.crt"),
    )
    body = json.dumps({"revision": revision, "physical": True})
    resp = http.request("POST", f"https://127.0.0.1:{ports['ETCD_CLIENT_PORT']}/v3/kv/compaction", body=body)
    assert resp.status == 200, resp.data


def make_configmaps(api: KubeClient, namespace: str, count: int) -> str:
    for _ in range(count):
        api.post(f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"generateName": "c-"}})
    return api.list_all(f"/api/v1/namespaces/{namespace}/configmaps")[1]


def test_watch_from_a_compacted_version_is_410_gone(etcd_watch_plane: cluster.ControlPlane) -> None:
    api = etcd_watch_plane.client()
    ns = cluster.make_namespace(api)
    old = make_configmaps(api, ns, 2)
    compact(etcd_watch_plane, make_configmaps(api, ns, 3))
    with pytest.raises(ApiError) as err:
        for _ in api.watch(f"/api/v1/namespaces/{ns}/configmaps", old, timeout_seconds=5):
            pass
    assert err.value.is_gone, err.value


def test_reflector_relists_after_410_and_sees_everything(etcd_watch_plane: cluster.ControlPlane) -> None:
    api = etcd_watch_plane.client()
    ns = cluster.make_namespace(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    stale = make_configmaps(api, ns, 2)
    compact(etcd_watch_plane, make_configmaps(api, ns, 3))

    lists: list[int] = []
    real_list_all = api.list_all

    def list_all(p: str, **params: Any) -> tuple[list[dict], str]:
        items, version = real_list_all(p, **params)
        lists.append(len(items))
        return (items, stale) if len(lists) == 1 else (items, version)  # first list: a stale version

    api.list_all = list_all  # type: ignore[method-assign]
    seen: dict[str, dict] = {}
    replaced = threading.Event()

    def replace(items: list[dict]) -> None:
        seen.clear()
        seen.update({i["metadata"]["name"]: i for i in items})
        if len(lists) >= 2:
            replaced.set()

    def handle(kind: str, obj: dict) -> None:
        if kind == "DELETED":
            seen.pop(obj["metadata"]["name"], None)
        else:
            seen[obj["metadata"]["name"]] = obj

    stop = threading.Event()
    reflector = Reflector(api, path, replace, handle, stop, watch_timeout=5)
    reflector.start()
    try:
        assert replaced.wait(30), "the reflector never relisted after 410"
        assert lists == [5, 5]
        api.post(path, {"metadata": {"name": "after-relist"}})
        for _ in range(100):
            if "after-relist" in seen:
                break
            stop.wait(0.1)
        assert "after-relist" in seen, "the watch did not resume after the relist"
        assert len(seen) == 6
    finally:
        stop.set()


def test_resync_while_objects_arrive_never_loses_them(control_plane: cluster.ControlPlane) -> None:
    """A leader's relist races with the watch: nothing created meanwhile may vanish from the cache."""
    api = control_plane.client()
    ns = cluster.make_namespace(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    seen: dict[str, dict] = {}
    lock = threading.Lock()

    def replace(items: list[dict]) -> None:
        with lock:
            seen.clear()
            seen.update({i["metadata"]["name"]: i for i in items})

    def handle(kind: str, obj: dict) -> None:
        with lock:
            if kind == "DELETED":
                seen.pop(obj["metadata"]["name"], None)
            else:
                seen[obj["metadata"]["name"]] = obj

    real_list_all = api.list_all

    def slow_list_all(p: str, **params: Any) -> tuple[list[dict], str]:
        result = real_list_all(p, **params)
        time.sleep(0.5)  # a loaded API server: objects are created while the list is in flight
        return result

    api.list_all = slow_list_all  # type: ignore[method-assign]
    stop = threading.Event()
    reflector = Reflector(api, path, replace, handle, stop)
    reflector.start()
    try:
        assert reflector.synced.wait(30)
        for round_ in range(5):
            creator = threading.Thread(
                target=lambda r=round_: [
                    api.post(path, {"metadata": {"name": f"r{r}-{i}"}}) for i in range(20)
                ]
            )
            creator.start()
            assert reflector.resync(timeout=30), "resync did not complete"
            creator.join()
        expected = {i["metadata"]["name"] for i in api.list_all(path)[0]}
        for _ in range(100):
            with lock:
                if set(seen) == expected:
                    break
            stop.wait(0.1)
        with lock:
            assert set(seen) == expected, sorted(expected - set(seen))
        assert reflector.relists == 6
    finally:
        stop.set()
