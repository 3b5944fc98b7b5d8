"""Logging setup with redaction: known secrets and AWS key shapes never reach a log line."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from bot.core.ops_settings import DASHBOARD_PASSWORD_ENV, METRICS_TOKEN_ENV

# Each pattern with the words one of its matches must hold (casefolded where the pattern ignores case): a
# line holding none of them cannot match, and most lines hold none, so the regex (a few µs each) is skipped.
_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    # name = value, name: value, "name": "value", 'name': b'value' (botocore logs header bytes).
    re.compile(
        r"(?i)((?:aws_)?secret_?access_?key|(?:aws_)?session_?token|x-amz-security-token|private[-_]token"
        r"|x-gitlab-token|gitlab_token|gitlab_webhook_secret(?:_previous)?|gitlab_webhook_signing_key)"
        r"(['\"]?\s*[:=]\s*b?['\"]?)[^\s'\",}]+"
    ),
    re.compile(r"(?i)(authorization)(['\"]?\s*[:=]\s*b?['\"]?(?:bearer|basic|token)\s+)[^\s'\",}]+"),
    # GitLab tokens by prefix (personal, OAuth, deploy, runner, CI job, trigger, feed, ...); newer ones hold dots.
    re.compile(r"\bgl(?:pat|oas|dt|rt|cbt|ptt|ft|imt|agent|soat|ffct)-[A-Za-z0-9_.\-]{10,}"),
]
# (case-sensitive words, casefolded words) per pattern above, in order; tests/test_redaction.py checks them.
_NEEDS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("AKIA", "ASIA"), ()),
    ((), ("secret", "token", "key")),  # every name of the pattern holds one of these
    ((), ("authorization",)),
    (("gl",), ()),
]
MASK = "[REDACTED]"
# The one list of environment variables that hold secrets: the bot's own, and those boto3 or a CI job's
# OIDC login read directly. Every redaction (logs, CLI errors, doctor output) masks their values.
SECRET_ENV = (
    "GITLAB_TOKEN",
    "GITLAB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_SECRET_PREVIOUS",
    "GITLAB_WEBHOOK_SIGNING_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_OIDC_TOKEN",
    METRICS_TOKEN_ENV,
    DASHBOARD_PASSWORD_ENV,
)


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The values of SECRET_ENV set in `env`."""
    return [value for name in SECRET_ENV if (value := env.get(name, ""))]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    # The letters re's IGNORECASE also takes for i, k and s (U+0131 ı, U+212A K, U+017F ſ) must find the
    # words too: casefold maps K and ſ; ı it leaves, so it is mapped by hand.
    low = text.casefold().replace("\u0131", "i")
    for pattern, (words, lower_words) in zip(_PATTERNS, _NEEDS, strict=True):
        if any(w in text for w in words) or any(w in low for w in lower_words):
            text = pattern.sub(lambda m: (m.group(1) + m.group(2) + MASK) if m.lastindex else MASK, text)
    return text


def _redact_record(record: logging.LogRecord, secrets: Sequence[str]) -> None:
    """Format the record once, redact it, and freeze the result into record.msg (args emptied)."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not make a log call raise, nor leak its args
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message, secrets)
    record.args = ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text, secrets)


class RedactingFilter(logging.Filter):
    """Formats the record once, redacts it, and freezes the result into record.msg."""

    def __init__(self, secrets: Iterable[str], generation: int = 0) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # install_redaction's count when it made this filter (0: made elsewhere, never skips a record).
        self.generation = generation

    def filter(self, record: logging.LogRecord) -> bool:
        # Once per record is enough: skip one the record factory redacted when it knew every secret this
        # filter knows (the secrets only grow, so a generation at least this one's), if its text is still
        # the one made then. A record built otherwise (makeLogRecord, another factory) or changed since has
        # no such mark, or a stale one.
        done = getattr(record, MARK, None)
        skip = self.generation and done and record.msg is done[0] and not record.args and done[1] >= self.generation
        if not skip:
            _redact_record(record, self.secrets)
        return True


_installed: list[RedactingFilter] = []
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_generation = 0  # how many times install_redaction ran: _secrets as of then (they only ever grow)
_factory: Callable[..., logging.LogRecord] | None = None
# The record attribute saying what the factory did: (the text it made, the generation of secrets it knew).
# Never the secrets themselves: handlers such as error trackers copy a record's attributes.
MARK = "esg_redacted"


def _redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
    assert _factory is not None
    record = _factory(*args, **kwargs)
    generation = _generation
    _redact_record(record, _secrets)
    setattr(record, MARK, (record.msg, generation))
    return record


def install_redaction(secrets: Iterable[str]) -> None:
    """Redact every record of every logger, whatever handlers exist now or are added later.

    A filter on a logger sees only records logged on that very logger, not its children's, and Celery
    replaces the root handlers at start-up; so records are redacted where they are made (the record
    factory), and filters stay on the current handlers for records built without it (makeLogRecord).
    """
    global _secrets, _factory, _generation
    with _lock:
        found = {s for s in (*secrets, *env_secrets(os.environ)) if s}
        _secrets = tuple(sorted(found | set(_secrets), key=len, reverse=True))
        _generation += 1
        if _factory is None:
            _factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_redacting_factory)
        filt = RedactingFilter(_secrets, _generation)
    _installed.append(filt)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(filt)
    root.addFilter(filt)
    for name in ("celery", "gunicorn.error", "gunicorn.access", "werkzeug", "bot", "workers"):
        logging.getLogger(name).addFilter(filt)


# --- structured lines ([logging] format = "json") --------------------------------------------------------
# The fields every JSON line carries (null when the line is about no gate): what an operator filters on.
CONTEXT_FIELDS = ("gate", "project", "pipeline", "reason")
_context: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("ecr_scan_gate_log", default=None)


def bind(**fields: object) -> contextvars.Token[dict[str, object] | None]:
    """Add fields to every line logged from here on in this task or request (greenlets and threads apart)."""
    current = _context.get() or {}
    return _context.set({**current, **{k: v for k, v in fields.items() if v not in (None, "")}})


def unbind(token: contextvars.Token[dict[str, object] | None]) -> None:
    _context.reset(token)


def gate_fields(key: str) -> dict[str, object]:
    """gate:<project>:<pipeline>:<repository> and rescan:<project>:<repository>:<digest> keys, as fields."""
    kind, _, rest = key.partition(":")
    parts = rest.split(":")
    if kind not in ("gate", "rescan") or not parts[0].isdigit():
        return {}
    fields: dict[str, object] = {"gate": key, "project": int(parts[0])}
    if kind == "gate" and len(parts) > 1 and parts[1].isdigit():
        fields["pipeline"] = int(parts[1])
    return fields


def task_fields(args: Sequence[object]) -> dict[str, object]:
    """The context of a task from its arguments: a gate key first, an event payload, or the note task's ids."""
    if not args:
        return {}
    first = args[0]
    if isinstance(first, str):
        return gate_fields(first)
    if isinstance(first, Mapping):
        return {"project": first.get("project_id"), "pipeline": first.get("pipeline_id")}
    if isinstance(first, int) and len(args) >= 3:  # gate.note(project_id, sha, pipeline_id, mr_iid, gate_key)
        fields: dict[str, object] = {"project": first, "pipeline": args[2]}
        if len(args) >= 5 and isinstance(args[4], str):
            fields |= gate_fields(args[4])
        return fields
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the context fields always present; the line redacted once more as a whole."""

    def format(self, record: logging.LogRecord) -> str:
        context = _context.get() or {}
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            line[name] = getattr(record, name, None) or context.get(name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        # Fields come from task arguments and `extra`, not only from redacted messages: mask the whole line.
        return redact(json.dumps(line, ensure_ascii=False, default=str), _secrets)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(json_lines: bool, level: str, secrets: Iterable[str]) -> None:
    """The web and events processes' logging: text as before (a no-op where handlers exist), or JSON lines on
    the root logger's handlers; redaction either way."""
    if json_lines:
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(logging.StreamHandler())
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
        root.setLevel(level)
    else:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    install_redaction(secrets)


class Held(logging.handlers.BufferingHandler):
    """Records logged before logging is set up (while the config is read), kept to be replayed once it is:
    so the config's own warnings come out in the configured format, JSON included."""

    def __init__(self) -> None:
        super().__init__(capacity=1_000)

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging's name
        return False  # never on its own: replay() hands them on

    def emit(self, record: logging.LogRecord) -> None:
        # Bounded: in a process whose logging is never set up (a `celery inspect`), nothing piles up.
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)

    def detach(self) -> None:
        """Stop keeping records (before setting up the handlers they will go to)."""
        logging.getLogger().removeHandler(self)

    def replay(self) -> None:
        """Through the handlers set up since (the first call only); then this handler is gone."""
        self.detach()
        records, self.buffer = self.buffer, []
        for record in records:
            logging.getLogger(record.name).handle(record)


def hold() -> Held:
    """Keep what is logged from now until logging is configured (see Held)."""
    held = Held()
    logging.getLogger().addHandler(held)
    return held
