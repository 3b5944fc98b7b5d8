"""Webhook authentication: secret token (constant time, several for rotation) and optional HMAC signing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from enum import StrEnum

from bot.config import Settings


class AuthResult(StrEnum):
    OK = "ok"
    MISSING = "no token"
    WRONG = "wrong token"
    BAD_SIGNATURE = "bad signature"
    STALE = "signature timestamp outside tolerance"


def token_ok(given: str, secrets: tuple[str, ...]) -> bool:
    """Compare against every active secret without short-circuiting, in constant time each."""
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode())
    return ok


def _signing_key(key: str) -> bytes:
    # Standard Webhooks keys are "whsec_" + base64; anything else is used as raw bytes.
    if key.startswith("whsec_"):
        try:
            return base64.b64decode(key[6:], validate=True)
        except (binascii.Error, ValueError):
            pass
    return key.encode()


def signature_ok(headers: Mapping[str, str], body: bytes, key: str, tolerance_s: int,
                 now: float | None = None) -> AuthResult:
    """Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body">; several may be listed."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    sigs = headers.get("webhook-signature", "")
    if not (msg_id and stamp.isdigit() and sigs) or len(stamp) > 12:
        return AuthResult.BAD_SIGNATURE
    if abs((now if now is not None else time.time()) - int(stamp)) > tolerance_s:
        return AuthResult.STALE
    expected = base64.b64encode(
        hmac.new(_signing_key(key), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    )
    ok = False
    for part in sigs.split()[:8]:
        version, _, value = part.partition(",")
        if version == "v1":
            ok |= hmac.compare_digest(value.encode("ascii", "replace"), expected)
    return AuthResult.OK if ok else AuthResult.BAD_SIGNATURE


def authenticate(headers: Mapping[str, str], body: bytes, settings: Settings) -> AuthResult:
    """Every credential that is presented must verify; at least one must be presented."""
    token = headers.get("X-Gitlab-Token")
    signed = "webhook-signature" in headers
    if token is None and not (signed and settings.signing_key):
        return AuthResult.MISSING
    if token is not None and not token_ok(token, settings.webhook_secrets):
        return AuthResult.WRONG
    if signed and settings.signing_key:
        return signature_ok(headers, body, settings.signing_key, settings.webhook.signature_tolerance_s)
    return AuthResult.OK
