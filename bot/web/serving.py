"""gunicorn settings of the web process (Procfile: `gunicorn -c python:bot.web.serving`), each with its reason."""

from __future__ import annotations

import logging
import os
from typing import Any

from bot.adapters import metrics_dir
from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.ops_settings import LogFormat

# Before any worker imports prometheus_client (the app is loaded after the fork): the workers' metrics files
# go to one fresh directory of this master, and /metrics in any worker adds up all of them.
metrics_dir.prepare("web")


def _json_logs() -> bool:
    """[logging] format of the config the app will load (text when it cannot be read: the app then says why)."""
    quiet = logging.getLogger("bot.config")  # its warnings come again, formatted, when each worker loads the app
    quiet.disabled = True
    try:
        return load_settings(require_secrets=False).logging.format is LogFormat.JSON
    except ConfigError:
        return False
    finally:
        quiet.disabled = False


if _json_logs():
    # gunicorn's own lines (start, worker boots and exits, access) as JSON too, and the root logger's, which
    # the app logs through: every line of the web process is one object.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "bot.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["error_console"],
                "propagate": False,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "level": "INFO",
                "handlers": ["console"],
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        },
    }

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
