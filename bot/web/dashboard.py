"""GET /dashboard: the read-only dashboard (off unless [dashboard] enabled), behind HTTP Basic auth."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import redis
from flask import Blueprint, Flask, Response, abort, current_app, request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from bot.adapters.history import RECENT_KEPT
from bot.adapters.logins import retry_after
from bot.adapters.store import Store
from bot.core.dashboard import Snapshot, View, build
from bot.core.dashboard_parts import gate_exceptions
from bot.core.gate import merge_gate_project
from bot.core.models import Acceptance
from bot.core.risk import utc_day
from bot.core.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
# The oldest open gates a page reads: enough for any healthy deployment; the page says when there are more.
OPEN_READ = 500
CHALLENGE = 'Basic realm="ecr-scan-gate", charset="UTF-8"'
_TEMPLATES = Path(__file__).with_name("templates")
_CSS = (_TEMPLATES / "dashboard.css").read_text(encoding="utf-8")
if "</" in _CSS:
    raise RuntimeError("dashboard.css must not hold '</': it could close its <style> element")
# Not escaped: it is the bot's own file, and the CSP below holds the hash of exactly this text.
_STYLE = Markup(_CSS)  # noqa: S704
# The page's only style is inline, allowed by its hash: no script, no other origin, no frame, no form.
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Autoescaped: every value the templates print is HTML-escaped, whatever its source.
_JINJA = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True, undefined=StrictUndefined)
_DEPS = "ecr_scan_gate.dashboard"

bp = Blueprint("dashboard", __name__, url_prefix=PREFIX)


@dataclass(frozen=True)
class DashboardDeps:
    settings: Settings
    store: Store


def register(app: Flask, settings: Settings, store: Store) -> None:
    """Mount /dashboard when [dashboard] is enabled; otherwise it is absent (404), as if never built."""
    if not settings.dashboard.enabled:
        return
    if not settings.dashboard_password.get_secret_value():
        raise RuntimeError("refusing to start: [dashboard] enabled without ECR_GATE_DASHBOARD_PASSWORD")
    app.extensions[_DEPS] = DashboardDeps(settings, store)
    app.register_blueprint(bp)
    # On the app, not the blueprint: a 404 or 405 under /dashboard that matched no view gets them too.
    app.after_request(_security_headers)


def _security_headers(response: Response) -> Response:
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        response.headers.update(HEADERS)
    return response


def credentials_ok(header: str, username: str, password: str) -> bool:
    """An HTTP Basic Authorization header against the configured pair: both compared, in constant time."""
    scheme, _, token = header.partition(" ")
    try:
        raw = base64.b64decode(token.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raw = b""
    given_user, colon, given_password = raw.partition(b":")
    # Both comparisons always run: which of the two was wrong must not show in the time taken.
    user_ok = hmac.compare_digest(given_user, username.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password, password.encode("utf-8", "surrogateescape"))
    return scheme.lower() == "basic" and bool(colon) and user_ok & password_ok


def _deps() -> DashboardDeps:
    deps: DashboardDeps = current_app.extensions[_DEPS]
    return deps


@bp.before_request
def _authenticate() -> Response | None:
    deps = _deps()
    settings = deps.settings
    # Never logged, never echoed: the header is the password, base64-encoded.
    header = request.headers.get("Authorization", "")
    if not header:  # a browser's first request: not a failed login
        return _challenge()
    now, limit = time.time(), settings.dashboard.failed_logins_per_minute
    try:
        # Checked before the credentials: while locked, a right guess must look the same as a wrong one.
        if deps.store.failed_logins(now) >= limit:
            return _too_many(now)
        if credentials_ok(header, settings.dashboard.username, settings.dashboard_password.get_secret_value()):
            return None
        if deps.store.count_failed_login(now) == limit:
            log.warning(
                "dashboard: %d wrong logins this minute (the last from %s); all logins refused for %d s",
                limit,
                request.remote_addr,
                retry_after(now),
            )
    except redis.RedisError:
        return _redis_down()
    return _challenge()


def _challenge() -> Response:
    answer = Response("authentication required\n", 401, mimetype="text/plain")
    answer.headers["WWW-Authenticate"] = CHALLENGE
    return answer


def _too_many(now: float) -> Response:
    answer = Response("too many failed logins; try again later\n", 429, mimetype="text/plain")
    answer.headers["Retry-After"] = str(retry_after(now))
    return answer


def _redis_down() -> Response:
    return Response("Redis is unreachable: the dashboard cannot read the gates.\n", 503, mimetype="text/plain")


@bp.get("")
@bp.get("/")
def index() -> Response:
    return _page(None)


@bp.get("/projects/<int:project_id>")
def project(project_id: int) -> Response:
    return _page(project_id)


@bp.get("/<path:rest>")
def unknown(rest: str) -> Response:
    abort(404)


def _page(project_id: int | None) -> Response:
    deps = _deps()
    now = time.time()
    try:
        snapshot = read_snapshot(deps.store, deps.settings, now, project_id)
    except redis.RedisError:
        return _redis_down()
    settings = deps.settings
    view = View(settings.gitlab.url, settings.sweep.stuck_after_s, settings.dashboard.expiring_within_days)
    page = build(snapshot, view, now)
    if project_id is not None and page.empty:
        abort(404)
    html = _JINJA.get_template("dashboard.html").render(page=page, base=request.script_root + PREFIX, css=_STYLE)
    return Response(html, 200, mimetype="text/html")


def read_snapshot(store: Store, settings: Settings, now: float, project: int | None = None) -> Snapshot:
    """What a page shows, read from Redis: a project's page reads that project's verdicts among the newest kept."""
    keys = list(islice(store.open_gates(batch=OPEN_READ), OPEN_READ))
    total = store.open_count()
    opened = [g for g in store.get_many(keys) if g is not None]
    limit = settings.dashboard.recent
    newest = store.recent_verdicts(limit if project is None else RECENT_KEPT)
    if project is not None:
        newest = [(k, at) for k, at in newest if merge_gate_project(k) == project][:limit]
    read = store.get_many([k for k, _ in newest])
    recent = [(g, at) for g, (_, at) in zip(read, newest, strict=True) if g is not None]
    if project is None:
        seen = [*store.stats_projects(), *(g.project_id for g in opened), *(g.project_id for g, _ in recent)]
        projects = sorted({*seen, *(p.id for p in settings.projects if p.id is not None)})
    else:
        projects = [project]
    today = utc_day(now)
    central = settings.policy.rules().exceptions
    scoped: list[tuple[int | None, Acceptance]] = [(None, a) for a in central]
    scoped += [(p, a) for p in projects for a in store.project_exceptions(p)]
    scoped += gate_exceptions([*opened, *(g for g, _ in recent)], central)
    return Snapshot(
        open_gates=opened,
        open_read=len(keys),
        open_total=total,
        recent=recent,
        counts={p: store.daily_counts(p, today) for p in projects},
        exceptions=scoped,
        project=project,
    )
