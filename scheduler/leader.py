"""Lease-based leader election with client-go's semantics.

Only one Tessellate replica may bind pods at a time; the others wait as hot
standbys. The algorithm follows client-go's `tools/leaderelection` so that the
Lease behaves as kubectl users and other controllers expect:

- candidates poll every `retry_period` (jittered by 1.2) and take the Lease when
  it is free, missing, or expired;
- expiry is judged from when *this* process last saw the Lease record change
  (local monotonic clock) plus its `leaseDurationSeconds`, never by comparing the
  server's `renewTime` with the local clock, so clock skew between hosts cannot
  make two replicas lead at once;
- every write carries the resourceVersion it was based on, so concurrent
  candidates race safely: a 409 means someone else won;
- the leader renews every `retry_period` and steps down if no renewal succeeds
  within `renew_deadline` (which is shorter than the lease, so it stops before
  anyone else may start).
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3

from tessellate.kube import JSON, ApiError, KubeClient

log = logging.getLogger("tessellate.leader")

JITTER_FACTOR = 1.2
"""client-go's `JitterFactor`: candidates wait retry_period * [1, 1 + 1.2)."""

NOT_FOUND_WARNING_INTERVAL = 60.0
"""Seconds between two warnings that the Lease's namespace is missing (a 404 on create)."""

# Failures that mean "the API server could not be reached or answered badly":
# they cost a retry, never the process.
_TRANSIENT = (ApiError, urllib3.exceptions.HTTPError, OSError, ValueError)


def format_micro_time(moment: datetime) -> str:
    """metav1.MicroTime's JSON form: RFC3339, exactly 6 fractional digits, UTC `Z`."""
    if moment.tzinfo is None:
        raise ValueError("MicroTime needs an aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    """Inverse of `format_micro_time`; also accepts other RFC3339 offsets and precisions."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"RFC3339 time without offset: {text!r}")
    return moment.astimezone(UTC)


def jittered(
    period: float, factor: float = JITTER_FACTOR, rand: Callable[[], float] = random.random
) -> float:
    """client-go's wait.Jitter: period + up to factor*period, so candidates do not poll in lockstep."""
    return period * (1.0 + factor * rand())


def default_identity() -> str:
    """`<hostname>_<uuid4>` like kube-scheduler: unique even when two replicas share a hostname."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Which Lease to contend for, as whom, and the client-go timings (seconds)."""

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        # The same checks as client-go's NewLeaderElector: the leader must give up
        # (renew_deadline) before a standby may take over (lease_duration), and a
        # jittered retry must fit into the renew deadline.
        if not self.namespace or not self.name:
            raise ValueError("leader election needs the Lease's namespace and name")
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if self.retry_period <= 0:
            raise ValueError("retry_period must be greater than zero")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than retry_period * {JITTER_FACTOR}")

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds to write; rounded up so others never wait less than we assume."""
        return max(1, math.ceil(self.lease_duration))

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"


class LeaderElector:
    """Contends for one Lease; `run` blocks, the properties are safe from any thread."""

    def __init__(
        self,
        api: KubeClient,
        config: LeaderElectionConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ):
        self.api = api
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._lease: JSON | None = None  # last Lease read or written: its resourceVersion guards writes
        self._observed: JSON | None = None  # its spec, to notice when the record changes
        self._observed_at = 0.0  # local clock when the record last changed
        self._leading = False  # between on_started_leading and stepping down
        self._renewed_at = -math.inf  # local clock at the start of the last successful write
        self._not_found_warned_at = -math.inf  # local clock of the last missing-namespace warning

    # ----------------------------------------------------------------- queries

    @property
    def is_leader(self) -> bool:
        """True only while this replica holds the Lease and renewed it within renew_deadline.

        Computed from the clock, so it turns false the moment the deadline passes
        even if `run` is still stuck in a slow request.
        """
        with self._lock:
            return self._leading and self.clock() < self._renewed_at + self.config.renew_deadline

    @property
    def leader_identity(self) -> str | None:
        """The holder in the last Lease record seen (None when unknown or released)."""
        with self._lock:
            holder = (self._observed or {}).get("holderIdentity")
        return holder or None

    # ----------------------------------------------------------------- main loop

    def run(
        self,
        stop: threading.Event,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
    ) -> None:
        """Acquire, lead until `stop` is set or a renewal fails, then return.

        The callbacks run on this thread and must return promptly (start the work
        elsewhere): renewals do not happen while they run. `on_stopped_leading` is
        called exactly once if `on_started_leading` was, and *before* the Lease is
        released, so the work stops before a standby may start.
        """
        if not self._acquire(stop):
            return
        try:
            on_started_leading()
            self._hold(stop)
        finally:
            with self._lock:
                self._leading = False
            try:
                on_stopped_leading()
            finally:
                if self.config.release_on_cancel:
                    self.release()

    def _acquire(self, stop: threading.Event) -> bool:
        """Poll with jitter until this replica holds the Lease (True) or `stop` is set (False)."""
        cfg = self.config
        log.info("waiting to acquire lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                with self._lock:
                    self._leading = True
                log.info("acquired lease %s/%s", cfg.namespace, cfg.name)
                return True
            if stop.wait(jittered(cfg.retry_period)):
                break
        return False

    def _hold(self, stop: threading.Event) -> None:
        """Renew every retry_period; return when stopped, outbid, or past renew_deadline."""
        cfg = self.config
        while True:
            remaining = self._renewed_at + cfg.renew_deadline - self.clock()
            if remaining <= 0:
                log.warning(
                    "failed to renew lease %s/%s within %.1fs; stepping down",
                    cfg.namespace,
                    cfg.name,
                    cfg.renew_deadline,
                )
                return
            if stop.wait(min(cfg.retry_period, remaining)):
                log.info("stop requested; leaving lease %s/%s", cfg.namespace, cfg.name)
                return
            if self._renewed_at + cfg.renew_deadline <= self.clock():
                continue  # the deadline passed while waiting: report it above
            if self.try_acquire_or_renew():
                continue
            holder = self.leader_identity
            if holder and holder != cfg.identity:
                log.warning("lease %s/%s was taken by %s; stepping down", cfg.namespace, cfg.name, holder)
                return

    # ----------------------------------------------------------------- one round

    def try_acquire_or_renew(self) -> bool:
        """One election round (client-go's tryAcquireOrRenew); True if this replica now holds the Lease.

        Never raises for API or connection errors: they are logged and count as a
        failed round, so that the caller's deadline decides.
        """
        cfg = self.config
        started = self.clock()
        now = format_micro_time(self.wall_clock())
        timeout = self._request_timeout(started)

        # Fast path: a current leader writes over the Lease it last wrote, saving a GET.
        with self._lock:
            lease, observed = self._lease, self._observed
            fast = self._holds(observed) and self.clock() < self._expiry()
        if fast and lease is not None and observed is not None:
            spec = self._record(now, observed.get("acquireTime") or now, observed.get("leaseTransitions", 0))
            try:
                self._written(self._put(lease, spec, timeout), started)
                return True
            except _TRANSIENT as exc:
                log.info("optimistic renew of %s/%s failed, rereading: %s", cfg.namespace, cfg.name, exc)

        # Slow path: read the current record (create it if missing).
        try:
            current = self.api.request("GET", cfg.path, timeout=timeout)
        except ApiError as exc:
            if not exc.is_not_found:
                log.warning("cannot read lease %s/%s: %s", cfg.namespace, cfg.name, exc)
                return False
            return self._create(now, started, timeout)
        except _TRANSIENT as exc:
            log.warning("cannot read lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False

        old = current.get("spec") or {}
        with self._lock:
            self._lease = current
            if old != self._observed:
                self._observed, self._observed_at = old, self.clock()
            holder = old.get("holderIdentity") or ""
            if holder and holder != cfg.identity:
                self._leading = False  # someone else is recorded: leadership is over, whatever happens next
                if self.clock() < self._expiry():
                    log.debug("lease %s/%s is held by %s and not expired", cfg.namespace, cfg.name, holder)
                    return False

        transitions = int(old.get("leaseTransitions") or 0)
        if holder == cfg.identity:
            spec = self._record(now, old.get("acquireTime") or now, transitions)
        else:
            spec = self._record(now, now, transitions + 1)
        try:
            self._written(self._put(current, spec, timeout), started)
        except _TRANSIENT as exc:
            level = logging.INFO if isinstance(exc, ApiError) and exc.is_conflict else logging.WARNING
            log.log(level, "cannot update lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if holder != cfg.identity:
            log.info("took over lease %s/%s from %r", cfg.namespace, cfg.name, holder)
        return True

    def release(self) -> bool:
        """Hand the Lease back like client-go: empty holder, 1s duration, so a standby takes it at once.

        Only done while the last record seen names this replica, and guarded by its
        resourceVersion, so it can never clear someone else's hold.
        """
        cfg = self.config
        with self._lock:
            self._leading = False
            lease, observed = self._lease, self._observed
        if lease is None or observed is None or observed.get("holderIdentity") != cfg.identity:
            return True
        now = format_micro_time(self.wall_clock())
        spec = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(observed.get("leaseTransitions") or 0),
        }
        try:
            written = self._put(lease, spec, cfg.renew_deadline)
        except _TRANSIENT as exc:
            log.warning("cannot release lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        with self._lock:
            self._lease, self._observed, self._observed_at = written, written.get("spec") or {}, self.clock()
        log.info("released lease %s/%s", cfg.namespace, cfg.name)
        return True

    # ----------------------------------------------------------------- helpers

    def _holds(self, spec: JSON | None) -> bool:
        return bool(spec) and (spec or {}).get("holderIdentity") == self.config.identity

    def _expiry(self) -> float:
        """Local time at which the observed record expires (call with the lock held)."""
        seconds = (self._observed or {}).get("leaseDurationSeconds") or 0
        return self._observed_at + float(seconds)

    def _request_timeout(self, started: float) -> float:
        """A leader's request must not outlive its renew deadline; candidates get the full deadline."""
        with self._lock:
            leading, renewed_at = self._leading, self._renewed_at
        if leading:
            return max(0.05, renewed_at + self.config.renew_deadline - started)
        return self.config.renew_deadline

    def _record(self, now: str, acquire_time: str, transitions: int) -> JSON:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": self.config.lease_seconds,
            "acquireTime": acquire_time,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _put(self, lease: JSON, spec: JSON, timeout: float) -> JSON:
        """Replace the record, keeping the metadata (resourceVersion) it was read with."""
        body = dict(lease, spec={**(lease.get("spec") or {}), **spec})
        return self.api.request("PUT", self.config.path, body, timeout=timeout)

    def _create(self, now: str, started: float, timeout: float) -> bool:
        cfg = self.config
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": cfg.name, "namespace": cfg.namespace},
            "spec": self._record(now, now, 0),
        }
        collection = cfg.path.rsplit("/", 1)[0]
        try:
            created = self.api.request("POST", collection, body, timeout=timeout)
        except ApiError as exc:
            if exc.is_not_found:
                self._missing_namespace(exc)
            else:
                log.info("cannot create lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        except _TRANSIENT as exc:
            log.info("cannot create lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        self._written(created, started)
        log.info("created lease %s/%s", cfg.namespace, cfg.name)
        return True

    def _missing_namespace(self, exc: ApiError) -> None:
        """A 404 on create: the Lease's namespace does not exist, and will not until someone creates it.

        Say what to do, as a warning, but only once per NOT_FOUND_WARNING_INTERVAL: a candidate
        retries every retry_period for as long as it runs, and a warning each time buries the log.
        """
        cfg = self.config
        now = self.clock()
        if now < self._not_found_warned_at + NOT_FOUND_WARNING_INTERVAL:
            log.debug("cannot create lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return
        self._not_found_warned_at = now
        log.warning(
            "cannot create lease %s/%s (404: %s): does namespace %s exist? Create it with the Lease's "
            "RBAC by `kubectl apply -k manifests/`, or name a namespace that exists in "
            "leaderElection.resourceNamespace of a --config file, or run one replica with "
            "--leader-elect=false. Not leading until then; retrying every %gs (this warning at most "
            "once a minute)",
            cfg.namespace,
            cfg.name,
            exc.message,
            cfg.namespace,
            cfg.retry_period,
        )

    def _written(self, lease: JSON, started: float) -> None:
        """Remember a successful write: the renewal counts from when the request started."""
        with self._lock:
            self._lease = lease
            self._observed, self._observed_at = lease.get("spec") or {}, self.clock()
            self._renewed_at = started
