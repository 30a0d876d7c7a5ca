"""Real local HTTP servers for the tests: a feed server (iCal documents with ETag / 304, swappable content, an
outage switch) and a webhook receiver (records signed POSTs, can answer 503 while "down")."""
from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FEEDS_DIR = Path(__file__).resolve().parent / "fixtures" / "feeds"


def feed_fixture(name: str) -> bytes:
    """A feed written in a platform's shape (tests/fixtures/feeds/<name>.ics), CRLF line ends as RFC 5545 says."""
    text = (FEEDS_DIR / f"{name}.ics").read_text(encoding="utf-8")
    return "\r\n".join(text.splitlines()).encode() + b"\r\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class FeedServer(_Server):
    """GET /<name>.ics serves documents[name]; status[name] forces an HTTP status; `down` closes connections."""

    def __init__(self):
        self.documents: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.down = False
        self.delay_s = 0.0
        self.etags: dict[str, str | None] = {}  # the ETag of documents[name] (default: a hash of it; None: none)
        self.last_modified: dict[str, str] = {}  # a Last-Modified for documents[name]; 304 to If-Modified-Since
        self.trickle_s = 0.0  # send the body one byte every trickle_s seconds
        super().__init__(_FeedHandler)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}.ics"

    def hits(self, name: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == f"/{name}.ics"]


class _FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.lstrip("/").split("?")[0].removesuffix(".ics")
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": dict(self.headers)})
        if srv.down:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if srv.delay_s:
            time.sleep(srv.delay_s)
        if name in srv.status:
            self.send_response(srv.status[name])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.documents.get(name)
        if body is None:
            self.send_error(404)
            return
        etag = srv.etags.get(name, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        modified = srv.last_modified.get(name)
        if (etag is not None and self.headers.get("If-None-Match") == etag) or (
                modified is not None and self.headers.get("If-Modified-Since") == modified):
            self.send_response(304)
            if etag is not None:
                self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar; charset=utf-8")
        if etag is not None:
            self.send_header("ETag", etag)
        if modified is not None:
            self.send_header("Last-Modified", modified)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.trickle_s:
            for i in range(len(body)):
                time.sleep(srv.trickle_s)
                try:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        self.wfile.write(body)


class WebhookReceiver(_Server):
    """Records every POST (headers, raw body); answers `status` (e.g. 503 while "down")."""

    def __init__(self):
        self.status = 200
        self.delay_s = 0.0
        self.answer = b""  # the body of each answer
        super().__init__(_HookHandler)

    @property
    def url(self) -> str:
        return f"{self.base}/hook"

    def received(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received()


class _HookHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body, "status": self.server.status})
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)


class Blackhole:
    """A TCP server that accepts every connection and never answers nor closes it (a receiver that swallows
    requests): a client waits for its own timeout."""

    def __init__(self):
        import socket
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.accepted: list = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"

    def _run(self):
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopped = True
        self._sock.close()
        for conn in self.accepted:
            conn.close()
