"""Worker and beat entry point: `celery -A workers.main worker` / `celery -A workers.main beat`."""

from __future__ import annotations

import logging
import os
import sys
from contextvars import Token

from bot.adapters import metrics_dir

# Before the task modules import prometheus_client: the prefork children inherit it and write their metrics
# files there; the main process serves the sum on [metrics] worker_port.
metrics_dir.prepare("worker")

from celery import signals  # noqa: E402 - after the metrics directory is set

from bot.adapters.queue import make_celery  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.core.errors import ConfigError  # noqa: E402
from bot.core.ops_settings import LogFormat  # noqa: E402
from bot.logs import JsonFormatter, bind, hold, install_redaction, task_fields, unbind  # noqa: E402

held = hold()  # the config's warnings wait for Celery's handlers (and their format)
try:
    settings = load_settings()
except ConfigError as exc:
    held.replay()
    print(exc, file=sys.stderr)
    raise SystemExit(3) from None
if settings.logging.format is LogFormat.JSON:
    # Python warnings (Celery's SecurityWarning when run as root, deprecations) become log records, so JSON too.
    logging.captureWarnings(True)

install_redaction(settings.secret_values())
app = make_celery(settings)
app.conf.include = ["workers.tasks", "workers.commands", "workers.registry_events", "workers.monitor"]


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_celery_handlers(logger: logging.Logger, **_: object) -> None:
    # Celery installs its own handlers at start-up; give each one the redaction filter too.
    install_redaction(settings.secret_values())
    for handler in logger.handlers:
        for filt in logger.filters:
            handler.addFilter(filt)
        if settings.logging.format is LogFormat.JSON:
            handler.setFormatter(JsonFormatter())
    logger.setLevel(settings.logging.level)
    held.replay()


@signals.celeryd_after_setup.connect
def _json_banner(sender: str = "", instance: object = None, **_: object) -> None:
    # Celery prints its start-up banner as plain text right after this signal, unless the worker is quiet:
    # with JSON logs, say the same essentials as one JSON line instead, so every line of the log parses.
    if settings.logging.format is not LogFormat.JSON or instance is None:
        return
    instance.quiet = True  # type: ignore[attr-defined]  # celery.apps.worker.Worker reads it next
    queues = sorted(q.name for q in app.amqp.queues.consume_from.values())
    logging.getLogger("celery.apps.worker").info(
        "celery worker %s ready: concurrency %s, queues %s",
        sender,
        getattr(instance, "concurrency", "?"),
        ", ".join(queues),
    )


# Each task's lines carry its gate, project and pipeline (JSON lines show them as fields).
_bound: dict[str, Token[dict[str, object] | None]] = {}


@signals.task_prerun.connect
def _bind_task(task_id: str = "", args: tuple[object, ...] = (), **_: object) -> None:
    _bound[task_id] = bind(**task_fields(args or ()))


@signals.task_postrun.connect
def _unbind_task(task_id: str = "", **_: object) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        unbind(token)


@signals.worker_init.connect
def _serve_metrics(**_: object) -> None:
    # The main process serves; its prefork children only write their files (bot/adapters/metrics.py).
    if settings.metrics.enabled and settings.metrics.worker_port:
        from bot.adapters.metrics_server import serve

        serve(settings.metrics.bind, settings.metrics.worker_port, "worker", settings.metrics_token.get_secret_value())


@signals.worker_process_shutdown.connect
def _child_gone(**_: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())
