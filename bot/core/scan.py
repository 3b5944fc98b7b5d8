"""Pure: turn ECR DescribeImageScanFindings answers and error codes into ScanResults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bot.core.errors import TransientError
from bot.core.models import Finding, Phase, Reason, ScanResult, Severity

IN_PROGRESS_STATUSES = frozenset({"IN_PROGRESS"})
# Enhanced (Inspector) scanning: ACTIVE/PENDING mean "monitoring"; findings may not exist yet.
ENHANCED_WAITING_STATUSES = frozenset({"ACTIVE", "PENDING"})
_FINAL_STATUSES: dict[str, Reason] = {
    "FAILED": Reason.SCAN_FAILED,
    "UNSUPPORTED_IMAGE": Reason.UNSUPPORTED_IMAGE,
    "FINDINGS_UNAVAILABLE": Reason.FINDINGS_UNAVAILABLE,
    "SCAN_ELIGIBILITY_EXPIRED": Reason.FINDINGS_UNAVAILABLE,
    "LIMIT_EXCEEDED": Reason.FINDINGS_UNAVAILABLE,
    "IMAGE_ARCHIVED": Reason.FINDINGS_UNAVAILABLE,
}

_ERROR_REASONS: dict[str, Reason] = {
    "ScanNotFoundException": Reason.SCAN_NOT_FOUND,
    "ImageNotFoundException": Reason.IMAGE_NOT_FOUND,
    "RepositoryNotFoundException": Reason.REPOSITORY_NOT_FOUND,
    "AccessDeniedException": Reason.ACCESS_DENIED,
    "AccessDenied": Reason.ACCESS_DENIED,
    # moto's IAM evaluation answers 403 with an XML body: botocore reports the HTTP code.
    "403": Reason.ACCESS_DENIED,
    "UnrecognizedClientException": Reason.ACCESS_DENIED,
    "InvalidClientTokenId": Reason.ACCESS_DENIED,
    "InvalidSignatureException": Reason.ACCESS_DENIED,
    "ExpiredTokenException": Reason.ACCESS_DENIED,
    "NoCredentials": Reason.ACCESS_DENIED,
}

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServerException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

_ACTION_RE = re.compile(r"perform:\s*(ecr:[A-Za-z]+)")


def classify_error(code: str, message: str, http_status: int | None, action: str) -> ScanResult:
    """Map an AWS error to a final ScanResult, or raise TransientError when asking again can help."""
    if code in TRANSIENT_CODES or (http_status is not None and http_status >= 500):
        raise TransientError(f"ECR {code or http_status}: {message}"[:300])
    reason = _ERROR_REASONS.get(code)
    if reason is None and http_status == 403:
        reason = Reason.ACCESS_DENIED
    if reason is Reason.ACCESS_DENIED:
        named = _ACTION_RE.search(message or "")
        missing = named.group(1) if named else action
        return ScanResult(Phase.FINAL, ecr_status=code, reason=reason, detail=f"{missing}: {message}".strip())
    if reason is None:
        return ScanResult(Phase.FINAL, ecr_status=code, reason=Reason.ERROR, detail=f"{code}: {message}")
    return ScanResult(Phase.FINAL, ecr_status=code, reason=reason, detail=message)


def _attr(attributes: object, key: str) -> str:
    if not isinstance(attributes, list):
        return ""
    for item in attributes:
        if isinstance(item, Mapping) and item.get("key") == key:
            return str(item.get("value") or "")
    return ""


def _score(value: object) -> float | None:
    """A CVSS base score (0-10) from ECR's number or string; anything else is no score (it then blocks)."""
    if isinstance(value, bool):
        return None
    try:
        score = float(str(value))
    except ValueError:
        return None
    return score if 0.0 <= score <= 10.0 else None


def _best(scores: list[float | None]) -> float | None:
    known = [s for s in scores if s is not None]
    return max(known) if known else None


def _basic_finding(raw: Mapping[str, Any]) -> Finding:
    attributes = raw.get("attributes")
    return Finding(
        id=str(raw.get("name") or ""),
        severity=Severity.parse(raw.get("severity")),
        package=_attr(attributes, "package_name"),
        installed_version=_attr(attributes, "package_version"),
        fixed_version=_attr(attributes, "fixed_in_version"),
        url=str(raw.get("uri") or ""),
        description=str(raw.get("description") or ""),
        cvss=_best([_score(_attr(attributes, k)) for k in ("CVSS3_SCORE", "CVSS2_SCORE") if _attr(attributes, k)]),
    )


def _enhanced_finding(raw: Mapping[str, Any]) -> Finding:
    details = raw.get("packageVulnerabilityDetails") or {}
    packages = details.get("vulnerablePackages") or [{}]
    first = packages[0] if isinstance(packages[0], Mapping) else {}
    return Finding(
        id=str(details.get("vulnerabilityId") or raw.get("title") or ""),
        severity=Severity.parse(raw.get("severity")),
        package=str(first.get("name") or ""),
        installed_version=str(first.get("version") or ""),
        fixed_version=str(first.get("fixedInVersion") or ""),
        url=str(details.get("sourceUrl") or ""),
        description=str(raw.get("description") or ""),
        status=str(raw.get("status") or "ACTIVE"),
        fix_available=str(raw.get("fixAvailable") or ""),
        platform=_platform(raw.get("resources")),
        cvss=_score(raw["score"])
        if raw.get("score") is not None
        else _best([_score(c.get("baseScore")) for c in details.get("cvss") or () if isinstance(c, Mapping)]),
    )


def _platform(resources: object) -> str:
    """resources[].details.awsEcrContainerImage.platform of an enhanced finding ("" when absent or odd)."""
    for resource in resources if isinstance(resources, list) else ():
        details = resource.get("details") if isinstance(resource, Mapping) else None
        image = details.get("awsEcrContainerImage") if isinstance(details, Mapping) else None
        platform = image.get("platform") if isinstance(image, Mapping) else None
        if isinstance(platform, str) and platform:
            return platform
    return ""


def _counts(raw: object) -> dict[Severity, int]:
    counts: dict[Severity, int] = {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                sev = Severity.parse(key)
                counts[sev] = counts.get(sev, 0) + value
    return counts


def classify_response(answer: Mapping[str, Any]) -> ScanResult:
    """Classify one (page-merged) DescribeImageScanFindings answer. Never guesses a pass."""
    status_obj = answer.get("imageScanStatus") or {}
    status = str(status_obj.get("status") or "")
    description = str(status_obj.get("description") or "")
    digest = str((answer.get("imageId") or {}).get("imageDigest") or "")
    findings_obj = answer.get("imageScanFindings")
    waiting = ScanResult(Phase.IN_PROGRESS, ecr_status=status, detail=description, digest=digest)

    if status in IN_PROGRESS_STATUSES:
        return waiting
    if status in _FINAL_STATUSES:
        return replace(waiting, phase=Phase.FINAL, reason=_FINAL_STATUSES[status])
    if status not in {"COMPLETE", *ENHANCED_WAITING_STATUSES}:
        shown = status or "no imageScanStatus.status"
        return replace(waiting, phase=Phase.FINAL, reason=Reason.ERROR, detail=f"unknown scan status: {shown}")
    if not isinstance(findings_obj, Mapping):
        if status in ENHANCED_WAITING_STATUSES:
            return waiting
        # The silent pass: a COMPLETE answer with nothing in it is not "clean".
        return replace(
            waiting,
            phase=Phase.FINAL,
            reason=Reason.ERROR,
            detail="a COMPLETE answer without an imageScanFindings object (never read as clean)",
        )
    enhanced_raw = findings_obj.get("enhancedFindings")
    basic_raw = findings_obj.get("findings")
    enhanced = enhanced_raw is not None or status in ENHANCED_WAITING_STATUSES
    if status in ENHANCED_WAITING_STATUSES and enhanced_raw is None and "findingSeverityCounts" not in findings_obj:
        return waiting
    findings = tuple(_enhanced_finding(f) for f in enhanced_raw or () if isinstance(f, Mapping)) + tuple(
        _basic_finding(f) for f in basic_raw or () if isinstance(f, Mapping)
    )
    return replace(
        waiting,
        phase=Phase.COMPLETE,
        counts=_counts(findings_obj.get("findingSeverityCounts")),
        findings=findings,
        enhanced=enhanced,
        completed_at=str(findings_obj.get("imageScanCompletedAt") or ""),
    )


def merge_pages(pages: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Concatenate findings of all pages; status and counts come from the first page."""
    if not pages:
        return {}
    first = dict(pages[0])
    findings_obj = first.get("imageScanFindings")
    if isinstance(findings_obj, Mapping):
        merged = dict(findings_obj)
        for key in ("findings", "enhancedFindings"):
            items = [item for page in pages for item in ((page.get("imageScanFindings") or {}).get(key) or [])]
            if key in findings_obj or items:
                merged[key] = items
        first["imageScanFindings"] = merged
    return first
