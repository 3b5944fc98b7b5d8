"""GET /metrics: Prometheus' text format, optionally behind a bearer token from ECR_GATE_METRICS_TOKEN."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST

from bot.adapters import metrics
from bot.web.webhook import WebhookDeps

bp = Blueprint("metrics", __name__)


def _authorized(token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant time, on bytes: the comparison must not tell an attacker how much of the token matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@bp.get("/metrics")
def scrape() -> Response:
    deps: WebhookDeps = current_app.extensions["ecr_scan_gate"]
    if not deps.settings.metrics.enabled:
        abort(404)
    if not _authorized(deps.settings.metrics_token.get_secret_value()):
        return Response("unauthorized\n", 401, {"WWW-Authenticate": 'Bearer realm="ecr-scan-gate metrics"'})
    body = metrics.exposition(deps.store, deps.queue_key)
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
