"""List-then-watch with client-go's Reflector rules.

List, hand the whole set to the handler, then watch from the list's
resourceVersion. A broken connection resumes from the last version seen; a
410 Gone (as an HTTP status or an ERROR event in the stream) means that
version is too old, so the handler gets a fresh list instead. Versions are
opaque: only stored and sent back, never compared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tessellate.kube import ApiError, KubeClient, abort_watch

log = logging.getLogger("tessellate.informer")

ABSENT_RETRY_SECONDS = 30.0
"""How often an optional resource that is not served (a CRD not installed) is looked for."""

Replace = Callable[[list[dict[str, Any]]], None]
Handle = Callable[[str, dict[str, Any]], None]


class Reflector:
    def __init__(
        self,
        api: KubeClient,
        path: str,
        replace: Replace,
        handle: Handle,
        stop: threading.Event,
        params: dict[str, Any] | None = None,
        watch_timeout: int = 300,
        optional: bool = False,
    ):
        self.api = api
        self.path = path
        self.replace = replace
        self.handle = handle
        self.stop = stop
        self.params = params or {}
        self.watch_timeout = watch_timeout
        self.optional = optional
        """A resource that may not be served (a CRD not installed): 404 means "none", not failure."""
        self.missing = False
        self.synced = threading.Event()
        self.relists = 0
        self._relisted = threading.Condition()
        self._relist_requested = False
        self._response: Any = None
        self.failing_since: float | None = None
        """Monotonic time of the first list or watch failure since the last success (None: fine)."""
        self._thread = threading.Thread(target=self._run, name=f"reflector {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def resync(self, timeout: float = 60.0) -> bool:
        """Relist now (e.g. on becoming leader) and wait until `replace` has the result.

        The list runs on the reflector's own thread, between two watches: a list
        taken on another thread could land after newer watch events and undo them.
        """
        with self._relisted:
            target = self.relists + 1
            self._relist_requested = True
        response = self._response
        if response is not None:
            abort_watch(response)  # wakes the watch's blocking read
        with self._relisted:
            return self._relisted.wait_for(lambda: self.relists >= target, timeout)

    def _run(self) -> None:
        version = ""
        delay = 0.2
        while not self.stop.is_set():
            try:
                with self._relisted:
                    if self._relist_requested:
                        self._relist_requested, version = False, ""
                if not version:
                    items, version = self.api.list_all(self.path, **self.params)
                    self.failing_since, self.missing = None, False
                    self.replace(items)
                    with self._relisted:
                        self.relists += 1
                        self._relisted.notify_all()
                    self.synced.set()
                version = self._watch(version)
                delay = 0.2
            except ApiError as exc:
                if self.optional and exc.is_not_found and not version:
                    self._absent()
                    continue
                if exc.is_gone:
                    log.info("watch %s: %s; relisting", self.path, exc.message)
                    version = ""
                    continue
                self._pause(exc, delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # network trouble: resume from the last version
                if self._relist_requested:
                    continue  # we cut the watch ourselves
                self._pause(exc, delay)
                delay = min(delay * 2, 30.0)

    def _absent(self) -> None:
        """The resource is not served: hand over an empty list and look again in a while."""
        if not self.missing:
            log.warning("%s is not served (is its CRD installed?); treating it as empty", self.path)
            self.missing = True
            self.replace([])
        self.failing_since = None
        self.synced.set()
        self.stop.wait(ABSENT_RETRY_SECONDS)

    def _pause(self, exc: Exception, delay: float) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.warning("watch %s failed (%s); retrying in %.1fs", self.path, exc, delay)
        self.stop.wait(delay)

    def _watch(self, version: str) -> str:
        events = self.api.watch(
            self.path, version, timeout_seconds=self.watch_timeout, opened=self._opened, **self.params
        )
        for event in events:
            if self.stop.is_set() or self._relist_requested:
                break
            meta = event.object.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            if event.type != "BOOKMARK":
                self.handle(event.type, event.object)
        return version

    def _opened(self, response: Any) -> None:
        self.failing_since = None
        self._response = response
        if self._relist_requested:  # asked for while this watch was being opened
            abort_watch(response)
