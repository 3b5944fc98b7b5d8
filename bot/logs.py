"""Logging setup with redaction: known secrets and AWS key shapes never reach a log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"(?i)(aws_secret_access_key|aws_session_token|private[-_]token|x-gitlab-token)"
               r"(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{10,}"),  # GitLab personal access tokens
]
MASK = "[REDACTED]"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) + m.group(2) + MASK) if m.lastindex else MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record once, redacts it, and freezes the result into record.msg."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message, self.secrets)
        record.args = ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


_installed: list[RedactingFilter] = []


def install_redaction(secrets: Iterable[str]) -> None:
    """Attach the filter to every handler of the root logger, now and for handlers added later."""
    filt = RedactingFilter(secrets)
    _installed.append(filt)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(filt)
    # Records also pass the logger's own filters, which covers handlers Celery adds later.
    root.addFilter(filt)
    for name in ("celery", "gunicorn.error", "gunicorn.access", "werkzeug", "bot", "workers"):
        logging.getLogger(name).addFilter(filt)
