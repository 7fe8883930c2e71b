"""The lean HTTP/1.1 pool against a real (threaded, loopback) HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tessellate.scheduler.http1 import ConnectionPool, endpoint


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(200, b"echo:" + body)

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"bye")
            self.close_connection = True
        elif self.path == "/missing":
            self._reply(404, b'{"reason":"NotFound"}')
        else:
            self._reply(200, self.path.encode())

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def pool_for(srv: ThreadingHTTPServer) -> ConnectionPool:
    host, port = srv.server_address[:2]
    return ConnectionPool(endpoint(f"http://{host}:{port}", None))


def test_keep_alive_reuses_one_connection(server: ThreadingHTTPServer) -> None:
    pool = pool_for(server)
    for i in range(5):
        assert pool.request("GET", f"/n{i}", {}, None, 5) == (200, f"/n{i}".encode())
    assert len(pool._idle) == 1


def test_post_body_and_status_codes(server: ThreadingHTTPServer) -> None:
    pool = pool_for(server)
    assert pool.request("POST", "/x", {"Content-Type": "application/json"}, b'{"a":1}', 5) == (
        200,
        b'echo:{"a":1}',
    )
    assert pool.request("GET", "/missing", {}, None, 5)[0] == 404


def test_chunked_bodies_are_reassembled(server: ThreadingHTTPServer) -> None:
    assert pool_for(server).request("GET", "/chunked", {}, None, 5) == (200, b"hello chunked world")


def test_connection_close_is_honoured(server: ThreadingHTTPServer) -> None:
    pool = pool_for(server)
    assert pool.request("GET", "/close", {}, None, 5) == (200, b"bye")
    assert not pool._idle
    assert pool.request("GET", "/again", {}, None, 5) == (200, b"/again")


def test_an_idle_connection_the_server_dropped_is_retried_once(server: ThreadingHTTPServer) -> None:
    pool = pool_for(server)
    pool.request("GET", "/first", {}, None, 5)
    conn = pool._idle[0]
    conn.sock.shutdown(socket.SHUT_RDWR)  # as if the server had timed the idle connection out
    assert pool.request("GET", "/second", {}, None, 5) == (200, b"/second")


def test_threads_share_the_pool(server: ThreadingHTTPServer) -> None:
    pool = pool_for(server)
    results: list[tuple[int, bytes]] = []

    def worker(i: int) -> None:
        for j in range(20):
            results.append(pool.request("POST", "/p", {}, f"{i}-{j}".encode(), 5))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted((200, f"echo:{i}-{j}".encode()) for i in range(8) for j in range(20))


def test_refused_connection_raises_oserror() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = ConnectionPool(endpoint(f"http://127.0.0.1:{port}", None), connect_timeout=2)
    with pytest.raises(OSError):
        pool.request("GET", "/", {}, None, 2)
