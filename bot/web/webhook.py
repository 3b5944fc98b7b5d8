"""POST /webhook: authenticate, bound, parse, dedupe, record in the inbox and enqueue — Redis is its only I/O."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request
from kombu.exceptions import KombuError

from bot.adapters import metrics
from bot.adapters.queue import Enqueue
from bot.adapters.store import Store
from bot.adapters.task_message import queue_key
from bot.core.commands import note_to_dict, parse_note, why_not_a_command
from bot.core.events import Event, EventKind, InvalidEvent, JobEvent, event_to_dict, parse_event
from bot.core.routing import why_ignored
from bot.core.settings import Settings
from bot.logs import bind, unbind
from bot.web.auth import AuthResult, authenticate
from bot.web.limits import BodyTooLarge, TooDeep, UnreadableBody, loads_bounded, read_body

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)

TASK_FOR = {EventKind.PIPELINE: "gate.pipeline_event", EventKind.JOB: "gate.job_event"}
NOTE_HOOK, COMMAND_TASK = "Note Hook", "gate.command"
MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True)
class WebhookDeps:
    settings: Settings
    store: Store
    # None: claim, inbox and the Celery message in one Redis call (the Procfile's web). A callable queues
    # separately after the claim (tests record what would be queued this way).
    enqueue: Enqueue | None = None

    @property
    def queue_key(self) -> str:
        return queue_key(self.settings.redis.key_prefix)


@bp.after_request
def _count(response: Response) -> Response:
    """Every answer the webhook gives, by code (413s from Flask's body limit included)."""
    metrics.DELIVERIES.labels(code=str(response.status_code)).inc()
    return response


@bp.teardown_request
def _unbind(_: BaseException | None) -> None:
    # A threaded server reuses its threads: a request's log fields must not leak into the next one's.
    token = g.pop("log_token", None)
    if token is not None:
        unbind(token)


def _deps() -> WebhookDeps:
    deps: WebhookDeps = current_app.extensions["ecr_scan_gate"]
    return deps


def _answer(http_status: int, **body: object) -> tuple[Response, int]:
    return jsonify(body), http_status


def _delivery_key(body: bytes, signed: bool) -> str:
    """What makes two deliveries the same: the signed webhook-id when the signature was verified (an
    unsigned Idempotency-Key could be swapped to replay a signed body), else the Idempotency-Key, else the
    body. The body's hash is always part of it, so a reused key with a different body is a new delivery."""
    digest = hashlib.sha256(body).hexdigest()
    for source, header in (("sig", "webhook-id"), ("idem", "Idempotency-Key")):
        if source == "sig" and not signed:
            continue
        key = request.headers.get(header, "").strip()
        if key and len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable():
            return f"{source}:{hashlib.sha256(key.encode()).hexdigest()}:{digest[:32]}"
    # No key (GitLab < 17.4): the same body twice is the same delivery resent.
    return "body:" + digest


def _utf8_json(data: dict[str, Any]) -> str | None:
    """The event as JSON for the inbox; None if it holds text that is not UTF-8.

    JSON escapes can spell lone surrogates ("\ud800") and json.loads keeps them; Redis, GitLab's API and the
    MR note need UTF-8, so such an event would only fail later, in a worker.
    """
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _push_jobs(deps: WebhookDeps, event: Event) -> frozenset[str] | None:
    """For a Job Hook: the push jobs of its pipeline once its plan is recorded (None: not known yet)."""
    if not isinstance(event, JobEvent):
        return None
    plan = deps.store.plan(event.project_id, event.pipeline_id)
    return frozenset(plan.push_jobs) if plan is not None else None


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    deps = _deps()
    try:
        body = read_body(request.environ, request.content_length, deps.settings.webhook.max_body_bytes)
    except BodyTooLarge:
        return _answer(413, error="payload too large")
    except UnreadableBody as exc:
        # No traceback: a broken body is the client's mistake (or an attack), not the bot's.
        log.warning("webhook: unreadable body (%s)", exc)
        return _answer(400, error="the request body could not be read (broken chunked framing?)")
    # Werkzeug's headers are a case-insensitive mapping of str to str.
    auth = authenticate(cast(Mapping[str, str], request.headers), body, deps.settings)
    if auth is not AuthResult.OK:
        # No detail: which check failed is of use only to an attacker.
        log.warning("webhook: rejected delivery (%s)", auth.value)
        return _answer(401, error="unauthorized")
    if request.mimetype != "application/json":
        return _answer(415, error="Content-Type must be application/json")
    try:
        payload = loads_bounded(body, deps.settings.webhook.max_json_depth)
    except TooDeep:
        return _answer(400, error=f"JSON nested deeper than {deps.settings.webhook.max_json_depth} levels")
    except (ValueError, UnicodeDecodeError):
        return _answer(400, error="body is not valid JSON")
    kind = request.headers.get("X-Gitlab-Event")
    if kind == NOTE_HOOK:
        return _note_hook(deps, body, payload)
    try:
        event = parse_event(kind, payload)
    except InvalidEvent as exc:
        return _answer(400, error=f"invalid {kind}: {exc}")
    if event is not None:
        g.log_token = bind(project=event.project_id, pipeline=event.pipeline_id)
    if event is None:
        # 2xx: GitLab disables hooks that keep failing; an event we don't use is not a failure.
        return _answer(200, status="ignored", reason=f"event {str(kind)[:40]!r} is not handled")
    try:
        why = why_ignored(deps.settings, event, _push_jobs(deps, event))
    except redis.RedisError:
        return _answer(503, error="queue unavailable, resend later")
    if why:
        return _answer(200, status="ignored", reason=why)
    return _queue(deps, body, TASK_FOR[event.kind], event_to_dict(event), str(kind), event.project_id)


def _note_hook(deps: WebhookDeps, body: bytes, payload: object) -> tuple[Response, int]:
    """An MR comment: queued only when its first line is an ecr-scan-gate command of a configured project."""
    if not isinstance(payload, dict) or payload.get("object_kind") != "note":
        return _answer(400, error=f"invalid {NOTE_HOOK}: object_kind does not match X-Gitlab-Event (expected 'note')")
    try:
        note = parse_note(payload)
    except InvalidEvent as exc:
        return _answer(400, error=f"invalid {NOTE_HOOK}: {exc}")
    if note is None:
        return _answer(200, status="ignored", reason="not a merge request comment")
    if deps.settings.project_for(note.project_id, note.project_path) is None:
        return _answer(200, status="ignored", reason="project not configured")
    why = why_not_a_command(note)
    if why:
        return _answer(200, status="ignored", reason=why)
    return _queue(deps, body, COMMAND_TASK, note_to_dict(note), NOTE_HOOK, note.project_id)


def _queue(
    deps: WebhookDeps, body: bytes, task: str, data: dict[str, Any], kind: str, project_id: int
) -> tuple[Response, int]:
    """Dedupe, record in the inbox, enqueue: 202; 400 for text Redis cannot hold; 503 when Redis or the broker
    cannot take it."""
    payload_json = _utf8_json(data)
    if payload_json is None:
        return _answer(400, error=f"invalid {kind}: text holds unpaired surrogates (\\ud800-\\udfff escapes)")
    # Authentication passed already: a signature that is present was verified (with the key configured).
    signed = bool(deps.settings.signing_key.get_secret_value()) and "webhook-signature" in request.headers
    key = _delivery_key(body, signed)
    inbox = key.replace(":", "-")
    ttl = deps.settings.redis.dedupe_ttl_s
    if deps.enqueue is None:
        try:
            # One round trip: claim, inbox and the task's message, or nothing. Should the queued task be lost
            # later (a worker dying holding it), the sweep finds the delivery in the inbox and queues it again.
            task_id = deps.store.accept_and_queue(key, ttl, inbox, task, payload_json, deps.queue_key)
        except redis.RedisError:
            return _answer(503, error="queue unavailable, resend later")
        if task_id is None:
            return _answer(200, status="duplicate")
        log.info("webhook: queued %s for project %s (task %s)", kind, project_id, task_id)
        return _answer(202, status="queued", task_id=task_id)
    try:
        if not deps.store.claim_and_accept(key, ttl, inbox, task, payload_json):
            return _answer(200, status="duplicate")
    except redis.RedisError:
        return _answer(503, error="queue unavailable, resend later")
    try:
        task_id = deps.enqueue(task, data, inbox)
    except (KombuError, redis.RedisError, OSError) as exc:
        log.error("webhook: enqueue failed (%s); answering 503 so the delivery can be resent", type(exc).__name__)
        try:
            deps.store.release(key, inbox)  # not accepted after all: GitLab may resend it
        except redis.RedisError:
            pass  # the inbox entry stays: the sweep queues it, and a resend is then rightly a duplicate
        return _answer(503, error="queue unavailable, resend later")
    log.info("webhook: queued %s for project %s (task %s)", kind, project_id, task_id)
    return _answer(202, status="queued", task_id=task_id)


def json_error_handler(exc: Exception) -> tuple[Response, int]:
    """413 from Flask's MAX_CONTENT_LENGTH, as JSON."""
    return jsonify(error="payload too large"), 413


__all__ = ["WebhookDeps", "bp", "json_error_handler"]
