"""A small fault-injecting HTTP reverse proxy on loopback.

Put it in front of a fake provider (moto's SES, localstripe) and point the
clients at it; then switch its mode while the clusters work:

* `pass`: forward every request and relay the answer;
* `500` / `429`: answer that status without forwarding (nothing reached the
  provider, as when it is down or throttling);
* `timeout`: hold the request past the client's timeout, then drop the
  connection without forwarding (a network partition);
* `slow`: forward, then hold the answer past the client's timeout (the
  provider did the work; the client cannot know: the ambiguous case);
* `mixed`: 500, 429 and timeout in turn (or the modes given as `cycle`).

`match` (a function of the request's method, path, headers and body) limits
the faults to some requests, e.g. one tenant's writes; the others pass. It runs in the test
process on a thread per request; `counts` says what it did, per outcome.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MODES = ("pass", "500", "429", "timeout", "slow", "mixed")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        hang_seconds: float = 3.0,
        match: Callable[[str, str, Message, bytes], bool] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.hang_seconds = hang_seconds
        self.match = match
        self.counts: Counter[str] = Counter()
        self._mode = "pass"
        self._cycle = itertools.cycle(("500", "429", "timeout"))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, *, cycle: tuple[str, ...] = ("500", "429", "timeout")) -> None:
        if mode not in MODES or not set(cycle) <= set(MODES) - {"mixed"}:
            raise ValueError(f"fault modes must be among {MODES}, not {mode!r} / {cycle!r}")
        with self._lock:
            self._mode = mode
            self._cycle = itertools.cycle(cycle)

    def faults(self) -> int:
        """How many requests got a fault instead of the provider's answer."""
        return sum(n for outcome, n in self.counts.items() if outcome != "forwarded")

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_outcome(self, method: str, path: str, headers: Message, body: bytes) -> str:
        if self._mode != "pass" and self.match and not self.match(method, path, headers, body):
            return "pass"
        with self._lock:
            mode = self._mode
            if mode == "mixed":
                mode = next(self._cycle)
            return mode

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outcome = proxy._next_outcome(self.command, self.path, self.headers, body)
                if outcome in ("500", "429"):
                    proxy._count(outcome)
                    self._answer(int(outcome), b"injected fault")
                    return
                if outcome == "timeout":
                    proxy._count("timeout")
                    time.sleep(proxy.hang_seconds)
                    self.close_connection = True
                    return
                status, headers, answer = self._forward(body)
                if outcome == "slow":
                    proxy._count("slow")
                    time.sleep(proxy.hang_seconds)
                else:
                    proxy._count("forwarded")
                try:
                    self.send_response(status)
                    for name, value in headers:
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (slow mode): that is the point

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                finally:
                    conn.close()

            def _answer(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(text)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
