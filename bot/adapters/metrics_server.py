"""The metrics port of a worker or the events process: a small HTTP server thread answering GET /metrics."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from bot.adapters import metrics

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = metrics.exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        return  # one line per scrape would drown the worker's log


def serve(bind: str, port: int, what: str) -> ThreadingHTTPServer | None:
    """Serve in a daemon thread; a port in use is logged and skipped (a second worker on the same host)."""
    try:
        server = ThreadingHTTPServer((bind, port), _Handler)
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d (%s); not served", what, bind, port, exc.strerror)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"{what}-metrics", daemon=True).start()
    log.info("%s metrics on http://%s:%d/metrics", what, bind, port)
    return server
