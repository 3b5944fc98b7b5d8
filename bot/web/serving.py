"""gunicorn settings of the web process (Procfile: `gunicorn -c python:bot.web.serving`), each with its reason."""

from __future__ import annotations

import os
from typing import Any

from bot.adapters import metrics_dir

# Before any worker imports prometheus_client (the app is loaded after the fork): the workers' metrics files
# go to one fresh directory of this master, and /metrics in any worker adds up all of them.
metrics_dir.prepare("web")

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# gevent: every connection is a greenlet, so clients that send their headers or body slowly wait without
# holding a worker thread. With the threaded worker, 2 workers x 4 threads were starved by 8 slow
# connections and /healthz timed out (scripts/slow_clients.py measures both).
worker_class = "gevent"
# One process per core is enough: the handler waits on Redis, it barely computes.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Open connections per process, slow ones included; beyond this the kernel backlog holds new ones. A
# deployment facing the internet should also sit behind a buffering proxy (README: Production setup).
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "1000"))
# A request that takes longer than this is a hung worker: gunicorn restarts it. GitLab gives up at 10 s.
timeout = 30
graceful_timeout = 20
# GitLab opens a connection per delivery; keep-alive only helps proxies in front of us.
keepalive = 5
# A request line or header longer than this is refused by gunicorn itself (431/400), before the app.
limit_request_line = 8190
limit_request_fields = 100


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges must not count any more (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
