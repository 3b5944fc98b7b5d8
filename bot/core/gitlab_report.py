"""Pure: a GitLab container scanning report (security report schema 15.0.x) from one `check` run."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from bot.core.markdown import advisory_url, clean, safe_url
from bot.core.models import Finding, Severity
from bot.core.security_report import (
    DESCRIPTION_LIMIT,
    PACKAGE_LIMIT,
    VERSION_LIMIT,
    GateRun,
    Judged,
    finding_id,
    fix_version,
    gate_message,
    image_reference,
    judged,
    standing_text,
    unlisted,
    utc,
)

# 15.0.x, not the newest 15.2.x: GitLab ingests only the schema versions it vendors, and 17.x releases
# before gitlab-org/gitlab#497405 refused 15.2.x reports outright; 15.0.x is accepted from GitLab 15.4 on.
SCHEMA_VERSION = "15.0.7"
SCHEMA_URL = (
    "https://gitlab.com/gitlab-org/security-products/security-report-schemas/-/raw/"
    f"v{SCHEMA_VERSION}/dist/container-scanning-report-format.json"
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # the schema's own format: UTC, no offset, no fraction
# GitLab's severity names. UNTRIAGED (Inspector, not yet rated) and UNDEFINED (no rating ECR knows) are both
# "we don't know", which is GitLab's Unknown; INFORMATIONAL is Info.
SEVERITY = {
    Severity.CRITICAL: "Critical",
    Severity.HIGH: "High",
    Severity.MEDIUM: "Medium",
    Severity.LOW: "Low",
    Severity.INFORMATIONAL: "Info",
    Severity.UNTRIAGED: "Unknown",
    Severity.UNDEFINED: "Unknown",
}
# Basic findings carry no OS; enhanced ones name the image's platform (e.g. DEBIAN_12). One image has one OS:
# a platform any finding names is every finding's, else the report says "unknown".
UNKNOWN_OS = "unknown"
NAME_LIMIT = 255  # the schema's maxLength for a vulnerability's name
SOLUTION_LIMIT = 7000  # ... and for its solution
# Names the report's ids: uuid5 of this namespace and the finding, so a re-run gives the same ids.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ecr-scan-gate/gitlab-container-scanning")
_VENDOR = {"name": "ecr-scan-gate"}
_AWS = {"name": "Amazon Web Services"}


def render(run: GateRun) -> dict[str, Any]:
    """The report: every finding of the completed scan, or none with status failure when none was read."""
    findings = judged(run)
    image = image_reference(run.image)
    os_name = next((clean(j.finding.platform, 255) for j in findings if j.finding.platform), UNKNOWN_OS)
    return {
        "version": SCHEMA_VERSION,
        "schema": SCHEMA_URL,
        "scan": _scan(run),
        "vulnerabilities": [
            _vulnerability(j, image, os_name, key) for j, key in zip(findings, _keys(findings), strict=True)
        ],
    }


def _scan(run: GateRun) -> dict[str, Any]:
    messages = [{"level": "info" if run.scanned else "fatal", "value": gate_message(run.verdict)}]
    hidden = unlisted(run)
    if hidden:
        messages.append(
            {"level": "warn", "value": f"ECR counted {hidden} findings it did not list; they are not in this report"}
        )
    return {
        "analyzer": {"id": "ecr-scan-gate", "name": "ecr-scan-gate", "version": run.tool_version, "vendor": _VENDOR},
        "scanner": _scanner(run),
        "type": "container_scanning",
        "start_time": utc(run.started, TIME_FORMAT),
        "end_time": utc(run.ended, TIME_FORMAT),
        # success only when a completed scan was read: a report without vulnerabilities must never stand for a
        # scan that did not happen (GitLab would show it as "no vulnerabilities").
        "status": "success" if run.scanned else "failure",
        "messages": messages,
    }


def _scanner(run: GateRun) -> dict[str, Any]:
    if not run.scanned:
        scanner_id, name = "amazon_ecr", "Amazon ECR image scanning"
    elif run.verdict.enhanced:
        scanner_id, name = "amazon_inspector", "Amazon Inspector (ECR enhanced scanning)"
    else:
        scanner_id, name = "amazon_ecr_basic", "Amazon ECR basic scanning"
    # ECR names no scanner version in DescribeImageScanFindings.
    return {"id": scanner_id, "name": name, "version": "unknown", "vendor": _AWS}


def _keys(findings: tuple[Judged, ...]) -> list[str]:
    """What each id is made of: id, package and version, plus the occurrence when ECR lists one twice."""
    seen: Counter[str] = Counter()
    keys = []
    for j in findings:
        f = j.finding
        key = "\x1f".join((f.id, f.package, f.installed_version))
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}\x1f{seen[key]}")
    return keys


def _vulnerability(j: Judged, image: str, os_name: str, key: str) -> dict[str, Any]:
    f = j.finding
    name, package = finding_id(f), clean(f.package, PACKAGE_LIMIT) or "unknown"
    fix = fix_version(f)
    vulnerability: dict[str, Any] = {
        "id": str(uuid.uuid5(_ID_NAMESPACE, f"{image}\x1f{key}")),
        "name": clean(f"{name} in {package}", NAME_LIMIT),
        "description": _description(j),
        "severity": SEVERITY[f.severity],
        "identifiers": [_identifier(f, name)],
        "links": [{"url": url} for url in dict.fromkeys(u for u in (safe_url(f.url), advisory_url(f.id, f.url)) if u)],
        "location": {
            "image": image,
            "operating_system": os_name,
            "dependency": {"package": {"name": package}, "version": clean(f.installed_version, VERSION_LIMIT)},
        },
    }
    if fix:
        vulnerability["solution"] = clean(f"Upgrade {package} to {fix}", SOLUTION_LIMIT)
    return vulnerability


def _description(j: Judged) -> str:
    f = j.finding
    text = clean(f.description, DESCRIPTION_LIMIT, multiline=True) or f"{finding_id(f)} (no description from ECR)"
    return f"{text}\n\n{standing_text(j)}"


def _identifier(f: Finding, name: str) -> dict[str, str]:
    kind = "cve" if name.upper().startswith("CVE-") else "ghsa" if name.upper().startswith("GHSA-") else "amazon_ecr"
    identifier = {"type": kind, "name": name, "value": name}
    url = advisory_url(f.id, f.url)
    if url:
        identifier["url"] = url
    return identifier
