"""GET /metrics: Prometheus' text format, optionally behind a bearer token from ECR_GATE_METRICS_TOKEN."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST

from bot.adapters import metrics
from bot.web.webhook import WebhookDeps

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    deps: WebhookDeps = current_app.extensions["ecr_scan_gate"]
    if not deps.settings.metrics.enabled:
        abort(404)
    if not metrics.scrape_allowed(
        request.headers.get("Authorization", ""), deps.settings.metrics_token.get_secret_value()
    ):
        return Response("unauthorized\n", 401, {"WWW-Authenticate": metrics.CHALLENGE})
    body = metrics.exposition(deps.store, deps.queue_key)
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
