"""A thin JSON client for the Kubernetes API.

The official `kubernetes` package does the hard parts (kubeconfig, in-cluster
service-account tokens and their rotation, exec plugins, TLS); this module
only sends requests and returns plain dicts. Turning every watch event into
generated model objects costs more than the scheduling decision itself, so the
hot path (list, watch, bind) stays on raw JSON.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tessellate.scheduler.http1 import ConnectionPool, endpoint

JSON = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server, with its `Status` reason and message."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = ""):
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def is_gone(self) -> bool:
        """410: the resourceVersion is too old; the caller must relist."""
        return self.status == 410

    @property
    def is_conflict(self) -> bool:
        return self.status == 409

    @property
    def is_not_found(self) -> bool:
        return self.status == 404


@dataclass
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: JSON


class TokenBucket:
    """Client-side rate limit like client-go's (qps steady rate, burst capacity)."""

    def __init__(self, qps: float, burst: int):
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.qps <= 0:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.qps
            time.sleep(wait)


def load_configuration(kubeconfig: str | None) -> k8s_client.Configuration:
    """Kubeconfig when given (or $KUBECONFIG), else the pod's in-cluster service account."""
    cfg = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return cfg
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config(client_configuration=cfg)
        except (k8s_config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise k8s_config.ConfigException(
                "no Kubernetes credentials: pass --kubeconfig PATH, set $KUBECONFIG, "
                "or run inside a pod with a service account"
            ) from exc
    return cfg


class KubeClient:
    """GET/POST/PUT/PATCH/DELETE and streaming watches, returning dicts.

    Thread-safe: urllib3's pool is, and the rate limiter is locked.
    """

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        qps: float = 0,
        burst: int = 0,
        pool_size: int = 32,
        user_agent: str = "tessellate",
    ):
        configuration.connection_pool_maxsize = max(pool_size, configuration.connection_pool_maxsize or 0)
        self.configuration = configuration
        self._api = k8s_client.ApiClient(configuration)
        self._pool: urllib3.PoolManager = self._api.rest_client.pool_manager
        self.host = configuration.host.rstrip("/")
        self.user_agent = user_agent
        self.limiter = TokenBucket(qps, burst or int(qps * 2))
        self._fast = _fast_pool(configuration, pool_size)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None, qps: float = 0, burst: int = 0) -> KubeClient:
        return cls(load_configuration(kubeconfig), qps=qps, burst=burst)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        # auth_settings() runs the refresh hook (rotated in-cluster tokens, exec plugins).
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"].title()] = setting["value"]
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: JSON | list | None = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        self.limiter.acquire()
        target = path + (f"?{urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = self._headers(content_type if data is not None else None)
        if self._fast is not None:
            status, payload = self._fast.request(method, target, headers, data, timeout)
        else:
            resp = self._pool.request(
                method,
                self.host + target,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=10.0, read=timeout),
                retries=False,
            )
            status, payload = resp.status, resp.data
        if status >= 300:
            raise _api_error(status, payload, method, path)
        return json.loads(payload) if payload else {}

    def get(self, path: str, **params: Any) -> JSON:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: JSON, **params: Any) -> JSON:
        return self.request("POST", path, body, params=params or None)

    def put(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: JSON | list, kind: str = "merge") -> JSON:
        types = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }
        return self.request("PATCH", path, body, content_type=types[kind])

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body)

    def list_all(self, path: str, page_size: int = 500, **params: Any) -> tuple[list[JSON], str]:
        """Every item of a collection (paginated) and the list's resourceVersion."""
        items: list[JSON] = []
        cont = ""
        while True:
            query = dict(params, limit=page_size)
            if cont:
                query["continue"] = cont
            page = self.get(path, **query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, meta.get("resourceVersion", "")

    def watch(
        self,
        path: str,
        resource_version: str,
        timeout_seconds: int = 300,
        opened: Callable[[urllib3.BaseHTTPResponse], None] | None = None,
        **params: Any,
    ) -> Iterator[WatchEvent]:
        """Stream changes after `resource_version`; raises ApiError(410) when it is too old.

        A 410 can come as the HTTP status or as an ERROR event inside a 200 stream;
        both end up as the same exception so the caller relists in one place.
        `opened` receives the live response, so another thread can `abort_watch` it.
        """
        self.limiter.acquire()
        query = dict(
            params,
            watch=1,
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=timeout_seconds,
        )
        url = f"{self.host}{path}?{urlencode(query)}"
        resp = self._pool.request(
            "GET",
            url,
            headers=self._headers(),
            preload_content=False,
            timeout=urllib3.Timeout(connect=10.0, read=timeout_seconds + 30),
            retries=False,
        )
        if opened is not None:
            opened(resp)
        try:
            if resp.status >= 300:
                raise _api_error(resp.status, resp.read(), "WATCH", path)
            buffer = b""
            for chunk in resp.stream(65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type", ""), event.get("object") or {}
                    if kind == "ERROR":
                        raise ApiError(
                            int(obj.get("code") or 500),
                            obj.get("reason", "Error"),
                            obj.get("message", ""),
                            "WATCH",
                            path,
                        )
                    yield WatchEvent(kind, obj)
        finally:
            resp.release_conn()

    def close(self) -> None:
        self._pool.clear()
        if self._fast is not None:
            self._fast.close()


def _fast_pool(cfg: k8s_client.Configuration, size: int) -> ConnectionPool | None:
    """Our lean pool for plain requests, unless a proxy is configured (then urllib3 does all)."""
    if cfg.proxy:
        return None
    tls = None
    if cfg.host.startswith("https:"):
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if not cfg.verify_ssl:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif cfg.assert_hostname is False:
            tls.check_hostname = False
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    server_name = getattr(cfg, "tls_server_name", None) or None
    return ConnectionPool(endpoint(cfg.host, tls, server_name), max_idle=size)


def abort_watch(response: urllib3.BaseHTTPResponse) -> None:
    """Cut a watch from another thread: its blocking read returns with an error at once."""
    conn = getattr(response, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _api_error(status: int, payload: bytes, method: str, path: str) -> ApiError:
    reason, message = "", payload.decode(errors="replace")[:500]
    try:
        body = json.loads(payload)
        reason, message = body.get("reason", ""), body.get("message", message)
    except ValueError:
        pass
    return ApiError(status, reason, message, method, path)


def timestamp(raw: Any) -> float | None:
    """An RFC 3339 time of the API server (`creationTimestamp`, ...) in seconds since the
    epoch; None when absent or unreadable."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
