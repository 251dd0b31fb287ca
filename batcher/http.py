"""The operator's HTTP endpoints: ``/metrics``, ``/healthz`` (alive) and ``/readyz``.

``/readyz`` answers 503 with the reason while a sink is down, before the consumer has
started, or when the loop has stalled; load balancers and alerts read it, and so does batcher_ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batcher import metrics

# Returns (healthy, ready, reason): healthy = the loop is turning; ready = it makes progress.
HealthFn = Callable[[], tuple[bool, bool, str]]


def serve(host: str, port: int, health: HealthFn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
                return
            healthy, ready, reason = health()
            if path == "/healthz":
                self._send(200 if healthy else 503, (reason if not healthy else "ok").encode())
            elif path == "/readyz":
                self._send(200 if ready else 503, (reason if not ready else "ready").encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds are not news."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
