"""The metrics port of a worker or the events process: a small HTTP server thread answering GET /metrics."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from bot.adapters import metrics

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    token = ""  # the bearer token a scrape must send (ECR_GATE_METRICS_TOKEN); "" = any scrape


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self._answer(404, b"not found\n", "text/plain")
        elif not metrics.scrape_allowed(self.headers.get("Authorization", ""), self.server.token):
            self._answer(401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": metrics.CHALLENGE})
        else:
            self._answer(200, metrics.exposition(), CONTENT_TYPE_LATEST, {"Cache-Control": "no-store"})

    def _answer(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        return  # one line per scrape would drown the worker's log


def serve(bind: str, port: int, what: str, token: str = "") -> _Server | None:
    """Serve in a daemon thread; a port in use is logged and skipped (a second worker on the same host)."""
    try:
        server = _Server((bind, port), _Handler)
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d (%s); not served", what, bind, port, exc.strerror)
        return None
    server.token = token
    threading.Thread(target=server.serve_forever, name=f"{what}-metrics", daemon=True).start()
    log.info(
        "%s metrics on http://%s:%d/metrics (%s)",
        what,
        bind,
        server.server_address[1],
        "bearer token required" if token else "no token",
    )
    return server
