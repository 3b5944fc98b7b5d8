"""Webhook authentication: secret token (constant time, several for rotation) and optional HMAC signing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum

from pydantic import SecretStr

from bot.core.settings import Settings


class AuthResult(StrEnum):
    OK = "ok"
    MISSING = "no token"
    WRONG = "wrong token"
    BAD_SIGNATURE = "bad signature"
    STALE = "signature timestamp outside tolerance"


_STAMP = re.compile(r"[0-9]{1,12}")


def _header_bytes(value: str) -> bytes:
    # WSGI hands header values over as latin-1 text: encoding back yields the bytes on the wire. Other
    # text (test clients, lone surrogates) must still compare without raising, so never a 500.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def token_ok(given: str, secrets: Sequence[SecretStr]) -> bool:
    """Compare against every active secret without short-circuiting, in constant time each."""
    ok = False
    for secret in secrets:
        # surrogateescape: a secret from a non-UTF-8 environment compares as the bytes it was given.
        ok |= hmac.compare_digest(_header_bytes(given), secret.get_secret_value().encode("utf-8", "surrogateescape"))
    return ok


def _signing_key(key: str) -> bytes:
    # Standard Webhooks keys are "whsec_" + base64; anything else is used as raw bytes.
    if key.startswith("whsec_"):
        try:
            return base64.b64decode(key[6:], validate=True)
        except (binascii.Error, ValueError):
            pass
    return key.encode("utf-8", "surrogateescape")


def signature_ok(
    headers: Mapping[str, str], body: bytes, key: str, tolerance_s: int, now: float | None = None
) -> AuthResult:
    """Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body">; several may be listed."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    sigs = headers.get("webhook-signature", "")
    # ASCII digits only: str.isdigit() also accepts "²" (a latin-1 header byte), which int() refuses.
    if not (msg_id and _STAMP.fullmatch(stamp) and sigs):
        return AuthResult.BAD_SIGNATURE
    if abs((now if now is not None else time.time()) - int(stamp)) > tolerance_s:
        return AuthResult.STALE
    signed = _header_bytes(msg_id) + f".{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_signing_key(key), signed, hashlib.sha256).digest())
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
    key = settings.signing_key.get_secret_value()
    if token is None and not (signed and key):
        return AuthResult.MISSING
    if token is not None and not token_ok(token, settings.webhook_secrets):
        return AuthResult.WRONG
    if signed and key:
        return signature_ok(headers, body, key, settings.webhook.signature_tolerance_s)
    return AuthResult.OK
