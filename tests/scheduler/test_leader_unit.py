"""Leader election without a server: MicroTime, jitter, config checks, and the
election rules against an in-memory Lease store with a hand-driven clock."""

from __future__ import annotations

import copy
import logging
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tessellate.scheduler.leader import (
    LeaderElectionConfig,
    LeaderElector,
    default_identity,
    format_micro_time,
    jittered,
    parse_micro_time,
)

from tessellate.kube import ApiError

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"


class FakeApi:
    """Just enough of the API server for one Lease: 404/409 and resourceVersion checks."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.broken = False
        self.lock = threading.Lock()

    def _store(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[path] = obj
        return copy.deepcopy(obj)

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        with self.lock:
            if self.broken:
                raise ApiError(503, "ServiceUnavailable", "injected", method, path)
            if method == "POST":
                path = f"{path}/{body['metadata']['name']}"
                if path in self.objects:
                    raise ApiError(409, "AlreadyExists", "exists", method, path)
                return self._store(path, body)
            if path not in self.objects:
                raise ApiError(404, "NotFound", "missing", method, path)
            current = self.objects[path]
            if method == "GET":
                return copy.deepcopy(current)
            if method == "PUT":
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", "stale", method, path)
                return self._store(path, body)
        raise AssertionError(method)

    def put_spec(self, spec: dict[str, Any]) -> None:
        """Another party writes the Lease (no resourceVersion check)."""
        body = {"metadata": {"name": "lock", "namespace": "ns"}, "spec": spec}
        with self.lock:
            self._store(PATH, body)

    def spec(self) -> dict[str, Any]:
        return self.objects[PATH]["spec"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeApi, identity: str, clock: Clock, **timings: float) -> LeaderElector:
    timings = {"lease_duration": 10.0, "renew_deadline": 8.0, "retry_period": 2.0, **timings}
    cfg = LeaderElectionConfig("ns", "lock", identity, **timings)  # type: ignore[arg-type]
    return LeaderElector(api, cfg, clock=clock)  # type: ignore[arg-type]


def test_micro_time_format_and_parse() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC)
    assert format_micro_time(moment) == "2026-01-02T03:04:05.000007Z"
    shifted = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert format_micro_time(shifted) == "2026-01-02T03:04:05.000007Z"
    assert MICRO_TIME.match(format_micro_time(datetime.now(UTC)))
    assert parse_micro_time("2026-01-02T03:04:05.000007Z") == moment
    assert parse_micro_time("2026-01-02T08:34:05.000007+05:30") == moment
    assert parse_micro_time("2026-01-02T03:04:05Z") == moment.replace(microsecond=0)
    with pytest.raises(ValueError):
        format_micro_time(datetime(2026, 1, 2))
    with pytest.raises(ValueError):
        parse_micro_time("2026-01-02T03:04:05")


def test_jitter_bounds() -> None:
    assert jittered(2.0, rand=lambda: 0.0) == 2.0
    assert jittered(2.0, rand=lambda: 0.999999) < 2.0 * 2.2
    samples = [jittered(2.0) for _ in range(2000)]
    assert all(2.0 <= s < 4.4 for s in samples)
    assert max(samples) - min(samples) > 2.0  # it does spread


def test_config_is_checked_like_client_go() -> None:
    with pytest.raises(ValueError, match="lease_duration"):
        LeaderElectionConfig("ns", "n", "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElectionConfig("ns", "n", "me", lease_duration=15, renew_deadline=2.4, retry_period=2)
    with pytest.raises(ValueError, match="identity"):
        LeaderElectionConfig("ns", "n", "")
    fractional = LeaderElectionConfig("ns", "n", "me", lease_duration=2.5, renew_deadline=2, retry_period=1)
    assert fractional.lease_seconds == 3  # rounded up: standbys never wait less than the leader assumes


def test_default_identity_is_hostname_and_uuid() -> None:
    host, _, tail = default_identity().rpartition("_")
    assert host and uuid.UUID(tail).version == 4
    assert default_identity() != default_identity()


def test_creates_missing_lease() -> None:
    api, clock = FakeApi(), Clock()
    me = elector(api, "a", clock, lease_duration=2.5, renew_deadline=2.0, retry_period=1.0)
    assert me.try_acquire_or_renew()
    spec = api.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]
    assert MICRO_TIME.match(spec["renewTime"])
    assert me.leader_identity == "a"


def test_expiry_counts_from_local_observation_not_server_renew_time() -> None:
    api, clock = FakeApi(), Clock()
    ancient = "2000-01-01T00:00:00.000000Z"
    api.put_spec(
        {
            "holderIdentity": "ghost",
            "leaseDurationSeconds": 10,
            "acquireTime": ancient,
            "renewTime": ancient,
            "leaseTransitions": 4,
        }
    )
    me = elector(api, "a", clock)
    assert not me.try_acquire_or_renew()  # renewTime is 26 years old, but we only just saw it
    assert me.leader_identity == "ghost"
    clock.now += 9.9
    assert not me.try_acquire_or_renew()
    clock.now += 0.2
    assert me.try_acquire_or_renew()
    spec = api.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == 5
    assert spec["acquireTime"] == spec["renewTime"] != ancient


def test_a_changed_record_restarts_the_wait() -> None:
    api, clock = FakeApi(), Clock()
    other, me = elector(api, "b", clock), elector(api, "a", clock)
    assert other.try_acquire_or_renew()
    assert not me.try_acquire_or_renew()  # observed at t=100
    clock.now += 6
    assert other.try_acquire_or_renew()  # renewed: a new record
    clock.now += 1
    assert not me.try_acquire_or_renew()  # observed the change at t=107
    clock.now += 9.5
    assert not me.try_acquire_or_renew()  # 16.5s after the first sighting, 9.5s after the change
    clock.now += 0.6
    assert me.try_acquire_or_renew()


def test_renew_keeps_acquire_time_and_transitions() -> None:
    api, clock = FakeApi(), Clock()
    me = elector(api, "a", clock)
    assert me.try_acquire_or_renew()
    first = dict(api.spec())
    clock.now += 2
    assert me.try_acquire_or_renew()
    second = api.spec()
    assert second["acquireTime"] == first["acquireTime"]
    assert second["leaseTransitions"] == first["leaseTransitions"] == 0
    assert second["renewTime"] >= first["renewTime"]
    assert api.objects[PATH]["metadata"]["resourceVersion"] != "1"


def test_renew_survives_an_unrelated_write() -> None:
    """A 409 on the fast path (e.g. someone added a label) is retried from a fresh read."""
    api, clock = FakeApi(), Clock()
    me = elector(api, "a", clock)
    assert me.try_acquire_or_renew()
    api.put_spec(dict(api.spec()))  # same record, new resourceVersion
    assert me.try_acquire_or_renew()
    assert api.spec()["leaseTransitions"] == 0


def test_stale_write_loses_to_the_winner() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 11  # a stopped renewing: b may take over
    real = api.request

    def racing(method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        answer = real(method, path, body, **kw)
        if method == "GET":  # a renews between b's read and b's write
            api.put_spec({**api.spec(), "renewTime": format_micro_time(datetime.now(UTC))})
        return answer

    api.request = racing  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "a"


def test_release_hands_over_at_once_and_never_clears_another_hold() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    spec = api.spec()
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert b.try_acquire_or_renew()  # no waiting for an empty holder
    assert api.spec()["leaseTransitions"] == 1
    assert a.release()  # a's last record is not its own any more: nothing written
    assert api.spec()["holderIdentity"] == "b"


def test_run_steps_down_when_renewals_fail_past_the_deadline() -> None:
    api = FakeApi()
    cfg = LeaderElectionConfig("ns", "lock", "a", lease_duration=1.0, renew_deadline=0.5, retry_period=0.1)
    me = LeaderElector(api, cfg)  # type: ignore[arg-type]
    stop, started, stopped = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(target=me.run, args=(stop, started.set, stopped.set), daemon=True)
    thread.start()
    try:
        assert started.wait(2)
        assert me.is_leader
        api.broken = True
        assert stopped.wait(2)
        assert not me.is_leader
        thread.join(2)
        assert not thread.is_alive()
        assert api.spec()["holderIdentity"] == "a"  # the release could not be written either
    finally:
        stop.set()
        thread.join(2)


class CreateFailsApi(FakeApi):
    """GET says the Lease is missing; POST fails with `status`: 404 is what the API server says
    when the Lease's namespace does not exist."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__()
        self.error = (status, reason, message)

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        if method == "POST":
            raise ApiError(*self.error, method, path)
        return super().request(method, path, body, **kw)


def test_a_missing_namespace_is_a_warning_with_what_to_do_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, clock = CreateFailsApi(404, "NotFound", 'namespaces "ns" not found'), Clock()
    me = elector(api, "a", clock)  # retry_period 2s
    caplog.set_level(logging.DEBUG, logger="tessellate.leader")
    warned_at = []
    for _ in range(150):  # five minutes of retries
        caplog.clear()
        assert not me.try_acquire_or_renew()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) <= 1
        if warnings:
            warned_at.append(clock.now)
            message = warnings[0].getMessage()
            assert 'namespaces "ns" not found' in message
            assert "does namespace ns exist?" in message
            assert "kubectl apply -k manifests/" in message
            assert "leaderElection.resourceNamespace" in message
            assert "--leader-elect=false" in message
        # Between the warnings the retries say nothing at INFO (debug only).
        assert all(r.levelno <= logging.DEBUG for r in caplog.records if r not in warnings)
        clock.now += 2.0
    assert warned_at == [100.0, 160.0, 220.0, 280.0, 340.0]
    assert not me.is_leader and me.leader_identity is None


def test_other_create_failures_keep_their_info_log(caplog: pytest.LogCaptureFixture) -> None:
    api, clock = CreateFailsApi(403, "Forbidden", "cannot create leases"), Clock()
    me = elector(api, "a", clock)
    caplog.set_level(logging.INFO, logger="tessellate.leader")
    for _ in range(3):
        assert not me.try_acquire_or_renew()
        clock.now += 2.0
    creates = [r for r in caplog.records if r.getMessage().startswith("cannot create lease")]
    assert [r.levelno for r in creates] == [logging.INFO] * 3
    assert "403 Forbidden" in creates[0].getMessage()
