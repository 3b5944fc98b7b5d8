"""Worker and beat entry point: `celery -A workers.main worker` / `celery -A workers.main beat`."""

from __future__ import annotations

import logging
import sys

from celery import signals

from bot.adapters.queue import make_celery
from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.logs import install_redaction

try:
    settings = load_settings()
except ConfigError as exc:
    print(exc, file=sys.stderr)
    raise SystemExit(3) from None

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
