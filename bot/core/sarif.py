"""Pure: a SARIF 2.1.0 log of one `check` run, for code-scanning UIs that take SARIF."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from bot.core.markdown import advisory_url, clean
from bot.core.models import DIGEST_RE
from bot.core.risk import finding_key
from bot.core.security_report import (
    DESCRIPTION_LIMIT,
    PACKAGE_LIMIT,
    VERSION_LIMIT,
    GateRun,
    Judged,
    Standing,
    finding_id,
    fix_version,
    gate_message,
    image_reference,
    judged,
    standing_text,
    unlisted,
    utc,
)

SCHEMA_URL = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # SARIF's times are UTC, ISO 8601 with a Z
DEFAULT_PATH = "Dockerfile"
# The fingerprint's name carries its version: a change to what it hashes must not merge old and new alerts.
FINGERPRINT = "ecrScanGateFinding/v1"
# Level is the gate's judgement, so "error" means exactly what fails the gate (a UI that fails on errors then
# agrees with the exit code). "warning": at a fail_on severity but let through by the policy (an accepted
# risk is still a real vulnerability). "note": below the fail_on bar, or suppressed/closed in Inspector.
LEVEL = {Standing.BLOCKING: "error", Standing.WAIVED: "warning", Standing.BELOW: "note"}


def render(run: GateRun, path: str = DEFAULT_PATH) -> dict[str, Any]:
    """One run: a rule per finding id, a result per finding; a failed verdict is a failed invocation."""
    findings = judged(run)
    rules = _rules(findings)
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    sarif_run: dict[str, Any] = {
        "tool": {"driver": {"name": "ecr-scan-gate", "version": run.tool_version, "rules": rules}},
        "invocations": [_invocation(run)],
    }
    # No "results" at all when no scan was read: SARIF reads an empty list as "analysed, nothing found",
    # and a code-scanning UI would close every open alert of this image on that.
    if run.scanned:
        uri = quote(path, safe="/")
        where = _logical_location(run)
        sarif_run["results"] = [_result(j, index, uri, where, run.image.repository) for j in findings]
    return {"$schema": SCHEMA_URL, "version": "2.1.0", "runs": [sarif_run]}


def _invocation(run: GateRun) -> dict[str, Any]:
    verdict = run.verdict
    invocation: dict[str, Any] = {
        "executionSuccessful": run.scanned,
        "exitCode": verdict.reason.exit_code,
        "exitCodeDescription": verdict.reason.value,
        "startTimeUtc": utc(run.started, TIME_FORMAT),
        "endTimeUtc": utc(run.ended, TIME_FORMAT),
    }
    notes = []
    if not run.scanned:
        notes.append(_notification("error", verdict.reason.value, gate_message(verdict)))
    hidden = unlisted(run)
    if hidden:
        text = f"ECR counted {hidden} findings it did not list; they have no result here"
        notes.append(_notification("warning", "unlisted-findings", text))
    if notes:
        invocation["toolExecutionNotifications"] = notes
    return invocation


def _notification(level: str, descriptor: str, text: str) -> dict[str, Any]:
    return {"level": level, "descriptor": {"id": descriptor}, "message": {"text": text}}


def _rules(findings: tuple[Judged, ...]) -> list[dict[str, Any]]:
    """One rule per distinct finding id: the worst severity and the highest CVSS seen under that id."""
    grouped: dict[str, list[Judged]] = {}
    for j in findings:
        grouped.setdefault(finding_id(j.finding), []).append(j)
    rules = []
    for rule_id, group in grouped.items():
        worst = min((j.finding.severity for j in group), key=lambda s: s.rank)
        packages = sorted({clean(j.finding.package, PACKAGE_LIMIT) or "unknown" for j in group})
        shown = ", ".join(packages[:3]) + (f" and {len(packages) - 3} more" if len(packages) > 3 else "")
        rule: dict[str, Any] = {
            "id": rule_id,
            "shortDescription": {"text": clean(f"{rule_id}: {worst.value} vulnerability in {shown}", 300)},
            "properties": {"tags": ["security", "vulnerability", "container-image", worst.value.lower()]},
        }
        description = next((j.finding.description for j in group if j.finding.description.strip()), "")
        if description:
            rule["fullDescription"] = {"text": clean(description, DESCRIPTION_LIMIT)}
        url = next((u for j in group if (u := advisory_url(j.finding.id, j.finding.url))), None)
        if url:
            rule["helpUri"] = url
        scores = [j.finding.cvss for j in group if j.finding.cvss is not None]
        if scores:  # GitHub's name: a string holding a CVSS-like 0-10 number; absent rather than guessed
            rule["properties"]["security-severity"] = f"{max(scores):.1f}"
        rules.append(rule)
    return rules


def _logical_location(run: GateRun) -> dict[str, str]:
    """The image: its name as the pipeline gave it, and with the digest the scan was of (name:tag@digest)."""
    name, digest = image_reference(run.image), run.verdict.digest
    full = f"{name}@{digest}" if run.image.tag and DIGEST_RE.fullmatch(digest) else name
    return {"name": name, "fullyQualifiedName": full, "kind": "module"}


def _result(j: Judged, index: dict[str, int], uri: str, where: dict[str, str], repository: str) -> dict[str, Any]:
    f = j.finding
    rule_id = finding_id(f)
    return {
        "ruleId": rule_id,
        "ruleIndex": index[rule_id],
        "level": LEVEL[j.standing],
        "message": {"text": _message(j)},
        "locations": [
            {
                # A container image is not a source file: the logical location names it; the physical one is
                # the file that builds it, because code-scanning UIs drop results without a file.
                "physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}},
                "logicalLocations": [where],
            }
        ],
        # The same finding in the next build of this repository (new tag, new digest) is the same alert.
        "partialFingerprints": {FINGERPRINT: hashlib.sha256(f"{repository}\x1f{finding_key(f)}".encode()).hexdigest()},
        "properties": _properties(j),
    }


def _properties(j: Judged) -> dict[str, str]:
    f = j.finding
    values = {
        "ecrSeverity": f.severity.value,
        "package": clean(f.package, PACKAGE_LIMIT),
        "installedVersion": clean(f.installed_version, VERSION_LIMIT),
        "fixedVersion": fix_version(f),
        "standing": j.standing.value,
    }
    return {key: value for key, value in values.items() if value}


def _message(j: Judged) -> str:
    f = j.finding
    score = f" CVSS {f.cvss:g}" if f.cvss is not None else ""
    what = f"{finding_id(f)} ({f.severity.value}{score}) in {clean(f.package, PACKAGE_LIMIT) or 'unknown package'}"
    what += f" {clean(f.installed_version, VERSION_LIMIT)}".rstrip()
    fix = fix_version(f)
    return f"{what}; {f'fixed in {fix}' if fix else 'no fix listed'}. {standing_text(j)}"
