"""Builders of ECR answers: findings, recorded fixtures, severity counts, scan bodies, error texts."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import BASIC_SEVERITIES, DEFAULT_ACCOUNT, DEFAULT_REGION, ENHANCED_SEVERITIES

if TYPE_CHECKING:
    from .book import _CallContext

FIXTURES_DIR = Path(__file__).resolve().parent.parent.parent / "fixtures" / "ecr"

# Descriptions seen in real answers (see tests/fixtures/ecr/SOURCES.md). Statuses whose real text no
# source shows get no description unless the step gives one, rather than an invented one.
_STATUS_DESCRIPTIONS = {
    "COMPLETE": "The scan was completed successfully.",
    "ACTIVE": "Continuous scan is selected for image.",
    "UNSUPPORTED_IMAGE": "UnsupportedImageError: The operating system and/or package manager are not supported.",
}


def basic_finding(
    cve: str,
    severity: str,
    package: str,
    version: str,
    fixed: str | None = None,
    *,
    description: str | None = None,
    uri: str | None = None,
    cvss2_score: float | None = None,
) -> dict[str, Any]:
    """A basic-scan finding shaped like the AWS API reference example (name, uri, severity, attributes)."""
    if severity not in BASIC_SEVERITIES:
        raise ValueError(f"basic severity must be one of {sorted(BASIC_SEVERITIES)}, got {severity!r}")
    attributes = [{"key": "package_version", "value": version}, {"key": "package_name", "value": package}]
    if cvss2_score is not None:
        attributes.append({"key": "CVSS2_SCORE", "value": str(cvss2_score)})
    if fixed:
        # Only the runbook's example shows this key; AWS's own examples don't. Opt-in for that reason.
        attributes.append({"key": "fixed_in_version", "value": fixed})
    finding: dict[str, Any] = {
        "name": cve,
        "uri": uri or f"https://cve.mitre.org/cgi-bin/cvename.cgi?name={cve}",
        "severity": severity,
        "attributes": attributes,
    }
    if description is not None:
        finding["description"] = description
    return finding


def enhanced_finding(
    cve: str,
    severity: str,
    package: str,
    version: str,
    fixed: str | None = None,
    *,
    status: str = "ACTIVE",
    score: float | None = None,
    title: str | None = None,
    description: str | None = None,
    exploit_available: str = "NO",
    account_id: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """An enhanced (Inspector) finding shaped like the AWS API reference's enhanced example."""
    if severity not in ENHANCED_SEVERITIES:
        raise ValueError(f"enhanced severity must be one of {sorted(ENHANCED_SEVERITIES)}, got {severity!r}")
    if status not in {"ACTIVE", "SUPPRESSED", "CLOSED"}:
        raise ValueError(f"enhanced finding status must be ACTIVE, SUPPRESSED or CLOSED, got {status!r}")
    now = time.time()
    source_url = f"https://nvd.nist.gov/vuln/detail/{cve}"
    finding: dict[str, Any] = {
        "awsAccountId": account_id,
        "description": description if description is not None else f"{cve} in {package} {version}.",
        "findingArn": f"arn:aws:inspector2:{region}:{account_id}:finding/{uuid.uuid4().hex}",
        "firstObservedAt": now,
        "lastObservedAt": now,
        "updatedAt": now,
        "packageVulnerabilityDetails": {
            "referenceUrls": [source_url],
            "relatedVulnerabilities": [],
            "source": "NVD",
            "sourceUrl": source_url,
            "vulnerabilityId": cve,
            "vulnerablePackages": [
                {
                    "epoch": 0,
                    "name": package,
                    "packageManager": "OS",
                    "version": version,
                    # The AWS example says "NotAvailable" (not an absent key) when there is no fix.
                    "fixedInVersion": fixed or "NotAvailable",
                }
            ],
        },
        "remediation": {"recommendation": {"text": f"Upgrade {package} to {fixed}." if fixed else "None Provided"}},
        "severity": severity,
        "status": status,
        "title": title or f"{cve} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "fixAvailable": "YES" if fixed else "NO",
        "exploitAvailable": exploit_available,
    }
    if score is not None:
        finding["score"] = score
    return finding


def load_fixture(name: str) -> dict[str, Any]:
    """A recorded ECR answer from tests/fixtures/ecr/ (see SOURCES.md there)."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        raise ValueError(f"no ECR fixture {name!r} in {FIXTURES_DIR}")
    return json.loads(path.read_text())


def severity_counts(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per severity of every finding listed; zero counts are absent keys, as ECR sends them."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    return counts


def scan_body(
    step: Mapping[str, Any],
    *,
    registry_id: str,
    repository: str,
    image_id: Mapping[str, str],
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The DescribeImageScanFindings (or StartImageScan) answer a status step stands for."""
    status = step["status"]
    scan_status = {"status": status}
    description = step.get("description", _STATUS_DESCRIPTIONS.get(status))
    if description is not None:
        scan_status["description"] = description
    body: dict[str, Any] = {
        "registryId": registry_id,
        "repositoryName": repository,
        "imageId": dict(image_id),
        "imageScanStatus": scan_status,
    }
    listed = "findings" in step or "enhanced_findings" in step
    if step.get("no_findings_object") or (status != "COMPLETE" and not listed):
        return body
    key = "enhancedFindings" if "enhanced_findings" in step else "findings"
    items = copy.deepcopy(list(step.get("enhanced_findings", step.get("findings", []))))
    when = completed_at or time.time()
    findings: dict[str, Any] = {"imageScanCompletedAt": when, "vulnerabilitySourceUpdatedAt": when, key: items}
    counts = step["counts"] if "counts" in step else severity_counts(items)
    if counts is not None:  # counts None: the key is left out, as in an answer ECR sent mid-scan
        findings["findingSeverityCounts"] = dict(counts)
    body["imageScanFindings"] = findings
    return body


def _default_message(code: str, ctx: _CallContext) -> str:
    # Texts follow real ECR answers where a source shows them (SOURCES.md); the rest are plain.
    asked = ctx.image_id
    image_rep = f"{{imageDigest:'{asked.get('imageDigest') or 'null'}', imageTag:'{asked.get('imageTag') or 'null'}'}}"
    repo_arn = f"arn:aws:ecr:{ctx.region}:{ctx.registry_id}:repository/{ctx.repository}"
    messages = {
        "ThrottlingException": "Rate exceeded",
        "AccessDeniedException": (
            f"User: arn:aws:sts::{ctx.caller_account}:assumed-role/ci/x is not authorized to perform: "
            f"ecr:{ctx.op} on resource: {repo_arn} because no identity-based policy allows the "
            f"ecr:{ctx.op} action"
        ),
        "ServerException": "An internal server error has occured",  # sic: ECR's spelling
        "ScanNotFoundException": (
            f"Image scan does not exist for the image with '{image_rep}' in the repository with name "
            f"'{ctx.repository}' in the registry with id '{ctx.registry_id}'"
        ),
        "ImageNotFoundException": (
            f"The image with imageId {image_rep} does not exist within the repository with name "
            f"'{ctx.repository}' in the registry with id '{ctx.registry_id}'"
        ),
        "RepositoryNotFoundException": (
            f"The repository with name '{ctx.repository}' does not exist in the registry with id '{ctx.registry_id}'"
        ),
        "LimitExceededException": "The scan quota per image has been exceeded. Wait and try again.",
    }
    return messages.get(code, f"{code} (scripted by the ECR double)")
