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
from collections.abc import Callable
from typing import Any

from scheduler.kube import ApiError, KubeClient

log = logging.getLogger("tessellate.informer")

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
    ):
        self.api = api
        self.path = path
        self.replace = replace
        self.handle = handle
        self.stop = stop
        self.params = params or {}
        self.watch_timeout = watch_timeout
        self.synced = threading.Event()
        self.relists = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"reflector {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def resync(self) -> None:
        """A consistent list now (e.g. on becoming leader), handed to `replace`."""
        items, _ = self.api.list_all(self.path, **self.params)
        self.replace(items)

    def _run(self) -> None:
        version = ""
        delay = 0.2
        while not self.stop.is_set():
            try:
                if not version:
                    items, version = self.api.list_all(self.path, **self.params)
                    self.replace(items)
                    self.relists += 1
                    self.synced.set()
                version = self._watch(version)
                delay = 0.2
            except ApiError as exc:
                if exc.is_gone:
                    log.info("watch %s: %s; relisting", self.path, exc.message)
                    version = ""
                    continue
                self._pause(exc, delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # network trouble: resume from the last version
                self._pause(exc, delay)
                delay = min(delay * 2, 30.0)

    def _pause(self, exc: Exception, delay: float) -> None:
        self.last_error = str(exc)
        log.warning("watch %s failed (%s); retrying in %.1fs", self.path, exc, delay)
        self.stop.wait(delay)

    def _watch(self, version: str) -> str:
        for event in self.api.watch(self.path, version, timeout_seconds=self.watch_timeout, **self.params):
            if self.stop.is_set():
                break
            meta = event.object.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            if event.type != "BOOKMARK":
                self.handle(event.type, event.object)
        return version
