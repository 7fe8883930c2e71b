"""The scheduler's configuration file (YAML), with kube-scheduler's defaults.

Every setting has a default, so `tessellate scheduler --kubeconfig K` alone
works; a config file only names what differs. Unknown keys are an error (a
typo must not silently fall back to a default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from tessellate.placement.policies import POLICIES
from tessellate.scheduler.plugins import DEFAULT_FILTERS, FILTER_PLUGINS


class ConfigError(ValueError):
    """The config file is unreadable or names a setting or value we do not know."""


DEFAULT_POLICY = "fgd"
"""The placement policy when the config names none."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, where: str) -> float:
    """`15s`, `1.5s`, `500ms`, `2m` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like 15s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{where}: expected a duration like 15s or 500ms, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return seconds


@dataclass
class LeaderElection:
    """kube-scheduler's defaults (15s/10s/2s); the Lease lives in our namespace."""

    leaderElect: bool = True
    leaseDuration: float = 15.0
    renewDeadline: float = 10.0
    retryPeriod: float = 2.0
    resourceNamespace: str = "tessellate-system"
    resourceName: str = "tessellate-scheduler"


@dataclass
class ClientConnection:
    """Client-side rate limit. Higher than kube-scheduler's 50/100 because one bind
    is one request and the throughput target is 100+ pods/s."""

    qps: float = 500.0
    burst: int = 1000


@dataclass
class SchedulerConfig:
    schedulerName: str = "tessellate"
    policy: str = DEFAULT_POLICY
    bindAddress: str = "0.0.0.0:10259"
    podInitialBackoffSeconds: float = 1.0
    podMaxBackoffSeconds: float = 10.0
    unschedulableRetrySeconds: float = 60.0
    bindWorkers: int = 16
    maxGpuSharers: int = 0
    """Most GPU fractions (pods) one GPU may hold at once; 0: unlimited (only milli-GPU and
    GPU memory bound sharing)."""
    migPlanTimeoutSeconds: float = 180.0
    """How long a MIG pod waits for a node agent (`--mig-dynamic`) to create the instances
    planned for it before its reservation is dropped and it is tried again."""
    preemption: bool = True
    """A pod that fits nowhere may delete lower-priority pods to make room (kube-scheduler's
    DefaultPreemption); needs `delete` on pods."""
    podGroupBatchSeconds: float = 0.5
    """A pod group that does not fit one member at a time is decided as one batch by CP-SAT
    within this many seconds (`placement/batch.py`: never worse than one at a time); 0: off."""
    retryBatchSeconds: float = 0.2
    """Pods retried after a cluster change (a pod left, a node changed) are decided together,
    up to `retryBatchPods` of one priority, by CP-SAT within this many seconds
    (`placement/batch.py`: never fewer GPUs placed than one at a time); 0: off."""
    retryBatchPods: int = 16
    filters: list[str] = field(default_factory=lambda: list(DEFAULT_FILTERS))
    """The profile's Filter plugins, in order (`scheduler/plugins/`); drop one to turn it off."""
    readinessApiTimeoutSeconds: float = 30.0
    """`/readyz` fails once the API server has been unreachable this long (lists and watches
    failing), or while the scheduling loop keeps failing; `/healthz` is unaffected."""
    leaderElection: LeaderElection = field(default_factory=LeaderElection)
    clientConnection: ClientConnection = field(default_factory=ClientConnection)

    def validate(self) -> SchedulerConfig:
        if self.policy not in POLICIES:
            raise ConfigError(f"policy: unknown policy {self.policy!r}; known: {', '.join(sorted(POLICIES))}")
        if not self.schedulerName:
            raise ConfigError("schedulerName: must not be empty")
        unknown = [f for f in self.filters if f not in FILTER_PLUGINS]
        if unknown or len(set(self.filters)) != len(self.filters):
            raise ConfigError(
                f"filters: unknown or repeated plugin(s) {unknown or self.filters}; "
                f"known: {', '.join(FILTER_PLUGINS)}"
            )
        le = self.leaderElection
        if not le.leaseDuration > le.renewDeadline > le.retryPeriod:
            raise ConfigError(
                "leaderElection: need leaseDuration > renewDeadline > retryPeriod, got "
                f"{le.leaseDuration}s, {le.renewDeadline}s, {le.retryPeriod}s"
            )
        if le.renewDeadline <= 1.2 * le.retryPeriod:
            raise ConfigError(
                "leaderElection: renewDeadline must exceed 1.2 x retryPeriod (a jittered retry must fit): "
                f"{le.renewDeadline}s and {le.retryPeriod}s"
            )
        if self.bindWorkers < 1:
            raise ConfigError("bindWorkers: must be at least 1")
        if self.maxGpuSharers < 0:
            raise ConfigError(f"maxGpuSharers: must be 0 (unlimited) or positive, got {self.maxGpuSharers}")
        if self.migPlanTimeoutSeconds <= 0:
            raise ConfigError(f"migPlanTimeoutSeconds: must be positive, got {self.migPlanTimeoutSeconds}")
        if not 0 <= self.podGroupBatchSeconds <= 60:
            raise ConfigError(f"podGroupBatchSeconds: must be 0 (off) to 60, got {self.podGroupBatchSeconds}")
        if not 0 <= self.retryBatchSeconds <= 10:
            raise ConfigError(f"retryBatchSeconds: must be 0 (off) to 10, got {self.retryBatchSeconds}")
        if not 2 <= self.retryBatchPods <= 256:
            raise ConfigError(f"retryBatchPods: must be 2 to 256, got {self.retryBatchPods}")
        if self.podMaxBackoffSeconds < self.podInitialBackoffSeconds:
            raise ConfigError("podMaxBackoffSeconds must be >= podInitialBackoffSeconds")
        host, _, port = self.bindAddress.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bindAddress: expected HOST:PORT, got {self.bindAddress!r}")
        return self


_DURATION_FIELDS = {
    "leaseDuration",
    "renewDeadline",
    "retryPeriod",
    "podInitialBackoffSeconds",
    "podMaxBackoffSeconds",
    "unschedulableRetrySeconds",
    "migPlanTimeoutSeconds",
    "retryBatchSeconds",
    "readinessApiTimeoutSeconds",
}


def _fill(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise ConfigError(f"{path}: unknown setting; known here: {', '.join(known)}")
        default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default
        if is_dataclass(default):
            values[key] = _fill(type(default), raw, path)
        elif key in _DURATION_FIELDS:
            values[key] = parse_duration(raw, path)
        elif isinstance(default, list):
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                raise ConfigError(f"{path}: expected a list of names, got {raw!r}")
            values[key] = list(raw)
        elif isinstance(default, bool):
            if not isinstance(raw, bool):
                raise ConfigError(f"{path}: expected true or false, got {raw!r}")
            values[key] = raw
        elif isinstance(default, int | float):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"{path}: expected a number, got {raw!r}")
            if isinstance(default, int) and not float(raw).is_integer():
                raise ConfigError(f"{path}: expected a whole number, got {raw!r}")
            values[key] = type(default)(raw)
        else:
            values[key] = str(raw)
    return cls(**values)


def load_config(path: str | Path | None) -> SchedulerConfig:
    """Read a YAML config (None: all defaults) and validate it."""
    if path is None:
        return SchedulerConfig().validate()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _fill(SchedulerConfig, data or {}, "").validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
