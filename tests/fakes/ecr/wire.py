"""The ECR JSON wire as the proxy reads it: asked image, page size, region, error code, pages and tokens."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from typing import Any

_TOKEN_PREFIX = "ecr-double."
_BAD_MAX_RESULTS = {"__type": "InvalidParameterException", "message": "Invalid parameter at 'maxResults': 1 to 1000"}
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


def _paginate(body: dict[str, Any], offset: int, max_results: int) -> tuple[dict[str, Any], bool]:
    """One page of every findings list in the answer; True when more follow."""
    findings = body.get("imageScanFindings")
    if not isinstance(findings, dict):
        return body, False
    page = copy.copy(body)
    page["imageScanFindings"] = dict(findings)
    more = False
    for key in ("findings", "enhancedFindings"):
        items = findings.get(key)
        if isinstance(items, list):
            page["imageScanFindings"][key] = items[offset : offset + max_results]
            more = more or len(items) > offset + max_results
    return page, more


def _token(answer_id: str, offset: int) -> str:
    raw = json.dumps({"a": answer_id, "o": offset}).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _untoken(token: str) -> tuple[str, int] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :].encode()))
        return str(data["a"]), int(data["o"])
    except (ValueError, KeyError, TypeError):
        return None


def _asked_image(request: Mapping[str, Any]) -> dict[str, str]:
    image_id = request.get("imageId")
    if image_id is None:
        # DescribeImages / BatchGetImage name images in a list; one image is scriptable, more are not.
        ids = request.get("imageIds")
        image_id = ids[0] if isinstance(ids, list) and len(ids) == 1 else None
    if not isinstance(image_id, dict):
        return {}
    return {k: v for k, v in image_id.items() if k in ("imageTag", "imageDigest") and isinstance(v, str) and v}


def _max_results(request: Mapping[str, Any]) -> int | None:
    value = request.get("maxResults", 100)  # ECR's default page size
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        return None
    return value


def _region(authorization: str) -> str | None:
    match = _CREDENTIAL_SCOPE.search(authorization)
    return match.group(1) if match else None


def _error_code(status: int, body: bytes) -> str | None:
    if status < 400:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return str(status)  # e.g. moto's IAM refusals: HTTP 403 with an XML body
    code = data.get("__type") if isinstance(data, dict) else None
    return str(code).rsplit("#", 1)[-1] if code else str(status)
