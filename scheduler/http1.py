"""A lean HTTP/1.1 keep-alive connection pool for the API server's short requests.

Binding a pod is one small POST; at hundreds of binds per second urllib3 and
http.client spend about 1.4 ms of CPU per request (header objects, the email
parser), against 0.4 ms here (benchmarks/scheduler_throughput.py measures the
result). On a 2-core node that CPU is taken from the scheduling decisions and
from the API server itself. Watches stay on urllib3; this handles only requests
with a complete response body.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEADER_LINES = 200


class HttpError(OSError):
    """The connection broke or the server answered something that is not HTTP/1.1."""


class StaleConnection(ConnectionResetError):
    """The server had closed this idle connection; the request was never processed."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: ssl.SSLContext | None
    server_hostname: str | None


def endpoint(url: str, tls: ssl.SSLContext | None, server_hostname: str | None = None) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported API server URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "localhost"
    return Endpoint(host, port, tls if parts.scheme == "https" else None, server_hostname or host)


class _Connection:
    def __init__(self, ep: Endpoint, timeout: float):
        sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.tls is not None:
            sock = ep.tls.wrap_socket(sock, server_hostname=ep.server_hostname)
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.used = False

    def close(self) -> None:
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass

    def exchange(self, head: bytes, body: bytes | None, timeout: float) -> tuple[int, bytes, bool]:
        """Send one request; return (status, body, keep_alive)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(head + body if body else head)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise StaleConnection(str(exc)) from exc
        status_line = self.reader.readline(65537)
        if not status_line:
            raise StaleConnection("the server closed the connection before answering")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep_alive = parts[0] == b"HTTP/1.1"
        for _ in range(_MAX_HEADER_LINES):
            line = self.reader.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep_alive = b"close" not in value.lower()
        else:
            raise HttpError("too many response header lines")
        if chunked:
            payload = self._read_chunked()
        elif length is not None:
            payload = self.reader.read(length)
            if len(payload) != length:
                raise ConnectionResetError("response body cut short")
        elif status in (204, 304) or 100 <= status < 200:
            payload = b""
        else:  # no length: the body runs to the end of the connection
            payload, keep_alive = self.reader.read(), False
        return status, payload, keep_alive

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size_line = self.reader.readline(65537)
            if not size_line:
                raise ConnectionResetError("chunked body cut short")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.reader.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunk = self.reader.read(size + 2)
            if len(chunk) != size + 2:
                raise ConnectionResetError("chunked body cut short")
            chunks.append(chunk[:-2])


class ConnectionPool:
    """Idle keep-alive connections to one API server, shared by threads."""

    def __init__(self, ep: Endpoint, max_idle: int = 32, connect_timeout: float = 10.0):
        self.ep = ep
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._host_header = f"{ep.host}:{ep.port}"

    def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn = self._take()
        try:
            status, payload, keep_alive = conn.exchange(head, body, timeout)
        except (ConnectionError, ssl.SSLError, HttpError, TimeoutError, OSError) as exc:
            conn.close()
            # A reused connection the server had already closed fails before any answer:
            # that is the only case worth one retry on a fresh connection.
            if not conn.used or not isinstance(exc, StaleConnection):
                raise
            conn = _Connection(self.ep, self.connect_timeout)
            try:
                status, payload, keep_alive = conn.exchange(head, body, timeout)
            except BaseException:
                conn.close()
                raise
        conn.used = True
        if keep_alive:
            self._give_back(conn)
        else:
            conn.close()
        return status, payload

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Connection(self.ep, self.connect_timeout)

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
