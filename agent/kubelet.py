"""Registering with the kubelet, and again whenever the kubelet restarts.

A restarting kubelet deletes every socket in its device-plugin directory and
creates a new `kubelet.sock`. The registrar notices either (our socket gone
or replaced, or a new kubelet.sock), restarts the plugin servers
that lost their socket and registers every plugin again. It polls: one
`stat` per second is cheap, portable and needs no inotify.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import grpc
from tessellate.agent.plugin import PluginServer

log = logging.getLogger("tessellate.agent.kubelet")


def identity(path: Path) -> tuple[int, int] | None:
    """Inode and change time: a deleted and recreated file differs even if its inode is reused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_ctime_ns)


class Registrar:
    def __init__(self, servers: list[PluginServer], kubelet_socket: Path, poll: float = 1.0):
        self.servers = servers
        self.kubelet_socket = kubelet_socket
        self.poll = poll
        self.registrations = 0
        """How many times all plugins were registered (a kubelet restart adds one)."""
        self.registered = threading.Event()
        self._kubelet: tuple[int, int] | None = None

    def check(self) -> None:
        """One round: restart lost servers, register when needed."""
        lost = [s for s in self.servers if not s.alive()]
        for server in lost:
            log.info("%s: socket %s is gone; serving on a new one", server.resource.name, server.socket)
            server.start()
        kubelet = identity(self.kubelet_socket)
        if kubelet is None:
            if self._kubelet is not None:
                log.warning("kubelet socket %s disappeared; waiting for it", self.kubelet_socket)
            self._kubelet = None
            self.registered.clear()
            return
        if kubelet == self._kubelet and not lost:
            return
        try:
            for server in self.servers:
                server.register(self.kubelet_socket)
        except grpc.RpcError as exc:
            log.error(
                "registration with the kubelet failed (%s); retrying",
                exc.details() if hasattr(exc, "details") else exc,
            )
            self._kubelet = None
            self.registered.clear()
            return
        self._kubelet = kubelet
        self.registrations += 1
        self.registered.set()
        names = ", ".join(s.resource.name for s in self.servers)
        log.info("registered %s with the kubelet at %s", names, self.kubelet_socket)

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.check()
            stopping.wait(self.poll)
