"""Leader election against a real kube-apiserver: acquisition, mutual exclusion,
takeover after a crash or a release, and stepping down when renewals fail.

Short timings keep the tests quick: lease 2s, renew deadline 1.5s, retry 0.3s.
A jittered retry is at most 0.3 * 2.2 = 0.66s.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from tessellate.scheduler.leader import JITTER_FACTOR, LeaderElectionConfig, LeaderElector, parse_micro_time

from tessellate.kube import ApiError, KubeClient

LEASE, RENEW, RETRY = 2.0, 1.5, 0.3
MAX_RETRY = RETRY * (1 + JITTER_FACTOR)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@dataclass
class Candidate:
    """One elector running `run` on its own thread, with its callbacks recorded."""

    elector: LeaderElector
    stop: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self.elector.config.identity

    def start(self) -> Candidate:
        def on_started() -> None:
            self.calls.append("started")
            self.started.set()

        def on_stopped() -> None:
            self.calls.append("stopped")
            self.stopped.set()

        def body() -> None:
            try:
                self.elector.run(self.stop, on_started, on_stopped)
            except BaseException as exc:  # surfaced by the test, not lost in the thread
                self.errors.append(exc)

        self.thread = threading.Thread(target=body, name=self.identity, daemon=True)
        self.thread.start()
        return self

    def halt(self, timeout: float = 10.0) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.identity} did not return from run()"


@pytest.fixture
def candidates() -> Iterator[Callable[..., Candidate]]:
    """Make and start candidates; all are stopped at the end of the test."""
    made: list[Candidate] = []

    def make(api: KubeClient, namespace: str, identity: str, *, lease: float = LEASE, **kw: Any) -> Candidate:
        cfg = LeaderElectionConfig(
            namespace,
            "tessellate",
            identity,
            lease_duration=lease,
            renew_deadline=kw.pop("renew_deadline", RENEW),
            retry_period=RETRY,
            **kw,
        )
        cand = Candidate(LeaderElector(api, cfg)).start()
        made.append(cand)
        return cand

    yield make
    for cand in made:
        cand.halt()
    for cand in made:
        assert not cand.errors, cand.errors


def lease_path(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/tessellate"


def read_lease(admin: KubeClient, namespace: str) -> dict[str, Any]:
    return admin.get(lease_path(namespace))["spec"]


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Seconds until predicate() held; fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def seconds_between(earlier: str, later: str) -> float:
    return (parse_micro_time(later) - parse_micro_time(earlier)).total_seconds()


def test_single_elector_acquires_a_fresh_lease(admin: KubeClient, namespace: str, candidates) -> None:
    before = datetime.now().astimezone()
    a = candidates(admin, namespace, "replica-a")
    assert a.started.wait(5)
    assert a.elector.is_leader
    assert a.elector.leader_identity == "replica-a"
    spec = read_lease(admin, namespace)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert parse_micro_time(spec["acquireTime"]) >= before.replace(microsecond=0)
    first_renew = spec["renewTime"]

    time.sleep(3 * RETRY)  # a few renewals: renewTime moves, acquireTime and transitions stay
    later = read_lease(admin, namespace)
    assert later["holderIdentity"] == "replica-a"
    assert later["acquireTime"] == spec["acquireTime"]
    assert later["leaseTransitions"] == 0
    assert seconds_between(first_renew, later["renewTime"]) > 0
    assert a.calls == ["started"]


def test_two_electors_never_lead_together(admin: KubeClient, namespace: str, candidates) -> None:
    a = candidates(admin, namespace, "replica-a")
    b = candidates(admin, namespace, "replica-b")
    wait_for(lambda: a.elector.is_leader or b.elector.is_leader, 5)
    samples = 0
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        leaders = [c for c in (a, b) if c.elector.is_leader]
        assert len(leaders) == 1, "exactly one replica leads"
        if samples % 25 == 0:
            assert read_lease(admin, namespace)["holderIdentity"] == leaders[0].identity
        samples += 1
        time.sleep(0.01)
    assert samples > 100
    leader, standby = (a, b) if a.elector.is_leader else (b, a)
    assert standby.calls == [] and leader.calls == ["started"]
    assert standby.elector.leader_identity == leader.identity
    assert read_lease(admin, namespace)["leaseTransitions"] == 0


def test_standby_takes_over_a_crashed_leader_after_the_lease_expires(
    admin: KubeClient, namespace: str, candidates
) -> None:
    a = candidates(admin, namespace, "replica-a", release_on_cancel=False)
    assert a.started.wait(5)
    b = candidates(admin, namespace, "replica-b")
    wait_for(lambda: b.elector.leader_identity == "replica-a", 5)

    a.halt()  # no release: to the others, a crash
    assert a.calls == ["started", "stopped"]
    last = read_lease(admin, namespace)
    assert last["holderIdentity"] == "replica-a"

    wait_for(lambda: b.elector.is_leader, LEASE + 2 * MAX_RETRY + 2)
    taken = read_lease(admin, namespace)
    assert taken["holderIdentity"] == "replica-b"
    assert taken["leaseTransitions"] == last["leaseTransitions"] + 1
    # Same host, so both wall clocks agree: b waited a full lease after a's last
    # renewal, and took over within one observation delay plus one poll of that.
    gap = seconds_between(last["renewTime"], taken["acquireTime"])
    assert LEASE - 0.05 <= gap <= LEASE + 2 * MAX_RETRY + 0.5, gap
    assert not a.elector.is_leader


def test_graceful_release_hands_over_quickly(admin: KubeClient, namespace: str, candidates) -> None:
    lease = 6.0  # long, so that "quickly" is clearly not "after expiry"
    a = candidates(admin, namespace, "replica-a", lease=lease, renew_deadline=4.0)
    assert a.started.wait(5)
    b = candidates(admin, namespace, "replica-b", lease=lease, renew_deadline=4.0)
    wait_for(lambda: b.elector.leader_identity == "replica-a", 5)

    stopped_at = time.monotonic()
    a.halt()
    assert a.calls == ["started", "stopped"]
    released = read_lease(admin, namespace)
    if released["holderIdentity"] == "":  # b may already have taken it
        assert released["leaseDurationSeconds"] == 1
        assert released["leaseTransitions"] == 0
    wait_for(lambda: b.elector.is_leader, lease)
    handover = time.monotonic() - stopped_at
    assert handover < MAX_RETRY + 1.0 < lease / 3, handover
    taken = read_lease(admin, namespace)
    assert taken["holderIdentity"] == "replica-b"
    assert taken["leaseTransitions"] == 1


def test_leader_steps_down_when_someone_else_takes_the_lease(
    admin: KubeClient, namespace: str, candidates
) -> None:
    a = candidates(admin, namespace, "replica-a")
    assert a.started.wait(5)
    while True:  # the leader renews meanwhile: retry our own optimistic write
        lease = admin.get(lease_path(namespace))
        lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=30)
        try:
            admin.put(lease_path(namespace), lease)
            break
        except ApiError as exc:
            if not exc.is_conflict:
                raise
    overwritten = time.monotonic()

    assert a.stopped.wait(RENEW + 1)
    assert time.monotonic() - overwritten < MAX_RETRY + 1.0  # seen at the next renewal, not the deadline
    assert not a.elector.is_leader
    assert a.elector.leader_identity == "intruder"
    assert a.thread is not None
    a.thread.join(5)
    assert not a.thread.is_alive()
    assert a.calls == ["started", "stopped"]
    assert read_lease(admin, namespace)["holderIdentity"] == "intruder"  # release did not clear it


def test_expiry_is_judged_from_local_observation(admin: KubeClient, namespace: str, candidates) -> None:
    """A Lease whose renewTime is ancient is still honoured for a full lease after we first see it."""
    ancient = "2001-01-01T00:00:00.000000Z"
    admin.post(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "tessellate"},
            "spec": {
                "holderIdentity": "ghost",
                "leaseDurationSeconds": 2,
                "acquireTime": ancient,
                "renewTime": ancient,
                "leaseTransitions": 7,
            },
        },
    )
    begun = time.monotonic()
    a = candidates(admin, namespace, "replica-a")
    assert a.started.wait(5)
    assert time.monotonic() - begun >= 2.0
    spec = read_lease(admin, namespace)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseTransitions"] == 8


class FlakyClient(KubeClient):
    """Fails every request while `broken`: alternately a 503 and a real connection refused."""

    broken = False
    failures = 0

    def __init__(self, good: KubeClient):
        super().__init__(copy.deepcopy(good.configuration))
        dead = copy.deepcopy(good.configuration)
        dead.host = "https://127.0.0.1:1"
        self.dead = KubeClient(dead)

    def request(self, method: str, path: str, body: Any = None, *args: Any, **kw: Any) -> dict[str, Any]:
        if self.broken:
            self.failures += 1
            if self.failures % 2:
                raise ApiError(503, "ServiceUnavailable", "injected", method, path)
            return self.dead.request(method, path, body, *args, **kw)
        return super().request(method, path, body, *args, **kw)


def test_leader_rides_out_short_api_outages_and_steps_down_after_the_deadline(
    admin: KubeClient, namespace: str, candidates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tessellate.leader")
    api = FlakyClient(admin)
    a = candidates(api, namespace, "replica-a")
    assert a.started.wait(5)

    before = read_lease(admin, namespace)["renewTime"]
    api.broken = True
    end = time.monotonic() + RENEW - RETRY - 0.4  # last renewal <= one retry ago: stays within the deadline
    while time.monotonic() < end:
        assert a.elector.is_leader
        time.sleep(0.02)
    api.broken = False
    assert api.failures >= 2
    wait_for(lambda: seconds_between(before, read_lease(admin, namespace)["renewTime"]) > 0.5, 2)
    assert a.elector.is_leader and not a.stopped.is_set()

    api.broken = True
    outage = time.monotonic()
    assert a.stopped.wait(RENEW + 2)
    assert a.elector.is_leader is False
    lost_after = time.monotonic() - outage
    assert RENEW - RETRY - 0.2 <= lost_after <= RENEW + 0.5, lost_after
    assert a.thread is not None
    a.thread.join(5)
    assert not a.thread.is_alive() and not a.errors
    assert a.calls == ["started", "stopped"]
    messages = [r.getMessage() for r in caplog.records if r.name == "tessellate.leader"]
    assert any("503" in m for m in messages)
    assert any("stepping down" in m for m in messages)
