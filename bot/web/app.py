"""Flask app factory: the webhook blueprint and /healthz, wired to Redis and the Celery producer."""

from __future__ import annotations

from flask import Flask, Response, jsonify

from bot.adapters.queue import Enqueue
from bot.adapters.store import Store
from bot.config import load_settings
from bot.core.ops_settings import LogFormat
from bot.core.settings import Settings
from bot.logs import configure
from bot.web.dashboard import register as register_dashboard
from bot.web.metrics import bp as metrics_bp
from bot.web.webhook import WebhookDeps, bp, json_error_handler


def create_app(
    settings: Settings | None = None, *, store: Store | None = None, enqueue: Enqueue | None = None
) -> Flask:
    """Refuses to start without a webhook secret: load_settings lists that with every other problem."""
    settings = settings or load_settings()
    if not settings.webhook_secrets:
        raise RuntimeError("refusing to start: no GITLAB_WEBHOOK_SECRET")
    configure(settings.logging.format is LogFormat.JSON, settings.logging.level, settings.secret_values())
    app = Flask("ecr_scan_gate")
    # Flask refuses larger bodies with 413 before the view reads them.
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook.max_body_bytes
    # Socket timeouts of 1 s: GitLab waits 10 s for us, and a dead Redis must yield a fast 503.
    store = store or Store.from_url(
        settings.redis.url, settings.redis.gate_ttl_s, socket_timeout_s=1.0, prefix=settings.redis.key_prefix
    )
    app.extensions["ecr_scan_gate"] = WebhookDeps(settings, store, enqueue)
    app.register_blueprint(bp)
    app.register_blueprint(metrics_bp)
    app.register_error_handler(413, json_error_handler)
    register_dashboard(app, settings, store)  # /dashboard, only when [dashboard] enabled

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        ok = store.ping()
        return jsonify(status="ok" if ok else "degraded", redis="ok" if ok else "unreachable"), 200 if ok else 503

    return app
